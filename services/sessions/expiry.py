"""Removing the sessions and threads of a guest auth removed unclaimed (``GuestExpired``).

One transaction, with the event's inbox record: the guest's lock is taken exclusively (as the
hand-over does, so a guest write in flight finishes first), then one set-based DELETE per
table removes the rows the guest still owns. Rows re-owned to a user carry no guest id and are
never touched. A redelivery finds nothing left and removes nothing.
"""

import uuid
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.sessions import fencing
from services.sessions.models import sessions, threads


@dataclass(frozen=True)
class Removal:
    sessions: int
    threads: int


class GuestWasClaimed(Exception):
    """A fence says the guest was handed to a user; auth never removes such a guest."""


async def remove_guest(session: AsyncSession, guest_id: uuid.UUID) -> Removal:
    """Delete what the guest still owns, within the caller's transaction."""
    await fencing.hold_guest_exclusively(session, guest_id)
    fence = await fencing.fence_of(session, guest_id)
    if fence is not None:
        raise GuestWasClaimed(f"guest {guest_id} was handed to user {fence.user_id} by "
                              f"migration {fence.migration_id}; refusing to remove it")
    # Threads first, so their count is the rows removed here rather than by the cascade.
    removed_threads = await session.execute(delete(threads).where(
        threads.c.owner_guest_id == guest_id))
    removed_sessions = await session.execute(delete(sessions).where(
        sessions.c.owner_guest_id == guest_id))
    return Removal(removed_sessions.rowcount, removed_threads.rowcount)
