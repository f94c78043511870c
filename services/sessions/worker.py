"""The sessions worker: hands a claimed guest's sessions and threads to the user.

``python -m services.sessions.worker``. On ``UserLoggedIn`` it records the event in the inbox,
re-owns the rows and fences the guest (``ownership``), and stores ``SessionsMigrated`` in the
outbox, all in one transaction: a crash anywhere leaves either nothing or everything done, and
the relay publishes the event once the transaction commits.

On ``GuestExpired`` (auth removed a guest nobody claimed) it deletes the rows the guest still
owns (``expiry``), in one transaction with the inbox record.
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sessions import expiry, ownership
from services.sessions.models import inbox, outbox
from shared import logs, worker
from shared import outbox as events_out
from shared.consuming import Handler, Permanent
from shared.db import make_engine, make_sessionmaker
from shared.events import Envelope, EventData, GuestExpired, SessionsMigrated, UserLoggedIn
from shared.inbox import first_delivery
from shared.settings import Settings

log = logging.getLogger(__name__)

GROUP = "sessions"
SOURCE = "/services/sessions"


def make_handler(sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def handle(envelope: Envelope, event: EventData) -> None:
        if isinstance(event, GuestExpired):
            await remove_expired(envelope, event)
            return
        if not isinstance(event, UserLoggedIn):
            raise Permanent(f"the sessions worker does not handle {envelope.type}")
        fields = {"migration_id": str(event.migration_id), "guest_id": str(event.guest_id),
                  "user_id": str(event.user_id), "event_id": str(envelope.id)}
        async with sessions() as session, session.begin():
            if not await first_delivery(session, inbox, GROUP, envelope.id):
                log.info("event seen before, ignored", extra=fields)
                return
            try:
                handover = await ownership.hand_over(session, event)
            except ownership.ConflictingClaim as exc:
                raise Permanent(str(exc)) from exc
            migrated = SessionsMigrated(
                migration_id=event.migration_id,
                user_id=event.user_id,
                guest_id=event.guest_id,
                sessions=handover.sessions,
                threads=handover.threads,
            )
            await events_out.add(session, outbox, migrated, SOURCE, envelope.correlationid)
        counts = {"sessions": handover.sessions, "threads": handover.threads}
        if handover.repeated:
            log.info("guest handed over before; counts sent again", extra={**fields, **counts})
        else:
            log.info("guest's sessions handed to the user", extra={**fields, **counts})

    async def remove_expired(envelope: Envelope, event: GuestExpired) -> None:
        fields = {"guest_id": str(event.guest_id), "event_id": str(envelope.id)}
        async with sessions() as session, session.begin():
            if not await first_delivery(session, inbox, GROUP, envelope.id):
                log.info("event seen before, ignored", extra=fields)
                return
            try:
                removal = await expiry.remove_guest(session, event.guest_id)
            except expiry.GuestWasClaimed as exc:
                raise Permanent(str(exc)) from exc
        log.info("expired guest's sessions removed",
                 extra={**fields, "count": removal.sessions, "sessions": removal.sessions,
                        "threads": removal.threads})

    return handle


async def main() -> None:
    settings = Settings()
    logs.configure("sessions-worker", settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url("sessions"), pool_size=settings.prefetch,
                         max_overflow=0)
    await worker.serve(settings, GROUP, "sessions", SOURCE,
                       make_handler(make_sessionmaker(engine)), engine)


if __name__ == "__main__":
    asyncio.run(main())
