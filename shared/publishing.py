"""Publishing with publisher confirms and the mandatory flag.

A publish returns only once the broker has confirmed it; an event no queue would take is an
error (``Unroutable``), never a silent loss. Callers that must not lose an event go through the
outbox, which retries until this succeeds.
"""

import asyncio
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import DeliveryError, PublishError

from shared.events import Envelope
from shared.topology import Names

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"


class Unroutable(RuntimeError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class Refused(RuntimeError):
    """The broker answered the publish with a nack: it did not take the message."""


class Publisher:
    def __init__(self, amqp_url: str, names: Names, timeout: float = 10.0) -> None:
        self._url = amqp_url
        self._names = names
        self._timeout = timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def connect(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                await self.close()
                self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._channel

    async def publish(self, envelope: Envelope) -> None:
        await self.publish_raw(
            self._names.events,
            envelope.routing_key,
            envelope.model_dump_json().encode(),
            message_id=str(envelope.id),
            correlation_id=envelope.correlationid,
            type_=envelope.type,
        )

    async def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        type_: str | None = None,
        headers: dict | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raise if it is refused or unroutable."""
        channel = await self.connect()
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            type=type_,
            headers=headers or {},
        )
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        try:
            await target.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self._timeout
            )
        except PublishError as exc:
            raise Unroutable(f"no queue took {routing_key!r} on {exchange or 'default'}") from exc
        except DeliveryError as exc:
            raise Refused(f"the broker refused {routing_key!r}") from exc

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:
                log.debug("closing the publisher connection failed", exc_info=True)
