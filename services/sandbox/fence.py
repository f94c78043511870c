"""The fence between a guest's writes and the move of the guest's folders.

The move takes an exclusive transaction-level advisory lock on the guest for its whole run and
inserts the guest's ``sandbox_moves`` row before it touches a folder. A guest's upload or delete
takes the shared variant (without waiting) around its final placement and checks for that row:
it either lands before the move stages the folder, so it is moved, or it is refused with 403.
"""

import hashlib
import uuid

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sandbox.models import moves


def lock_key(guest_id: uuid.UUID) -> int:
    digest = hashlib.blake2b(b"sandbox-guest:" + guest_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def hold_exclusive(session: AsyncSession, guest_id: uuid.UUID) -> None:
    """Wait for the guest's lock; it is held until the session's transaction ends."""
    await session.execute(select(func.pg_advisory_xact_lock(lock_key(guest_id))))


async def try_hold_shared(session: AsyncSession, guest_id: uuid.UUID) -> bool:
    """False when a move holds the guest: the guest is being migrated right now."""
    statement = select(func.pg_try_advisory_xact_lock_shared(lock_key(guest_id)))
    return bool((await session.execute(statement)).scalar())


async def is_fenced(session: AsyncSession, guest_id: uuid.UUID) -> bool:
    statement = select(exists().where(moves.c.guest_id == guest_id))
    return bool((await session.execute(statement)).scalar())
