"""Fencing a migrated guest: once its rows are the user's, its token changes nothing here.

Every guest write takes a shared advisory lock on the guest and then checks for the guest's
fence; the worker takes the same lock exclusively, re-owns the rows and writes the fence in one
transaction. So a write that began before the migration commits before the worker re-owns
(and its row moves with the rest), and a write that waits for the worker finds the fence and is
refused: no row is ever left behind owned by a claimed guest.

The fence check is a statement of its own after the lock: under READ COMMITTED each statement
sees what committed before it began, so it sees a fence committed while the lock was awaited.
"""

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sessions.models import guest_fences


class GuestMigrated(Exception):
    """The guest was claimed by a user; its data answers only to the user's token now."""

    def __init__(self, guest_id: uuid.UUID) -> None:
        super().__init__(f"guest {guest_id} now belongs to an account")
        self.guest_id = guest_id


def lock_key(guest_id: uuid.UUID) -> int:
    """A 64-bit advisory lock key for the guest; two guests sharing one only wait on each other."""
    return int.from_bytes(guest_id.bytes[:8], "big", signed=True)


async def fence_of(session: AsyncSession, guest_id: uuid.UUID):
    """The guest's fence row, or None while the guest is still a guest."""
    return (
        await session.execute(select(guest_fences).where(guest_fences.c.guest_id == guest_id))
    ).first()


async def admit_guest_write(session: AsyncSession, guest_id: uuid.UUID) -> None:
    """Hold the guest against migration until this transaction ends, or refuse if migrated."""
    await session.execute(select(func.pg_advisory_xact_lock_shared(lock_key(guest_id))))
    if await fence_of(session, guest_id) is not None:
        raise GuestMigrated(guest_id)


async def admit_guest_read(session: AsyncSession, guest_id: uuid.UUID) -> None:
    """Refuse a migrated guest's reads too: what it made is the user's now."""
    if await fence_of(session, guest_id) is not None:
        raise GuestMigrated(guest_id)


async def hold_guest_exclusively(session: AsyncSession, guest_id: uuid.UUID) -> None:
    """Wait for the guest's writes in flight to commit, and keep new ones out until commit."""
    await session.execute(select(func.pg_advisory_xact_lock(lock_key(guest_id))))
