"""The migration record: claiming a guest for a user, and following its steps to the end.

Claiming is one transaction: the guest row is locked, marked as the user's, the migration and
its steps are inserted, and ``UserLoggedIn`` goes into the outbox. Claiming the same guest again
for the same user returns the same migration; a guest claimed by someone else is refused.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import STEPS, guests, migration_steps, migrations, outbox
from shared import outbox as events_out
from shared.events import (
    MigrationCompleted,
    MigrationFailed,
    MigrationStepFailed,
    SandboxMigrated,
    SessionsMigrated,
    UserLoggedIn,
)

log = logging.getLogger(__name__)

SOURCE = "/services/auth"


class GuestUnknown(Exception):
    """The guest token is valid but its guest is gone (removed after it expired)."""


class GuestClaimed(Exception):
    """The guest already belongs to another user."""


@dataclass(frozen=True)
class Claim:
    migration_id: uuid.UUID
    status: str
    created: bool


async def claim(session: AsyncSession, guest_id: uuid.UUID, user_id: uuid.UUID) -> Claim:
    """Make the guest the user's and start moving its work, within the caller's transaction."""
    guest = (
        await session.execute(select(guests).where(guests.c.id == guest_id).with_for_update())
    ).first()
    if guest is None:
        raise GuestUnknown()
    if guest.claimed_by is not None and guest.claimed_by != user_id:
        raise GuestClaimed()
    if guest.claimed_by == user_id:
        existing = (
            await session.execute(
                select(migrations.c.id, migrations.c.status).where(
                    migrations.c.guest_id == guest_id
                )
            )
        ).one()
        return Claim(existing.id, existing.status, created=False)

    migration_id = uuid.uuid4()
    await session.execute(
        update(guests)
        .where(guests.c.id == guest_id)
        .values(claimed_by=user_id, claimed_at=func.now())
    )
    await session.execute(
        migrations.insert().values(
            id=migration_id, guest_id=guest_id, user_id=user_id, status="pending"
        )
    )
    await session.execute(
        migration_steps.insert(),
        [{"migration_id": migration_id, "step": step, "status": "pending"} for step in STEPS],
    )
    await events_out.add(
        session,
        outbox,
        UserLoggedIn(migration_id=migration_id, user_id=user_id, guest_id=guest_id),
        SOURCE,
    )
    log.info("migration started",
             extra={"migration_id": migration_id, "correlation_id": migration_id,
                    "user_id": user_id, "guest_id": guest_id})
    return Claim(migration_id, "pending", created=True)


async def status(session: AsyncSession, migration_id: uuid.UUID, user_id: uuid.UUID) -> dict | None:
    """The migration as its user sees it; None for someone else's, as for a missing one.

    One statement reads the migration and its steps, so a poll never sees every step done
    while the migration still reads pending.
    """
    step = migration_steps
    steps = (
        select(func.json_object_agg(step.c.step, func.json_build_object(
            "status", step.c.status, "counts", step.c.counts, "reason", step.c.reason)))
        .where(step.c.migration_id == migrations.c.id)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(migrations, steps.label("steps")).where(
                migrations.c.id == migration_id, migrations.c.user_id == user_id
            )
        )
    ).first()
    if row is None:
        return None
    answer = {
        "migration_id": row.id,
        "status": row.status,
        "guest_id": row.guest_id,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
        "steps": row.steps or {},
        "summary": row.summary,
    }
    if row.status == "failed":
        answer["failure"] = {"step": row.failed_step, "reason": row.failure_reason}
    return answer


def summarise(counts: dict[str, dict]) -> dict:
    sessions = counts.get("sessions") or {}
    sandbox = counts.get("sandbox") or {}
    return {
        "sessions_migrated": sessions.get("sessions", 0),
        "threads_migrated": sessions.get("threads", 0),
        "directories_migrated": len(sandbox.get("directories", [])),
        "areas_migrated": sandbox.get("directories", []),
        "folders_migrated": sandbox.get("folders", 0),
        "files_migrated": sandbox.get("files", 0),
        "files_renamed": sandbox.get("renamed", 0),
        "links_skipped": sandbox.get("links_skipped", 0),
        "bytes_migrated": sandbox.get("bytes", 0),
    }


async def record_step(
    session: AsyncSession,
    event: SessionsMigrated | SandboxMigrated | MigrationStepFailed,
    correlation_id: str,
) -> str | None:
    """Record one step's outcome; returns the migration's new status when it changed.

    The migration row is locked first, so the last two step events racing each other still
    complete the migration exactly once.
    """
    migration = (
        await session.execute(
            select(migrations).where(migrations.c.id == event.migration_id).with_for_update()
        )
    ).first()
    if migration is None:
        raise LookupError(f"no migration {event.migration_id}")

    if isinstance(event, MigrationStepFailed):
        step, values = event.step, {"status": "failed", "reason": event.reason}
    else:
        step = "sessions" if isinstance(event, SessionsMigrated) else "sandbox"
        counts = event.model_dump(mode="json", exclude={"migration_id", "user_id", "guest_id"})
        values = {"status": "done", "counts": counts, "reason": None}
    await session.execute(
        update(migration_steps)
        .where(migration_steps.c.migration_id == event.migration_id,
               migration_steps.c.step == step)
        .values(**values, updated_at=func.now())
    )

    if isinstance(event, MigrationStepFailed):
        return await _fail(session, migration, event, correlation_id)
    return await _complete_if_done(session, migration, correlation_id)


async def _fail(session, migration, event: MigrationStepFailed, correlation_id: str) -> str | None:
    if migration.status != "pending":
        return None
    await session.execute(
        update(migrations)
        .where(migrations.c.id == migration.id)
        .values(status="failed", failed_step=event.step, failure_reason=event.reason,
                updated_at=func.now())
    )
    await events_out.add(
        session,
        outbox,
        MigrationFailed(migration_id=migration.id, user_id=migration.user_id,
                        guest_id=migration.guest_id, step=event.step, reason=event.reason),
        SOURCE,
        correlation_id,
    )
    log.warning("migration failed", extra={"step": event.step, "reason": event.reason})
    return "failed"


async def _complete_if_done(session, migration, correlation_id: str) -> str | None:
    """Complete once every step is done; a failed migration whose step is replayed completes."""
    if migration.status == "completed":
        return None
    steps = (
        await session.execute(
            select(migration_steps.c.step, migration_steps.c.status, migration_steps.c.counts)
            .where(migration_steps.c.migration_id == migration.id)
        )
    ).all()
    if any(step.status != "done" for step in steps):
        return None
    summary = summarise({step.step: step.counts for step in steps})
    await session.execute(
        update(migrations)
        .where(migrations.c.id == migration.id)
        .values(status="completed", summary=summary, completed_at=datetime.now(UTC),
                failed_step=None, failure_reason=None, updated_at=func.now())
    )
    await events_out.add(
        session,
        outbox,
        MigrationCompleted(migration_id=migration.id, user_id=migration.user_id,
                           guest_id=migration.guest_id, summary=summary),
        SOURCE,
        correlation_id,
    )
    log.info("migration completed", extra=summary)
    return "completed"
