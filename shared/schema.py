"""Alembic for every service: each service's ``migrations/env.py`` calls ``run_env``.

``create_database`` and ``upgrade`` are what ``make run`` and the test fixtures use, so the
schema the tests see is the one the migrations build, never ``metadata.create_all``.
"""

import asyncio
from pathlib import Path

import asyncpg
from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import asyncpg_dsn

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Apply a service's migrations (synchronous: Alembic runs its own event loop)."""
    command.upgrade(alembic_config(service, url), revision)


async def create_database(url: str) -> bool:
    """Create the database named in ``url`` if it is missing; True when it was created."""
    parsed = make_url(url)
    name = parsed.database
    server = asyncpg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    connection = await asyncpg.connect(server, timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await connection.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await connection.close()


async def drop_database(url: str) -> None:
    parsed = make_url(url)
    server = asyncpg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    connection = await asyncpg.connect(server, timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await connection.close()


def run_env(metadata: MetaData) -> None:
    """The body of a service's ``env.py``: online migrations over asyncpg."""
    url = context.config.get_main_option("sqlalchemy.url")

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(migrate)
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(online())
