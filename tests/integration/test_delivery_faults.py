"""Delivery when things go wrong: relay replicas side by side, shutdown with messages in hand,
and publishing while the broker is away (on a private RabbitMQ this test may stop)."""

import asyncio
import time
import uuid
from collections import Counter

import aio_pika
import pytest
from sqlalchemy import select

from services.auth.models import outbox
from shared import outbox as events_out
from shared import topology
from shared.consuming import Consumer
from shared.events import Envelope, UserLoggedIn
from shared.publishing import Publisher
from shared.relay import Relay
from tests.e2e import private_servers

pytestmark = pytest.mark.integration


def logged_in() -> UserLoggedIn:
    return UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(), guest_id=uuid.uuid4())


@pytest.fixture
async def names(settings):
    names = topology.Names(f"gmt.df.{uuid.uuid4().hex[:8]}")
    await topology.declare_all(settings.amqp_url, names)
    yield names
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await topology.delete(await connection.channel(), names)


async def store(sessions, count: int) -> set[uuid.UUID]:
    ids = set()
    async with sessions() as session, session.begin():
        for _ in range(count):
            ids.add((await events_out.add(session, outbox, logged_in(), "/test")).id)
    return ids


async def drain_queue(settings, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        queue = await (await connection.channel()).get_queue(queue_name)
        taken = []
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
        return taken


async def test_two_relays_draining_one_outbox_side_by_side_publish_each_row_once(
    settings, databases, names, sessions_for
):
    ids = await store(sessions_for("auth"), 300)
    publishers = [Publisher(settings.amqp_url, names) for _ in range(2)]
    relays = [Relay(sessions_for("auth"), outbox, publisher) for publisher in publishers]

    sent = await asyncio.gather(*(relay.drain() for relay in relays))
    for publisher in publishers:
        await publisher.close()

    delivered = Counter(
        uuid.UUID(m.message_id) for m in await drain_queue(settings, names.work("sessions"))
    )
    ours = {i: n for i, n in delivered.items() if i in ids}
    assert set(ours) == ids
    assert set(ours.values()) == {1}
    assert sum(sent) >= len(ids)
    async with sessions_for("auth")() as session:
        unsent = (await session.execute(
            select(outbox.c.id).where(outbox.c.id.in_(ids), outbox.c.published_at.is_(None))
        )).all()
    assert unsent == []


async def start(consumer: Consumer, drain_seconds: float):
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, drain_seconds=drain_seconds))
    async with asyncio.timeout(10):
        while not consumer.ready:
            await asyncio.sleep(0.05)
    return stop, task


async def ready_messages(settings, queue_name: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count


async def test_on_stop_a_message_in_hand_finishes_and_is_acknowledged(settings, names):
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(envelope, data):
        started.set()
        await asyncio.sleep(1)
        finished.set()

    stop, task = await start(Consumer(settings.amqp_url, names, "sessions", slow), 10)
    publisher = Publisher(settings.amqp_url, names)
    await publisher.publish(Envelope.wrap(logged_in(), "/test"))
    await publisher.close()
    async with asyncio.timeout(10):
        await started.wait()

    stop.set()
    began = time.monotonic()
    await asyncio.wait_for(task, 15)

    assert finished.is_set()
    assert time.monotonic() - began < 5
    assert await ready_messages(settings, names.work("sessions")) == 0


async def test_a_message_still_in_hand_at_the_deadline_goes_back_to_the_queue(settings, names):
    started = asyncio.Event()

    async def stuck(envelope, data):
        started.set()
        await asyncio.sleep(60)

    stop, task = await start(Consumer(settings.amqp_url, names, "sandbox", stuck), 1)
    envelope = Envelope.wrap(logged_in(), "/test")
    publisher = Publisher(settings.amqp_url, names)
    await publisher.publish(envelope)
    await publisher.close()
    async with asyncio.timeout(10):
        await started.wait()

    stop.set()
    began = time.monotonic()
    await asyncio.wait_for(task, 10)

    assert time.monotonic() - began < 5
    back = await drain_queue(settings, names.work("sandbox"))
    assert [m.message_id for m in back] == [str(envelope.id)]
    assert back[0].redelivered


@pytest.fixture(scope="module")
def rabbit():
    with private_servers.rabbitmq() as server:
        yield server


async def test_publishing_while_the_broker_is_away_fails_fast_and_the_outbox_keeps_the_event(
    rabbit, databases, sessions_for
):
    names = topology.Names(f"gmt.away.{uuid.uuid4().hex[:6]}")
    await topology.declare_all(rabbit.url, names)
    sessions = sessions_for("auth")
    relay_publisher = Publisher(rabbit.url, names, timeout=2)
    relay = Relay(sessions, outbox, relay_publisher)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.to_thread(rabbit.stop)
        publisher = Publisher(rabbit.url, names, timeout=2)
        began = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - refused connection or timeout, both fine
            await publisher.publish(Envelope.wrap(logged_in(), "/test"))
        assert time.monotonic() - began < 3

        (event_id,) = await store(sessions, 1)
        await asyncio.sleep(2)
        assert await published_at(sessions, event_id) is None

        await asyncio.to_thread(rabbit.start)
        async with asyncio.timeout(30):
            while await published_at(sessions, event_id) is None:
                await asyncio.sleep(0.2)
        taken = await drain_queue_at(rabbit.url, names.work("sessions"))
        assert [m.message_id for m in taken].count(str(event_id)) == 1
    finally:
        stop.set()
        await running
        await relay_publisher.close()


async def published_at(sessions, event_id):
    async with sessions() as session:
        return (await session.execute(
            select(outbox.c.published_at).where(outbox.c.id == event_id))).scalar_one()


async def drain_queue_at(url: str, queue_name: str):
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).get_queue(queue_name)
        taken = []
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
        return taken
