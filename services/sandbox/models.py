"""sandbox's tables: the outbox and inbox, and one row per guest whose folders are moving.

A ``sandbox_moves`` row is also the guest's fence: once it exists, the guest's uploads and
deletes are refused, so nothing the guest writes can be stranded behind the move.
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    Table,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import new_metadata

metadata = new_metadata()
outbox = metadata.tables["outbox"]
inbox = metadata.tables["inbox"]

STATES = ("fenced", "staged", "done")

moves = Table(
    "sandbox_moves",
    metadata,
    Column("migration_id", Uuid, primary_key=True),
    Column("guest_id", Uuid, nullable=False, unique=True),
    Column("user_id", Uuid, nullable=False, index=True),
    Column("state", Text, nullable=False),
    # The plan: counted in the staging folder before anything moves.
    Column("directories", JSONB),
    Column("files", Integer),
    Column("folders", Integer),
    Column("bytes", BigInteger),
    Column("links_skipped", Integer),
    Column("renamed", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN ('fenced', 'staged', 'done')", name="state"),
)
