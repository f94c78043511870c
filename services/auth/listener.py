"""auth's worker: records each step's event and completes or fails the migration.

``python -m services.auth.listener``. The inbox makes a redelivered step event change nothing,
and the migration row lock makes ``MigrationCompleted`` go out once per migration.
"""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth import migration
from services.auth.models import inbox
from shared import logs, worker
from shared.consuming import Permanent
from shared.db import make_engine, make_sessionmaker
from shared.events import Envelope, EventData
from shared.inbox import first_delivery
from shared.settings import Settings

log = logging.getLogger(__name__)

GROUP = "auth"


def make_handler(sessions: async_sessionmaker[AsyncSession]):
    async def handle(envelope: Envelope, event: EventData) -> None:
        async with sessions() as session, session.begin():
            if not await first_delivery(session, inbox, GROUP, envelope.id):
                log.info("step event seen before, ignored", extra={"type": envelope.type})
                return
            try:
                changed = await migration.record_step(session, event, envelope.correlationid)
            except LookupError as exc:
                raise Permanent(str(exc)) from exc
        log.info("step recorded", extra={"type": envelope.type, "status_change": changed})

    return handle


async def main() -> None:
    settings = Settings()
    logs.configure("auth-listener", settings.log_level, settings.log_format)
    engine = make_engine(settings.database_url("auth"), pool_size=settings.prefetch,
                         max_overflow=0)
    await worker.serve(settings, GROUP, None, migration.SOURCE,
                       make_handler(make_sessionmaker(engine)), engine)


if __name__ == "__main__":
    asyncio.run(main())
