"""auth's sweeper: removes guests nobody claimed, once their expiry and a grace period are past.

``python -m services.auth.sweeper``. Every ``GM_GUEST_SWEEP_SECONDS`` it removes, in batches of
one transaction each, the guests that were never claimed and expired more than
``GM_GUEST_GRACE_HOURS`` ago, writing one ``GuestExpired`` per guest into auth's outbox in the
same transaction (the relay publishes it; the sessions and sandbox workers then remove the
guest's rows and folders). A guest token lives exactly as long as its guest, so by then no
token of the guest still works.

A claimed guest is never removed, whatever its migration's state: its work belongs to a user.
Rows are taken ``FOR UPDATE SKIP LOCKED``, so replicas split the work between them, and a login
claiming the guest at that moment either locks it first (the sweeper skips it) or waits and
finds it gone (``GuestUnknown``).
"""

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth.migration import SOURCE
from services.auth.models import guests, migrations, outbox
from shared import logs
from shared import outbox as events_out
from shared.db import make_engine, make_sessionmaker
from shared.events import GuestExpired
from shared.health import HealthServer
from shared.process import run_until_signalled
from shared.settings import Settings
from shared.worker import database_answers

log = logging.getLogger(__name__)

BATCH = 500
# After a failed pass (the database away, say) the next one comes sooner than the interval.
RETRY_SECONDS = 60.0


async def sweep_once(sessions: async_sessionmaker[AsyncSession], grace: timedelta,
                     batch: int = BATCH, stop: asyncio.Event | None = None) -> int:
    """Remove every unclaimed guest expired more than ``grace`` ago; returns how many."""
    total = 0
    while stop is None or not stop.is_set():
        removed = await _sweep_batch(sessions, grace, batch)
        total += removed
        if removed:
            log.info("expired guests removed", extra={"count": removed})
        if removed < batch:
            break
    log.info("sweep finished", extra={"count": total, "grace_hours": grace / timedelta(hours=1)})
    return total


async def _sweep_batch(sessions: async_sessionmaker[AsyncSession], grace: timedelta,
                       batch: int) -> int:
    """One transaction: lock up to ``batch`` removable guests, remove them, announce each."""
    # A claimed guest always has a migration row; checking both keeps the rule true even if a
    # row ever broke that invariant, and the foreign key from migrations would refuse anyway.
    removable = (
        select(guests.c.id, guests.c.expires_at)
        .where(guests.c.claimed_by.is_(None),
               guests.c.expires_at < func.now() - grace,
               ~exists().where(migrations.c.guest_id == guests.c.id))
        .order_by(guests.c.expires_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    async with sessions() as session, session.begin():
        rows = (await session.execute(removable)).all()
        if not rows:
            return 0
        await session.execute(delete(guests).where(guests.c.id.in_([row.id for row in rows])))
        for row in rows:
            expired = GuestExpired(guest_id=row.id, expired_at=row.expires_at)
            await events_out.add(session, outbox, expired, SOURCE)
    return len(rows)


async def sweep_every(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                      stop: asyncio.Event) -> None:
    """Sweep at once, then every ``guest_sweep_seconds`` until ``stop``."""
    grace = timedelta(hours=settings.guest_grace_hours)
    while not stop.is_set():
        pause = settings.guest_sweep_seconds
        try:
            await sweep_once(sessions, grace, stop=stop)
        except Exception as exc:  # the next pass tries again; nothing is half done
            pause = min(pause, RETRY_SECONDS)
            log.warning("sweep failed, will try again", extra={"error": repr(exc),
                                                               "retry_in": pause})
        try:
            await asyncio.wait_for(stop.wait(), pause)
        except TimeoutError:
            pass


async def main() -> None:
    settings = Settings()
    logs.configure("auth-sweeper", settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url("auth"), pool_size=2, max_overflow=0)
    sessions = make_sessionmaker(engine)

    async def check() -> dict[str, bool]:
        return {"database": await database_answers(engine)}

    health = HealthServer(check, settings.health_port, settings.bind_host)

    async def serve(stop: asyncio.Event) -> None:
        log.info("sweeper started", extra={"every_seconds": settings.guest_sweep_seconds,
                                           "grace_hours": settings.guest_grace_hours})
        await asyncio.gather(sweep_every(sessions, settings, stop), health.serve(stop))

    try:
        await run_until_signalled(serve)
    finally:
        await engine.dispose()
        log.info("sweeper stopped")


if __name__ == "__main__":
    asyncio.run(main())
