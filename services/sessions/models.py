"""sessions's tables: chat sessions, their threads, and the fences of migrated guests.

Every session and thread belongs to exactly one owner, a user or a guest (a CHECK says so).
A thread carries its session's owner too, so every query filters by owner on the row it reads
and re-owning a guest is one set-based UPDATE per table.

The owner ids refer to auth's users and guests, which live in auth's database, so they are
plain indexed columns, not foreign keys. They stay consistent because:
- an owner id is only ever written from a token auth signed (the API) or from a
  ``UserLoggedIn`` event auth published after committing its claim (the worker), never from a
  request body;
- the worker moves rows from a guest to a user only with the fence of that guest, in one
  transaction, so a guest's rows are either all the guest's or all the user's;
- a guest auth removed unclaimed (case C12) is announced by ``GuestExpired``, on which the
  worker deletes the rows it still owns (``expiry``): an event, not a cascade across databases.
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    Uuid,
    func,
)

from shared.db import new_metadata

metadata = new_metadata()
outbox = metadata.tables["outbox"]
inbox = metadata.tables["inbox"]

TITLE_MAX = 200
EXACTLY_ONE_OWNER = "(owner_user_id IS NULL) <> (owner_guest_id IS NULL)"


def _owned(name: str, *columns) -> Table:
    """A table whose rows belong to exactly one of a user or a guest."""
    return Table(
        name,
        metadata,
        Column("id", Uuid, primary_key=True),
        *columns,
        Column("owner_user_id", Uuid),
        Column("owner_guest_id", Uuid),
        Column("title", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        CheckConstraint(EXACTLY_ONE_OWNER, name="one_owner"),
        CheckConstraint(f"char_length(title) BETWEEN 1 AND {TITLE_MAX}", name="title_length"),
    )


sessions = _owned("sessions")

threads = _owned(
    "threads",
    Column("session_id", Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
)

# "The caller's sessions, newest first" is one index range per owner kind; the guest index also
# finds the rows to re-own. Partial, so each holds only the rows of its kind.
Index(
    "ix_sessions_user_newest",
    sessions.c.owner_user_id,
    sessions.c.created_at.desc(),
    sessions.c.id.desc(),
    postgresql_where=sessions.c.owner_user_id.isnot(None),
)
Index(
    "ix_sessions_guest_newest",
    sessions.c.owner_guest_id,
    sessions.c.created_at.desc(),
    sessions.c.id.desc(),
    postgresql_where=sessions.c.owner_guest_id.isnot(None),
)
Index(
    "ix_threads_session_newest",
    threads.c.session_id,
    threads.c.created_at.desc(),
    threads.c.id.desc(),
)
Index(
    "ix_threads_owner_guest_id",
    threads.c.owner_guest_id,
    postgresql_where=threads.c.owner_guest_id.isnot(None),
)

# A guest whose rows were handed to a user. Its presence refuses every later request of that
# guest's token, and its counts answer a repeated event for the same migration.
guest_fences = Table(
    "guest_fences",
    metadata,
    Column("guest_id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False, index=True),
    Column("migration_id", Uuid, nullable=False, unique=True),
    Column("sessions", Integer, nullable=False),
    Column("threads", Integer, nullable=False),
    Column("fenced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
