"""auth's sweeper against real PostgreSQL: who is removed, who never is, and replicas racing.

Every test sweeps with the same grace of an hour, so a guest one test leaves in place (not yet
expired, or within the grace) is left in place by the others too.
"""

import asyncio
import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import exists, select, update

from services.auth import accounts, migration
from services.auth.models import guests, migrations, outbox
from services.auth.sweeper import sweep_once
from shared.events import Envelope, GuestExpired

pytestmark = pytest.mark.integration

GRACE = timedelta(hours=1)
PAST_GRACE = timedelta(hours=2)


@pytest.fixture
def sessions(sessions_for):
    return sessions_for("auth")


async def guest(sessions, expires_in: timedelta) -> dict:
    async with sessions() as session, session.begin():
        return await accounts.create_guest(session, expires_in)


async def claimed(sessions, expires_in: timedelta, status: str = "pending") -> uuid.UUID:
    async with sessions() as session, session.begin():
        user = await accounts.create_user(session, f"{uuid.uuid4().hex}@example.test", "x")
        made = await accounts.create_guest(session, expires_in)
        claim = await migration.claim(session, made["id"], user["id"])
        await session.execute(update(migrations).where(migrations.c.id == claim.migration_id)
                              .values(status=status))
    return made["id"]


async def present(sessions, guest_id: uuid.UUID) -> bool:
    async with sessions() as session:
        return bool(await session.scalar(select(exists().where(guests.c.id == guest_id))))


async def announced(sessions, guest_id: uuid.UUID) -> list[Envelope]:
    async with sessions() as session:
        rows = (await session.execute(select(outbox.c.envelope).where(
            outbox.c.routing_key == GuestExpired.routing_key()))).scalars().all()
    return [Envelope.model_validate(row) for row in rows if row["subject"] == str(guest_id)]


async def test_unclaimed_guests_past_expiry_and_grace_are_removed_with_one_event_each(
    sessions, caplog
):
    made = [await guest(sessions, -PAST_GRACE) for _ in range(5)]

    with caplog.at_level(logging.INFO, logger="services.auth.sweeper"):
        removed = await sweep_once(sessions, GRACE, batch=2)

    assert removed >= 5
    for one in made:
        assert not await present(sessions, one["id"])
        [envelope] = await announced(sessions, one["id"])
        event = envelope.payload()
        assert isinstance(event, GuestExpired)
        assert (event.guest_id, event.expired_at) == (one["id"], one["expires_at"])
        assert envelope.correlationid == str(one["id"])
    batches = [r.count for r in caplog.records if r.getMessage() == "expired guests removed"]
    assert len(batches) >= 3 and sum(batches) == removed
    [finished] = [r for r in caplog.records if r.getMessage() == "sweep finished"]
    assert finished.count == removed
    assert await sweep_once(sessions, GRACE) == 0


async def test_guests_not_expired_within_the_grace_or_claimed_are_never_removed(sessions):
    kept = [
        (await guest(sessions, timedelta(days=1)))["id"],
        (await guest(sessions, -timedelta(minutes=10)))["id"],
        await claimed(sessions, -PAST_GRACE, status="pending"),
        await claimed(sessions, -PAST_GRACE, status="completed"),
        await claimed(sessions, -PAST_GRACE, status="failed"),
    ]

    await sweep_once(sessions, GRACE)

    for guest_id in kept:
        assert await present(sessions, guest_id)
        assert await announced(sessions, guest_id) == []


async def test_two_sweepers_at_once_remove_each_guest_once(sessions_for):
    first, second = sessions_for("auth"), sessions_for("auth")
    made = [await guest(first, -PAST_GRACE) for _ in range(40)]

    counts = await asyncio.gather(sweep_once(first, GRACE, batch=5),
                                  sweep_once(second, GRACE, batch=5))

    assert sum(counts) == len(made)
    for one in made:
        assert not await present(first, one["id"])
        assert len(await announced(first, one["id"])) == 1


async def test_a_guest_being_claimed_during_a_sweep_is_skipped_and_stays_claimed(sessions):
    made = await guest(sessions, -PAST_GRACE)
    async with sessions() as session, session.begin():
        user = await accounts.create_user(session, f"{uuid.uuid4().hex}@example.test", "x")
        await migration.claim(session, made["id"], user["id"])
        # The claim holds the guest's row lock until it commits; the sweeper must not wait.
        await asyncio.wait_for(sweep_once(sessions, GRACE), 5)

    assert await present(sessions, made["id"])
    assert await announced(sessions, made["id"]) == []
    await sweep_once(sessions, GRACE)
    assert await present(sessions, made["id"])
