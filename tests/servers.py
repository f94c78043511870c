"""Where the tests find PostgreSQL and RabbitMQ.

The URLs in the environment (``GM_POSTGRES_URL``, ``GM_AMQP_URL``, defaulting to this
machine's servers) come first. Where they do not answer and a Docker engine does,
testcontainers starts both. Where neither exists, the tests fail and say what to start: an
integration test is never skipped silently. Nothing here touches Docker at import time.
"""

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import asyncpg

from shared.db import asyncpg_dsn
from shared.settings import Settings

HOW_TO_START = (
    "start PostgreSQL and RabbitMQ (`python -m tools.services_up` does it on the development "
    "machines) or point GM_POSTGRES_URL and GM_AMQP_URL at running servers"
)


@dataclass(frozen=True)
class Servers:
    postgres_url: str
    amqp_url: str


class ServersMissing(RuntimeError):
    pass


async def _postgres_answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url) + "/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


async def _broker_answers(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception:
        return False
    await connection.close()
    return True


def _docker_engine() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def found() -> Iterator[Servers]:
    defaults = Settings()
    postgres_ok = asyncio.run(_postgres_answers(defaults.postgres_url))
    broker_ok = asyncio.run(_broker_answers(defaults.amqp_url))
    if postgres_ok and broker_ok:
        yield Servers(defaults.postgres_url, defaults.amqp_url)
        return
    if not _docker_engine():
        missing = [name for name, ok in (("PostgreSQL", postgres_ok), ("RabbitMQ", broker_ok))
                   if not ok]
        raise ServersMissing(
            f"{' and '.join(missing)} not reachable at {defaults.postgres_url} / "
            f"{defaults.amqp_url}, and no Docker engine for testcontainers: {HOW_TO_START}"
        )
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with PostgresContainer("postgres:16", driver="asyncpg") as pg, RabbitMqContainer(
        "rabbitmq:3.13"
    ) as mq:
        url = pg.get_connection_url().rsplit("/", 1)[0]
        amqp = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        yield Servers(url, amqp)
