"""Sessions and threads as their owner sees them: every statement is filtered by the caller.

A row of another owner is indistinguishable from a missing one, so ids cannot be probed.
Functions run inside the caller's transaction and return plain dicts (no ORM objects, so
nothing is loaded behind anyone's back after commit).
"""

import uuid

from sqlalchemy import ColumnElement, Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.sessions import cursors
from services.sessions.models import sessions, threads
from shared.tokens import Caller

SESSION_FIELDS = (sessions.c.id, sessions.c.title, sessions.c.created_at, sessions.c.updated_at)
THREAD_FIELDS = (
    threads.c.id,
    threads.c.session_id,
    threads.c.title,
    threads.c.created_at,
    threads.c.updated_at,
)


def owned_by(table: Table, caller: Caller) -> ColumnElement[bool]:
    if caller.is_guest:
        return table.c.owner_guest_id == caller.id
    return table.c.owner_user_id == caller.id


def owner_values(caller: Caller) -> dict[str, uuid.UUID | None]:
    if caller.is_guest:
        return {"owner_guest_id": caller.id, "owner_user_id": None}
    return {"owner_user_id": caller.id, "owner_guest_id": None}


async def create_session(db: AsyncSession, caller: Caller, title: str) -> dict:
    statement = (
        sessions.insert()
        .values(id=uuid.uuid4(), title=title, **owner_values(caller))
        .returning(*SESSION_FIELDS)
    )
    return dict((await db.execute(statement)).one()._mapping)


async def find_session(db: AsyncSession, caller: Caller, session_id: uuid.UUID,
                       lock: bool = False) -> dict | None:
    statement = select(*SESSION_FIELDS).where(sessions.c.id == session_id,
                                              owned_by(sessions, caller))
    if lock:
        # Keeps the session from being deleted until a thread added to it is committed.
        statement = statement.with_for_update(key_share=True)
    row = (await db.execute(statement)).first()
    return dict(row._mapping) if row else None


async def rename_session(db: AsyncSession, caller: Caller, session_id: uuid.UUID,
                         title: str) -> dict | None:
    statement = (
        update(sessions)
        .where(sessions.c.id == session_id, owned_by(sessions, caller))
        .values(title=title, updated_at=func.now())
        .returning(*SESSION_FIELDS)
    )
    row = (await db.execute(statement)).first()
    return dict(row._mapping) if row else None


async def delete_session(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> bool:
    """Delete the session and, by the foreign key's cascade, its threads."""
    statement = delete(sessions).where(sessions.c.id == session_id, owned_by(sessions, caller))
    return (await db.execute(statement)).rowcount > 0


async def add_thread(db: AsyncSession, caller: Caller, session_id: uuid.UUID,
                     title: str) -> dict | None:
    """A new thread in the caller's session, owned like it; None if there is no such session."""
    if await find_session(db, caller, session_id, lock=True) is None:
        return None
    statement = (
        threads.insert()
        .values(id=uuid.uuid4(), session_id=session_id, title=title, **owner_values(caller))
        .returning(*THREAD_FIELDS)
    )
    return dict((await db.execute(statement)).one()._mapping)


async def page(db: AsyncSession, table: Table, fields, where: list[ColumnElement[bool]],
               limit: int, after: cursors.Position | None) -> tuple[list[dict], str | None]:
    """One page of rows newest first, and the cursor of the next page (None on the last)."""
    conditions = list(where)
    if after is not None:
        conditions.append(
            tuple_(table.c.created_at, table.c.id) < tuple_(after.created_at, after.id)
        )
    statement = (
        select(*fields)
        .where(*conditions)
        .order_by(table.c.created_at.desc(), table.c.id.desc())
        .limit(limit + 1)
    )
    rows = [dict(row._mapping) for row in (await db.execute(statement)).all()]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], cursors.encode(cursors.Position(last["created_at"], last["id"]))


async def list_sessions(db: AsyncSession, caller: Caller, limit: int,
                        after: cursors.Position | None) -> tuple[list[dict], str | None]:
    return await page(db, sessions, SESSION_FIELDS, [owned_by(sessions, caller)], limit, after)


async def list_threads(db: AsyncSession, caller: Caller, session_id: uuid.UUID, limit: int,
                       after: cursors.Position | None) -> tuple[list[dict], str | None] | None:
    """The session's threads newest first; None if the caller has no such session."""
    if await find_session(db, caller, session_id) is None:
        return None
    where = [threads.c.session_id == session_id, owned_by(threads, caller)]
    return await page(db, threads, THREAD_FIELDS, where, limit, after)
