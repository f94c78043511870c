"""Database plumbing shared by every service: engines, sessions, and the common tables.

Sessions never expire objects on commit and relationships are not used, so nothing touches
the database behind the caller's back after a commit (no hidden lazy load, no MissingGreenlet).
"""

import uuid

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """Each service's own metadata, holding its tables plus the outbox and inbox."""
    metadata = MetaData(naming_convention=NAMING)
    outbox_table(metadata)
    inbox_table(metadata)
    return metadata


def make_engine(url: str, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=30,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def asyncpg_dsn(url: str) -> str:
    """The same URL for plain asyncpg (LISTEN needs a connection of its own)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def outbox_table(metadata: MetaData) -> Table:
    table = Table(
        "outbox",
        metadata,
        Column("id", Uuid, primary_key=True, default=uuid.uuid4),
        Column("routing_key", Text, nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column(
            "next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()
        ),
        Column("last_error", Text),
    )
    Index(
        "ix_outbox_pending",
        table.c.next_attempt_at,
        postgresql_where=table.c.published_at.is_(None),
    )
    return table


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", Text, primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
