"""What every worker process does around its handler: consume, report failed steps, serve health.

A worker's entry module builds its engine and handler, then calls ``serve``.
"""

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.consuming import Consumer, Handler, OnDead
from shared.events import Envelope, MigrationStepFailed, Step, UserLoggedIn
from shared.health import HealthServer
from shared.process import run_until_signalled
from shared.publishing import Publisher
from shared.settings import Settings
from shared.topology import Names

log = logging.getLogger(__name__)


def report_step_failed(publisher: Publisher, step: Step, source: str) -> OnDead:
    """Tell auth a step failed for good, so the migration fails with the reason, not hangs."""

    async def on_dead(envelope: Envelope, reason: str) -> None:
        try:
            claim = envelope.payload()
        except Exception:
            log.warning("dead letter names no migration; nothing to report")
            return
        if not isinstance(claim, UserLoggedIn):
            # A stray event of another kind must not fail a migration that is going well.
            log.warning("dead letter is not a step's work; nothing to report",
                        extra={"type": envelope.type})
            return
        failed = MigrationStepFailed(migration_id=claim.migration_id, step=step,
                                     reason=reason[:500])
        await publisher.publish(Envelope.wrap(failed, source, envelope.correlationid))
        log.info("step failure reported", extra={"step": step, "reason": reason})

    return on_dead


async def database_answers(engine: AsyncEngine) -> bool:
    try:
        async with asyncio.timeout(3), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def serve(
    settings: Settings,
    group: str,
    step: Step | None,
    source: str,
    handler: Handler,
    engine: AsyncEngine,
) -> None:
    names = Names(settings.broker_namespace)
    publisher = Publisher(settings.amqp_url, names, settings.publish_timeout)
    consumer = Consumer(
        settings.amqp_url,
        names,
        group,
        handler,
        on_dead=report_step_failed(publisher, step, source) if step else None,
        prefetch=settings.prefetch,
    )

    async def check() -> dict[str, bool]:
        return {"database": await database_answers(engine), "consumer": consumer.ready}

    health = HealthServer(check, settings.health_port, settings.bind_host)

    async def run(stop: asyncio.Event) -> None:
        await asyncio.gather(consumer.run(stop), health.serve(stop))

    try:
        await run_until_signalled(run)
    finally:
        await publisher.close()
        await engine.dispose()
        log.info("worker stopped", extra={"group": group})
