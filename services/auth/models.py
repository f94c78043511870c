"""auth's tables: users, guests, and the migration record with one row per step."""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
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

STEPS = ("sessions", "sandbox")

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

guests = Table(
    "guests",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", Uuid, ForeignKey("users.id"), index=True),
    Column("claimed_at", DateTime(timezone=True)),
)

# The sweeper's question, "unclaimed guests expired before this moment, oldest first", is one
# index range; partial, so the claimed guests that stay forever do not grow it.
Index(
    "ix_guests_unclaimed_expires_at",
    guests.c.expires_at,
    postgresql_where=guests.c.claimed_by.is_(None),
)

migrations = Table(
    "migrations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("guest_id", Uuid, ForeignKey("guests.id"), nullable=False, unique=True),
    Column("user_id", Uuid, ForeignKey("users.id"), nullable=False, index=True),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Column("failed_step", Text),
    Column("failure_reason", Text),
    Column("summary", JSONB),
    CheckConstraint("status IN ('pending', 'completed', 'failed')", name="status"),
)

migration_steps = Table(
    "migration_steps",
    metadata,
    Column("migration_id", Uuid, ForeignKey("migrations.id", ondelete="CASCADE")),
    Column("step", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("counts", JSONB),
    Column("reason", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("migration_id", "step"),
    CheckConstraint("status IN ('pending', 'done', 'failed')", name="status"),
)
