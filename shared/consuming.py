"""Consuming migration events, with the one failure policy every consumer shares.

The policy, decided here and nowhere else:
- the handler returns: acknowledge;
- the message cannot be understood (not JSON, not a CloudEvent, unknown type, invalid data) or
  the handler raises ``Permanent``: dead-letter it at once with the reason;
- the database or the broker is unreachable: wait in a retry queue without spending the
  message's retry budget, since the message is not at fault;
- any other exception: retry with increasing delays (``topology.RETRY_DELAYS_MS``), then
  dead-letter with the last reason;
- a message redelivered so often that it must be crashing its worker: dead-letter it;
- cancellation is never swallowed: the message is left unacknowledged and comes back.
Before a message is dead-lettered, ``on_dead`` runs so the worker can report its step failed.

The consumer keeps its own reconnect loop instead of a robust connection, and checks that its
consumer tag is still registered on an open channel; ``ready`` is true only while it is.
"""

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shared import logs
from shared.events import Envelope, EventData, UnknownEvent
from shared.publishing import Publisher
from shared.topology import DELIVERY_LIMIT, RETRY_DELAYS_MS, Names

log = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.5, 1, 2, 5)
CONNECT_SECONDS = 10.0
WATCH_SECONDS = 1.0
LOST_DRAIN_SECONDS = 2.0
OUTAGE_RETRY_ATTEMPT = 2


class Permanent(Exception):
    """This message can never succeed (an owner id that is a path, say): dead-letter it now."""


