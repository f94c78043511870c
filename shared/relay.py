"""The outbox relay: publishes stored events and marks them sent only after the broker's confirm.

One relay process per service database (``python -m shared.relay auth``). It wakes on the
outbox's ``NOTIFY`` and also polls, so a lost notification or a dropped LISTEN connection only
delays an event. Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so replicas run side by side
without sending the same row twice in the normal case. A crash between the confirm and the
commit sends a row again; consumers' inboxes make that harmless.
"""

import asyncio
import contextlib
import logging
import sys
from datetime import timedelta

import asyncpg
from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import logs, outbox
from shared.db import asyncpg_dsn, make_engine, make_sessionmaker, new_metadata
from shared.events import Envelope
from shared.health import HealthServer
from shared.process import run_until_signalled
from shared.publishing import Publisher
from shared.settings import Settings
from shared.topology import Names

log = logging.getLogger(__name__)

BATCH = 100
POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(attempts, 10)))


class Relay:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], table: Table, publisher: Publisher
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._publisher = publisher
        self._wake = asyncio.Event()
        self.database_ok = False

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Publish every due row; returns how many were sent."""
        sent = 0
        while True:
            batch_sent, more = await self._publish_batch()
            sent += batch_sent
            if not more:
                return sent

    async def _publish_batch(self) -> tuple[int, bool]:
        t = self._table
        # The database's clock, not this process's: rows are stamped by the database, and a
        # relay whose clock runs behind would otherwise hold every new event back.
        due = (
            select(t.c.id, t.c.envelope, t.c.attempts)
            .where(t.c.published_at.is_(None), t.c.next_attempt_at <= func.now())
            .order_by(t.c.created_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        sent = 0
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(due)).all()
            self.database_ok = True
            for row in rows:
                envelope = Envelope.model_validate(row.envelope)
                try:
                    await self._publisher.publish(envelope)
                except Exception as exc:  # any broker failure: keep the row, try again later
                    await session.execute(
                        update(t)
                        .where(t.c.id == row.id)
                        .values(
                            attempts=row.attempts + 1,
                            next_attempt_at=func.now() + backoff(row.attempts),
                            last_error=repr(exc)[:500],
                        )
                    )
                    log.warning(
                        "publish failed, will retry",
                        extra={"event_id": row.id, **envelope.subject_fields(),
                               "error": repr(exc), "attempts": row.attempts + 1},
                    )
                    await self._publisher.close()
                    return sent, False
                await session.execute(
                    update(t).where(t.c.id == row.id).values(published_at=func.now())
                )
                sent += 1
                log.info(
                    "event published",
                    extra={"event_id": row.id, **envelope.subject_fields(),
                           "correlation_id": envelope.correlationid,
                           "routing_key": envelope.routing_key},
                )
        return sent, len(rows) == BATCH

    async def listen(self, dsn: str, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open; reconnect when it drops (polling covers the gap)."""
        while not stop.is_set():
            connection = None
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(dsn, timeout=10)
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(outbox.CHANNEL, lambda *_a: self.wake())
                self.wake()
                await _first(stop.wait(), lost.wait())
            except (TimeoutError, OSError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("cannot LISTEN, polling only", extra={"error": repr(exc)})
                await _sleep_or_stop(stop, 2.0)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain on every wake-up and every ``POLL_SECONDS``; never give up while running."""
        while not stop.is_set():
            try:
                await self._publisher.connect()
            except Exception as exc:  # connect fails fast; the rows wait in the outbox
                log.warning("broker unreachable, events wait in the outbox",
                            extra={"error": repr(exc)})
                # New rows' notifications must not turn into a storm of connection attempts.
                await _sleep_or_stop(stop, POLL_SECONDS)
            else:
                await self._drain_once()
            self._wake.clear()
            try:
                await asyncio.wait_for(_first(self._wake.wait(), stop.wait()), POLL_SECONDS)
            except TimeoutError:
                pass

    async def _drain_once(self) -> None:
        try:
            await self.drain()
        except (OSError, asyncpg.PostgresError, SQLAlchemyError, TimeoutError) as exc:
            self.database_ok = False
            log.warning("outbox unreachable", extra={"error": repr(exc)})
        except Exception as exc:
            self.database_ok = False
            log.error("relay pass failed", extra={"error": repr(exc)}, exc_info=True)


async def _first(*awaitables) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def main(service: str) -> None:
    settings = Settings()
    logs.configure(f"{service}-relay", settings.log_level, settings.log_format)
    url = settings.database_url(service)
    engine = make_engine(url, pool_size=2, max_overflow=0)
    table = new_metadata().tables["outbox"]
    publisher = Publisher(settings.amqp_url, Names(settings.broker_namespace),
                          settings.publish_timeout)
    relay = Relay(make_sessionmaker(engine), table, publisher)

    async def check() -> dict[str, bool]:
        return {"database": relay.database_ok, "broker": publisher.connected}

    health = HealthServer(check, settings.health_port, settings.bind_host)

    async def serve(stop: asyncio.Event) -> None:
        log.info("relay started", extra={"service": service})
        await asyncio.gather(relay.run(stop), relay.listen(asyncpg_dsn(url), stop),
                             health.serve(stop))

    try:
        await run_until_signalled(serve)
    finally:
        await publisher.close()
        await engine.dispose()
        log.info("relay stopped", extra={"service": service})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
