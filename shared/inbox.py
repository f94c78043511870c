"""The inbox: which events a consumer has applied, recorded in the same transaction as the effect.

A redelivered event finds its id here and changes nothing.
"""

import uuid

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


async def first_delivery(
    session: AsyncSession, inbox: Table, consumer: str, event_id: uuid.UUID
) -> bool:
    """Record the event as applied; False when it already was (the caller then does nothing)."""
    statement = (
        insert(inbox)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return (await session.execute(statement)).first() is not None
