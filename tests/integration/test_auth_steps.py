"""auth's listener: steps recorded once, the migration completed or failed exactly once."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.auth import accounts, migration
from services.auth.listener import make_handler
from services.auth.models import migrations, outbox
from shared.consuming import Permanent
from shared.events import (
    Envelope,
    MigrationStepFailed,
    SandboxMigrated,
    SessionsMigrated,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(sessions_for):
    return sessions_for("auth")


async def started(sessions) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    async with sessions() as session, session.begin():
        user = await accounts.create_user(session, f"{uuid.uuid4().hex}@example.test", "x")
        guest = await accounts.create_guest(session, timedelta(days=1))
        claim = await migration.claim(session, guest["id"], user["id"])
    return claim.migration_id, user["id"], guest["id"]


def sessions_done(migration_id, user_id, guest_id) -> Envelope:
    return Envelope.wrap(SessionsMigrated(migration_id=migration_id, user_id=user_id,
                                          guest_id=guest_id, sessions=3, threads=4), "/test")


def sandbox_done(migration_id, user_id, guest_id) -> Envelope:
    return Envelope.wrap(SandboxMigrated(migration_id=migration_id, user_id=user_id,
                                         guest_id=guest_id, files=5, directories=["uploads"],
                                         folders=1, renamed=1, links_skipped=0, bytes=10),
                         "/test")


async def published(sessions, migration_id, routing_key) -> int:
    async with sessions() as session:
        rows = (await session.execute(
            select(outbox.c.envelope).where(outbox.c.routing_key == routing_key))).scalars()
        return sum(1 for row in rows if row["subject"] == str(migration_id))


async def state(sessions, migration_id):
    async with sessions() as session:
        return (await session.execute(
            select(migrations).where(migrations.c.id == migration_id))).one()


async def test_both_steps_racing_complete_the_migration_once_with_the_summary(sessions):
    ids = await started(sessions)
    handle = make_handler(sessions)
    first, second = sessions_done(*ids), sandbox_done(*ids)

    await asyncio.gather(handle(first, first.payload()), handle(second, second.payload()))
    await handle(first, first.payload())  # a redelivery changes nothing

    row = await state(sessions, ids[0])
    assert row.status == "completed"
    assert row.summary["sessions_migrated"] == 3 and row.summary["files_migrated"] == 5
    assert row.summary["files_renamed"] == 1 and row.summary["directories_migrated"] == 1
    assert await published(sessions, ids[0], "MigrationCompleted.v1") == 1


async def test_the_same_step_under_a_new_event_id_does_not_complete_twice(sessions):
    ids = await started(sessions)
    handle = make_handler(sessions)
    for envelope in (sessions_done(*ids), sandbox_done(*ids), sandbox_done(*ids)):
        await handle(envelope, envelope.payload())
    assert await published(sessions, ids[0], "MigrationCompleted.v1") == 1


async def test_a_failed_step_fails_the_migration_once_and_a_replayed_success_completes_it(
    sessions
):
    ids = await started(sessions)
    handle = make_handler(sessions)
    failure = Envelope.wrap(MigrationStepFailed(migration_id=ids[0], step="sandbox",
                                                reason="disk on fire"), "/test")
    again = Envelope.wrap(failure.payload(), "/test")
    await handle(failure, failure.payload())
    await handle(again, again.payload())

    row = await state(sessions, ids[0])
    assert row.status == "failed" and row.failure_reason == "disk on fire"
    assert row.failed_step == "sandbox"
    assert await published(sessions, ids[0], "MigrationFailed.v1") == 1

    for envelope in (sessions_done(*ids), sandbox_done(*ids)):
        await handle(envelope, envelope.payload())
    row = await state(sessions, ids[0])
    assert row.status == "completed" and row.failure_reason is None
    assert await published(sessions, ids[0], "MigrationCompleted.v1") == 1


async def test_a_step_for_an_unknown_migration_is_refused_for_good(sessions):
    envelope = sessions_done(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    with pytest.raises(Permanent):
        await make_handler(sessions)(envelope, envelope.payload())


async def test_a_poll_never_sees_every_step_done_while_the_migration_is_pending(sessions):
    handle = make_handler(sessions)
    contradictions = []

    async def poll(migration_id, user_id, done: asyncio.Event):
        while not done.is_set():
            async with sessions() as session, session.begin():
                answer = await migration.status(session, migration_id, user_id)
            all_done = all(s["status"] == "done" for s in answer["steps"].values())
            if all_done and answer["status"] == "pending":
                contradictions.append(answer)
            await asyncio.sleep(0)

    for _ in range(15):
        ids = await started(sessions)
        done = asyncio.Event()
        poller = asyncio.create_task(poll(ids[0], ids[1], done))
        for envelope in (sessions_done(*ids), sandbox_done(*ids)):
            await handle(envelope, envelope.payload())
        await asyncio.sleep(0.01)
        done.set()
        await poller
        async with sessions() as session, session.begin():
            final = await migration.status(session, ids[0], ids[1])
        assert final["status"] == "completed"
        assert set(final["steps"]) == {"sessions", "sandbox"}
    assert contradictions == []
