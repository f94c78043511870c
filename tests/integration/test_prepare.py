"""What ``make run`` does first, on a machine where nothing exists yet, and again after."""

import uuid

import aio_pika
import asyncpg
import pytest

from deploy.prepare import SERVICES, prepare
from shared import schema, topology
from shared.db import asyncpg_dsn

pytestmark = pytest.mark.integration


async def test_prepare_builds_everything_from_nothing_and_a_second_run_changes_nothing(
    settings, tmp_path
):
    fresh = settings.model_copy(update={
        "database_prefix": f"gmt_prep_{uuid.uuid4().hex[:6]}",
        "broker_namespace": f"gmt.prep.{uuid.uuid4().hex[:6]}",
        "sandbox_root": tmp_path / "sandbox",
    })
    names = topology.Names(fresh.broker_namespace)
    try:
        await prepare(fresh)
        await prepare(fresh)

        for service in SERVICES:
            connection = await asyncpg.connect(asyncpg_dsn(fresh.database_url(service)))
            try:
                tables = {row["tablename"] for row in await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            finally:
                await connection.close()
            assert {"outbox", "inbox", "alembic_version"} <= tables
        assert fresh.sandbox_root.is_dir()

        connection = await aio_pika.connect(fresh.amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in names.all_queues():
                await channel.get_queue(queue, ensure=True)
    finally:
        for service in SERVICES:
            await schema.drop_database(fresh.database_url(service))
        connection = await aio_pika.connect(fresh.amqp_url)
        async with connection:
            await topology.delete(await connection.channel(), names)
