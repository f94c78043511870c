"""Everything ``make run`` needs before the processes start, each step idempotent.

Creates each service's database, applies its Alembic migrations, declares the broker topology
and makes the sandbox root. auth makes its signing key itself on first start.
"""

import asyncio
import logging

from shared import logs, schema
from shared.settings import Settings
from shared.topology import Names, declare_all

log = logging.getLogger(__name__)

SERVICES = ("auth", "sessions", "sandbox")


async def prepare(settings: Settings) -> None:
    for service in SERVICES:
        url = settings.database_url(service)
        if await schema.create_database(url):
            log.info("database created", extra={"service": service})
        await asyncio.to_thread(schema.upgrade, service, url)
        log.info("schema up to date", extra={"service": service})
    await declare_all(settings.amqp_url, Names(settings.broker_namespace))
    log.info("broker topology declared", extra={"namespace": settings.broker_namespace})
    settings.sandbox_root.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    settings = Settings()
    logs.configure("prepare", settings.log_level, settings.log_format)
    asyncio.run(prepare(settings))
