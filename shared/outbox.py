"""The transactional outbox: an event is stored with the change that causes it.

``add`` runs inside the caller's transaction and wakes the relay with ``NOTIFY`` (delivered by
PostgreSQL only if that transaction commits). The relay (``shared.relay``) publishes it.
"""

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Envelope, EventData

CHANNEL = "outbox"


async def add(
    session: AsyncSession,
    outbox: Table,
    data: EventData,
    source: str,
    correlation_id: str | None = None,
) -> Envelope:
    envelope = Envelope.wrap(data, source=source, correlation_id=correlation_id)
    await session.execute(
        outbox.insert().values(
            id=envelope.id,
            routing_key=envelope.routing_key,
            envelope=envelope.model_dump(mode="json"),
        )
    )
    await session.execute(select(func.pg_notify(CHANNEL, "")))
    return envelope
