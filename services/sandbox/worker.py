"""sandbox's worker: on ``UserLoggedIn``, moves the guest's folders into the user's.

``python -m services.sandbox.worker``. One move per guest at a time (an advisory lock held for
the whole run); a database row fences the guest's writes, then records the counts before
anything moves, then ``done`` with ``SandboxMigrated`` in the outbox. Each step resumes where
a crash left it, and a redelivered event changes nothing.

On ``GuestExpired`` (auth removed a guest nobody claimed) it removes the guest's folder
(``expiry``) under the guest's lock and records the event in the inbox in the same transaction;
a crash before the commit only means the redelivery finds the folder gone.
"""

import asyncio
import logging
import uuid
from pathlib import Path

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sandbox import expiry, fence, paths
from services.sandbox.filesystem import Filesystem
from services.sandbox.models import inbox, moves, outbox
from services.sandbox.sandbox_move import Move, Plan
from shared import logs, worker
from shared import outbox as events_out
from shared.consuming import Handler, Permanent
from shared.db import make_engine, make_sessionmaker
from shared.events import Envelope, EventData, GuestExpired, SandboxMigrated, UserLoggedIn
from shared.inbox import first_delivery
from shared.settings import Settings

log = logging.getLogger(__name__)

GROUP = "sandbox"
SOURCE = "/services/sandbox"


class MoveFailed(RuntimeError):
    """A filesystem step failed. Never an outage of the database or broker, even where its
    ``OSError`` shares a class with connection errors (a timed-out network filesystem raises
    ``TimeoutError``), so the shared policy spends the retry budget on it."""


def make_handler(sessions: async_sessionmaker[AsyncSession], root: Path,
                 fs: Filesystem | None = None) -> Handler:
    async def handle(envelope: Envelope, event: EventData) -> None:
        if isinstance(event, GuestExpired):
            await _remove_expired(sessions, root, envelope, event)
            return
        if not isinstance(event, UserLoggedIn):
            log.debug("not an event for this worker", extra={"type": envelope.type})
            return
        move = _move_for(event, root, fs)
        guest_id = uuid.UUID(move.guest)
        async with sessions() as guard, guard.begin():
            await fence.hold_exclusive(guard, guest_id)
            row = await _fence(sessions, envelope, move)
            if row is None:
                log.info("event seen before, ignored", extra={"migration_id": move.migration})
                return
            if row.state != "done":
                await _move(sessions, envelope, move, row)
        await _filesystem(move.clean)

    return handle


async def _remove_expired(sessions: async_sessionmaker[AsyncSession], root: Path,
                          envelope: Envelope, event: GuestExpired) -> None:
    try:
        guest = paths.owner_id(event.guest_id)
    except paths.BadOwner as exc:
        raise Permanent(str(exc)) from exc
    guest_id = uuid.UUID(guest)
    async with sessions() as session, session.begin():
        await fence.hold_exclusive(session, guest_id)
        if not await first_delivery(session, inbox, GROUP, envelope.id):
            log.info("event seen before, ignored", extra={"guest_id": guest})
            return
        if await fence.is_fenced(session, guest_id):
            # auth never removes a claimed guest; whatever is left of its folder is the user's.
            raise Permanent(f"guest {guest} was claimed; its folder is not removed")
        removal = await _filesystem(expiry.remove_guest_folder, root, guest)
    log.info("expired guest's folder removed", extra={
        "guest_id": guest, "count": removal.files, "files": removal.files,
        "folders": removal.folders, "links": removal.links, "bytes": removal.bytes})


def _move_for(event: UserLoggedIn, root: Path, fs: Filesystem | None) -> Move:
    try:
        move = Move(root, event.guest_id, event.user_id, event.migration_id, fs)
    except paths.BadOwner as exc:
        raise Permanent(str(exc)) from exc
    if move.guest == move.user:
        raise Permanent("the guest and the user are the same id")
    return move


async def _fence(sessions: async_sessionmaker[AsyncSession], envelope: Envelope, move: Move):
    """Transaction 1: the guest's fence row, unless this event was applied already (None)."""
    async with sessions() as session, session.begin():
        seen = select(exists().where(inbox.c.consumer == GROUP,
                                     inbox.c.event_id == envelope.id))
        if (await session.execute(seen)).scalar():
            return None
        guest_id = uuid.UUID(move.guest)
        row = (await session.execute(select(moves).where(moves.c.guest_id == guest_id))).first()
        if row is None:
            await session.execute(moves.insert().values(
                migration_id=uuid.UUID(move.migration), guest_id=guest_id,
                user_id=uuid.UUID(move.user), state="fenced"))
            row = (await session.execute(
                select(moves).where(moves.c.guest_id == guest_id))).one()
            log.info("guest fenced", extra={"migration_id": move.migration})
        elif str(row.migration_id) != move.migration or str(row.user_id) != move.user:
            raise Permanent(f"guest already moved by migration {row.migration_id}")
        return row


async def _move(sessions: async_sessionmaker[AsyncSession], envelope: Envelope, move: Move,
                row) -> None:
    if row.state == "fenced":
        plan = await _filesystem(_stage_and_plan, move)
        async with sessions() as session, session.begin():
            await session.execute(
                update(moves)
                .where(moves.c.migration_id == row.migration_id, moves.c.state == "fenced")
                .values(state="staged", directories=plan.directories, files=plan.files,
                        folders=plan.folders, bytes=plan.bytes,
                        links_skipped=plan.links_skipped, updated_at=func.now()))
        log.info("move planned", extra={"migration_id": move.migration, "files": plan.files,
                                        "bytes": plan.bytes, "folders": plan.folders})
    else:
        plan = Plan(row.directories or [], row.files or 0, row.folders or 0, row.bytes or 0,
                    row.links_skipped or 0)
    renamed = await _filesystem(move.run)
    migrated = SandboxMigrated(
        migration_id=row.migration_id, user_id=row.user_id, guest_id=row.guest_id,
        files=plan.files, directories=plan.directories, folders=plan.folders, renamed=renamed,
        links_skipped=plan.links_skipped, bytes=plan.bytes)
    async with sessions() as session, session.begin():
        # Transaction 2: the effect is recorded once, with its event.
        await first_delivery(session, inbox, GROUP, envelope.id)
        await session.execute(
            update(moves).where(moves.c.migration_id == row.migration_id)
            .values(state="done", renamed=renamed, updated_at=func.now()))
        await events_out.add(session, outbox, migrated, SOURCE, envelope.correlationid)
    log.info("guest folders moved", extra={
        "migration_id": move.migration, "files": plan.files, "folders": plan.folders,
        "renamed": renamed, "links_skipped": plan.links_skipped, "bytes": plan.bytes})


def _stage_and_plan(move: Move) -> Plan:
    move.stage()
    return move.plan()


async def _filesystem(function, *args):
    try:
        return await asyncio.to_thread(function, *args)
    except OSError as exc:
        raise MoveFailed(f"{function.__name__}: {exc!r}") from exc


async def main() -> None:
    settings = Settings()
    logs.configure("sandbox-worker", settings.log_level, settings.log_format)
    # Each message in hand holds two connections: the guest's lock and its own transactions.
    engine = make_engine(settings.database_url("sandbox"), pool_size=settings.prefetch * 2,
                         max_overflow=0)
    handler = make_handler(make_sessionmaker(engine), settings.sandbox_root)
    await worker.serve(settings, GROUP, "sandbox", SOURCE, handler, engine)


if __name__ == "__main__":
    asyncio.run(main())
