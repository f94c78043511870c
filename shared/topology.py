"""Exchanges and queues, named once. ``declare`` is idempotent and run by setup and by tests.

Each consumer group (``sessions``, ``sandbox``, ``auth``) owns one durable quorum queue, so
every replica of a worker shares it and each group scales on its own. A transient failure waits
in the group's retry queues (message TTL, then dead-lettered back to the work queue); a message
that keeps failing ends in the group's dead-letter queue. Observers read every event from a
stream that can be replayed from its first offset.
"""

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, ExchangeType

from shared.events import (
    GuestExpired,
    MigrationStepFailed,
    SandboxMigrated,
    SessionsMigrated,
    UserLoggedIn,
)

RETRY_DELAYS_MS = (1_000, 5_000, 30_000)
DELIVERY_LIMIT = 10
STREAM_MAX_BYTES = 1_000_000_000


@dataclass(frozen=True)
class Group:
    name: str
    routing_keys: tuple[str, ...]


GROUPS = {
    "sessions": Group("sessions", (UserLoggedIn.routing_key(), GuestExpired.routing_key())),
    "sandbox": Group("sandbox", (UserLoggedIn.routing_key(), GuestExpired.routing_key())),
    "auth": Group(
        "auth",
        (
            SessionsMigrated.routing_key(),
            SandboxMigrated.routing_key(),
            MigrationStepFailed.routing_key(),
        ),
    ),
}


@dataclass(frozen=True)
class Names:
    namespace: str

    @property
    def events(self) -> str:
        return f"{self.namespace}.migration"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def observers(self) -> str:
        return f"{self.namespace}.observers"

    def work(self, group: str) -> str:
        return f"{self.namespace}.{group}"

    def retry(self, group: str, attempt: int) -> str:
        return f"{self.namespace}.{group}.retry.{attempt}"

    def dead_letters(self, group: str) -> str:
        return f"{self.namespace}.{group}.dead"

    def all_queues(self) -> list[str]:
        queues = [self.observers]
        for group in GROUPS:
            queues.append(self.work(group))
            queues.append(self.dead_letters(group))
            queues.extend(self.retry(group, i) for i in range(1, len(RETRY_DELAYS_MS) + 1))
        return queues


async def declare(channel: AbstractChannel, names: Names) -> None:
    events = await channel.declare_exchange(names.events, ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(names.dead, ExchangeType.DIRECT, durable=True)

    for group in GROUPS.values():
        work = await channel.declare_queue(
            names.work(group.name),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": names.dead,
                "x-dead-letter-routing-key": names.dead_letters(group.name),
            },
        )
        for key in group.routing_keys:
            await work.bind(events, key)

        dead_letters = await channel.declare_queue(
            names.dead_letters(group.name), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_letters.bind(dead, names.dead_letters(group.name))

        for attempt, delay in enumerate(RETRY_DELAYS_MS, start=1):
            await channel.declare_queue(
                names.retry(group.name, attempt),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": names.work(group.name),
                },
            )

    stream = await channel.declare_queue(
        names.observers,
        durable=True,
        arguments={"x-queue-type": "stream", "x-max-length-bytes": STREAM_MAX_BYTES},
    )
    await stream.bind(events, "#")


async def delete(channel: AbstractChannel, names: Names) -> None:
    """Remove a namespace's queues and exchanges (tests clean up after themselves)."""
    for queue in names.all_queues():
        await channel.queue_delete(queue)
    await channel.exchange_delete(names.events)
    await channel.exchange_delete(names.dead)


async def declare_all(amqp_url: str, names: Names) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        await declare(await connection.channel(), names)
