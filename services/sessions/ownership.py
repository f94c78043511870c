"""Handing a claimed guest's sessions and threads to the user who claimed it.

One transaction: lock the guest exclusively (see ``fencing``), re-own each table with one
set-based UPDATE, and write the fence with the counts. The fence makes the hand-over happen once
per guest: a repeated event for the same migration, even under a new event id, finds the fence
and answers with the counts stored there instead of moving anything again.
"""

import uuid
from dataclasses import dataclass

from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.sessions import fencing
from services.sessions.models import guest_fences, sessions, threads
from shared.events import UserLoggedIn


@dataclass(frozen=True)
class Handover:
    sessions: int
    threads: int
    repeated: bool


class ConflictingClaim(Exception):
    """A fence for this guest or migration says otherwise; auth never allows that to happen."""


async def hand_over(session: AsyncSession, claim: UserLoggedIn) -> Handover:
    """Re-own the guest's rows to the user within the caller's transaction."""
    await fencing.hold_guest_exclusively(session, claim.guest_id)
    fence = await _fence_for(session, claim)
    if fence is not None:
        return Handover(fence.sessions, fence.threads, repeated=True)

    moved_sessions = await _reown(session, sessions, claim.guest_id, claim.user_id)
    moved_threads = await _reown(session, threads, claim.guest_id, claim.user_id)
    await session.execute(
        guest_fences.insert().values(
            guest_id=claim.guest_id,
            user_id=claim.user_id,
            migration_id=claim.migration_id,
            sessions=moved_sessions,
            threads=moved_threads,
        )
    )
    return Handover(moved_sessions, moved_threads, repeated=False)


async def _fence_for(session: AsyncSession, claim: UserLoggedIn):
    """The fence this claim already wrote, None if there is none; any other fence is refused."""
    found = (
        await session.execute(
            select(guest_fences).where(
                or_(
                    guest_fences.c.guest_id == claim.guest_id,
                    guest_fences.c.migration_id == claim.migration_id,
                )
            )
        )
    ).all()
    for fence in found:
        same = (fence.guest_id, fence.user_id, fence.migration_id) == (
            claim.guest_id,
            claim.user_id,
            claim.migration_id,
        )
        if not same:
            raise ConflictingClaim(
                f"guest {fence.guest_id} was handed to user {fence.user_id} by migration "
                f"{fence.migration_id}; refusing guest {claim.guest_id} for user "
                f"{claim.user_id} by migration {claim.migration_id}"
            )
    return found[0] if found else None


async def _reown(session: AsyncSession, table: Table, guest_id: uuid.UUID,
                 user_id: uuid.UUID) -> int:
    result = await session.execute(
        update(table)
        .where(table.c.owner_guest_id == guest_id)
        .values(owner_user_id=user_id, owner_guest_id=None)
    )
    return result.rowcount