Handler = Callable[[Envelope, EventData], Awaitable[None]]
OnDead = Callable[[Envelope, str], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    action: str  # "ack", "retry" or "dead"
    reason: str = ""
    attempt: int = 0
    counts: bool = True


# Only connection failures: a full disk (ENOSPC) is an OSError too, but retrying it forever
# without spending the message's budget would hide it instead of dead-lettering it.
OUTAGE_ERRORS = (
    ConnectionError, socket.gaierror, TimeoutError, AMQPError, asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def is_outage(exc: BaseException) -> bool:
    """True when the failure is the database or broker being away, not the message.

    SQLAlchemy wraps the driver's error, so the explicit causes are looked at too: a server
    shutting down or still starting shows up only as the cause of a generic ``DBAPIError``.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (OperationalError, InterfaceError, *OUTAGE_ERRORS)):
            return True
        if isinstance(seen, DBAPIError) and (seen.connection_invalidated
                                             or isinstance(seen.orig, OUTAGE_ERRORS)):
            return True
        seen = seen.__cause__
    return False


def decide(exc: BaseException | None, retries: int, delivery_count: int) -> Outcome:
    """What to do with a message after its handler ran (or could not be run)."""
    if exc is None:
        return Outcome("ack")
    if isinstance(exc, (Permanent, ValidationError, UnknownEvent)):
        # One line: pydantic's reasons span several, and a reason travels in headers and logs.
        return Outcome("dead", "rejected: " + " ".join(str(exc).split()))
    if delivery_count >= DELIVERY_LIMIT - 1:
        return Outcome("dead", f"delivered {delivery_count} times without being acknowledged")
    if is_outage(exc):
        return Outcome("retry", f"outage: {exc!r}", OUTAGE_RETRY_ATTEMPT, counts=False)
    if retries < len(RETRY_DELAYS_MS):
        return Outcome("retry", repr(exc), retries + 1)
    return Outcome("dead", f"failed {retries + 1} times, last: {exc!r}")


def parse(body: bytes) -> Envelope:
    try:
        return Envelope.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Permanent(f"not a JSON CloudEvent: {exc}") from exc


class Consumer:
    def __init__(
        self,
        amqp_url: str,
        names: Names,
        group: str,
        handler: Handler,
        on_dead: OnDead | None = None,
        prefetch: int = 8,
    ) -> None:
        self._url = amqp_url
        self._names = names
        self._group = group
        self._queue = names.work(group)
        self._handler = handler
        self._on_dead = on_dead
        self._prefetch = prefetch
        self._publisher = Publisher(amqp_url, names)
        self._in_hand: set[asyncio.Task] = set()
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._registered = False

    @property
    def ready(self) -> bool:
        """True only while the broker holds our consumer on an open channel."""
        return self._registered

    async def _consuming(self) -> bool:
        if self._channel is None or self._channel.is_closed or self._tag is None:
            return False
        underlay = await self._channel.get_underlay_channel()
        return self._tag in underlay.consumers

    async def run(self, stop: asyncio.Event, drain_seconds: float = 15.0) -> None:
        """Consume until ``stop``; then take no more and let what is in hand finish.

        Any failure of the connection, the channel or the consumer starts over with a new
        connection after a growing pause; only cancellation ends the loop early.
        """
        failures = 0
        while not stop.is_set():
            try:
                connection = await aio_pika.connect(self._url, timeout=CONNECT_SECONDS)
            except Exception as exc:
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("broker unreachable", extra={"queue": self._queue,
                                                         "error": repr(exc), "retry_in": delay})
                await _wait(stop, delay)
                continue
            try:
                await self._consume_on(connection, stop)
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("consumer lost", extra={"queue": self._queue, "error": repr(exc)})
            finally:
                self._registered = False
                # After a lost connection nothing in hand can be acknowledged any more: the
                # broker gives those messages out again, so waiting long for them is pointless.
                await self._drain(drain_seconds if stop.is_set() else LOST_DRAIN_SECONDS)
                self._tag = None
                self._channel = None
                if not connection.is_closed:
                    with contextlib.suppress(Exception):
                        await connection.close()
            if not stop.is_set():
                await _wait(stop, RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
        await self._publisher.close()

    async def _consume_on(self, connection, stop: asyncio.Event) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(self._queue, ensure=True)
        self._channel = channel
        self._tag = await queue.consume(self._on_message)
        self._registered = True
        log.info("consuming", extra={"queue": self._queue})
        while not stop.is_set() and await self._consuming():
            await _wait(stop, WATCH_SECONDS)
        self._registered = False
        if stop.is_set() and not channel.is_closed:
            await queue.cancel(self._tag)
            log.info("stopped taking messages", extra={"queue": self._queue})
        elif not stop.is_set():
            log.warning("consumer gone, reconnecting", extra={"queue": self._queue})

    async def _drain(self, seconds: float) -> None:
        if not self._in_hand:
            return
        done, pending = await asyncio.wait(self._in_hand, timeout=seconds)
        if pending:
            log.warning("messages still in hand are left unacknowledged; the broker returns them",
                        extra={"queue": self._queue, "count": len(pending)})
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_hand.add(task)
        try:
            await self._process(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Settling needs the broker; when it is away the message stays unacknowledged and
            # comes back on the next connection, where the inbox makes the repeat harmless.
            log.warning("could not settle a message; the broker will deliver it again",
                        extra={"queue": self._queue, "message_id": message.message_id,
                               "error": repr(exc)})
        finally:
            if task is not None:
                self._in_hand.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        retries = int(headers.get("x-retries", 0) or 0)
        delivery_count = int(headers.get("x-delivery-count", 0) or 0)
        envelope: Envelope | None = None
        error: BaseException | None = None
        try:
            envelope = parse(message.body)
            with logs.bind(**envelope.subject_fields(), correlation_id=envelope.correlationid,
                           event_id=envelope.id, queue=self._queue):
                await self._handler(envelope, envelope.payload())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the policy below decides; nothing is dropped here
            error = exc

        outcome = decide(error, retries, delivery_count)
        with logs.bind(**(envelope.subject_fields() if envelope else {}),
                       correlation_id=envelope.correlationid if envelope else None,
                       event_id=envelope.id if envelope else message.message_id,
                       queue=self._queue):
            await self._settle(message, envelope, outcome, retries, error)

    async def _settle(self, message, envelope, outcome: Outcome, retries: int, error) -> None:
        if outcome.action == "ack":
            await message.ack()
            return

        headers = dict(message.headers or {})
        headers.pop("x-delivery-count", None)
        headers.pop("x-death", None)
        if outcome.action == "retry":
            headers["x-retries"] = outcome.attempt if outcome.counts else retries
            headers["x-last-error"] = outcome.reason[:500]
            await self._publisher.publish_raw(
                "", self._names.retry(self._group, outcome.attempt), message.body,
                message_id=message.message_id, correlation_id=message.correlation_id,
                type_=message.type, headers=headers,
            )
            await message.ack()
            log.warning("handler failed, will retry",
                        extra={"attempt": outcome.attempt, "reason": outcome.reason})
            return

        if envelope is not None and self._on_dead is not None:
            await self._on_dead(envelope, outcome.reason)
        headers.update({
            "x-reason": outcome.reason[:1000],
            "x-failed-at": datetime.now(UTC).isoformat(),
            "x-queue": self._queue,
            "x-retries": retries,
        })
        await self._publisher.publish_raw(
            self._names.dead, self._names.dead_letters(self._group), message.body,
            message_id=message.message_id, correlation_id=message.correlation_id,
            type_=message.type, headers=headers,
        )
        await message.ack()
        log.error("message dead-lettered", extra={"reason": outcome.reason},
                  exc_info=error if error is not None and not isinstance(
                      error, (Permanent, ValidationError, UnknownEvent)) else None)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
