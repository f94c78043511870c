"""The outbox relay and the consumer's failure policy, against real PostgreSQL and RabbitMQ."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from sqlalchemy import select

from services.auth.models import outbox
from shared import outbox as events_out
from shared.consuming import Consumer, Permanent
from shared.events import Envelope, GuestExpired, SessionsMigrated, UserLoggedIn
from shared.publishing import Publisher, Unroutable
from shared.relay import Relay
from shared.topology import Names
from shared.worker import report_step_failed

pytestmark = pytest.mark.integration


def logged_in() -> UserLoggedIn:
    return UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(), guest_id=uuid.uuid4())


@pytest.fixture
async def channel(settings):
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        yield await connection.channel()


async def watch(channel, names: Names, key: str):
    """A throwaway queue that sees every event with ``key`` on the events exchange."""
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(names.events, key)
    return queue


async def next_message(queue, message_id: str, timeout: float = 10.0):
    """The message with this id; others (other tests' events) are acknowledged and passed over."""
    async with asyncio.timeout(timeout):
        while True:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            if message.message_id == message_id:
                return message


async def test_the_relay_publishes_a_stored_event_and_marks_it_sent_after_the_confirm(
    settings, databases, broker, sessions_for, channel
):
    queue = await watch(channel, broker, "UserLoggedIn.v1")
    sessions = sessions_for("auth")
    async with sessions() as session, session.begin():
        envelope = await events_out.add(session, outbox, logged_in(), "/test")

    publisher = Publisher(settings.amqp_url, broker)
    relay = Relay(sessions, outbox, publisher)
    assert await relay.drain() >= 1
    await publisher.close()

    seen = await next_message(queue, str(envelope.id))
    assert Envelope.model_validate_json(seen.body).id == envelope.id
    async with sessions() as session:
        sent = (await session.execute(
            select(outbox.c.published_at).where(outbox.c.id == envelope.id))).scalar_one()
    assert sent is not None


async def test_an_unroutable_event_stays_in_the_outbox_with_the_error(
    settings, databases, sessions_for, channel
):
    names = Names(f"gmt.unroutable.{uuid.uuid4().hex[:6]}")
    await channel.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, auto_delete=False)
    try:
        publisher = Publisher(settings.amqp_url, names)
        with pytest.raises(Unroutable):
            await publisher.publish(Envelope.wrap(logged_in(), "/test"))

        sessions = sessions_for("auth")
        async with sessions() as session, session.begin():
            envelope = await events_out.add(session, outbox, logged_in(), "/test")
        await Relay(sessions, outbox, publisher).drain()
        await publisher.close()
        async with sessions() as session:
            row = (await session.execute(
                select(outbox).where(outbox.c.id == envelope.id))).one()
        assert row.published_at is None
        assert row.attempts == 1 and "Unroutable" in row.last_error
    finally:
        await channel.exchange_delete(names.events)


async def dead_letter(channel, queue_name: str, message_id: str):
    """The dead-lettered copy of one message (others there are left acknowledged)."""
    queue = await channel.get_queue(queue_name)
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                if message.message_id == message_id:
                    return message
            else:
                await asyncio.sleep(0.05)


async def run_consumer(settings, names, group, handler, on_dead=None):
    stop = asyncio.Event()
    consumer = Consumer(settings.amqp_url, names, group, handler, on_dead=on_dead)
    task = asyncio.create_task(consumer.run(stop, drain_seconds=2))
    async with asyncio.timeout(10):
        while not consumer.ready:
            await asyncio.sleep(0.05)
    return consumer, stop, task


async def publish(settings, names, data) -> Envelope:
    publisher = Publisher(settings.amqp_url, names)
    envelope = Envelope.wrap(data, "/test")
    await publisher.publish(envelope)
    await publisher.close()
    return envelope


async def test_a_failing_handler_is_retried_after_a_delay_and_then_succeeds(settings, broker):
    calls: list[int] = []
    done = asyncio.Event()
    event = SessionsMigrated(migration_id=uuid.uuid4(), user_id=uuid.uuid4(),
                             guest_id=uuid.uuid4(), sessions=1, threads=1)

    async def handler(envelope, data):
        if data.migration_id != event.migration_id:
            return
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        done.set()

    consumer, stop, task = await run_consumer(settings, broker, "auth", handler)
    try:
        await publish(settings, broker, event)
        async with asyncio.timeout(15):
            await done.wait()
        assert len(calls) == 2
    finally:
        stop.set()
        await task
    assert not consumer.ready


async def test_a_permanent_failure_lands_in_the_dead_letter_queue_with_its_reason(
    settings, broker, channel
):
    reported: list[str] = []
    event = logged_in()

    async def handler(envelope, data):
        if data.migration_id == event.migration_id:
            raise Permanent("owner id is not well-formed")

    async def on_dead(envelope, reason):
        reported.append(reason)

    _, stop, task = await run_consumer(settings, broker, "sessions", handler, on_dead)
    try:
        envelope = await publish(settings, broker, event)
        message = await dead_letter(channel, broker.dead_letters("sessions"), str(envelope.id))
    finally:
        stop.set()
        await task
    assert "not well-formed" in message.headers["x-reason"]
    assert reported and "not well-formed" in reported[0]


async def test_a_body_that_is_not_json_is_dead_lettered_not_dropped(settings, broker, channel):
    _, stop, task = await run_consumer(settings, broker, "sandbox", lambda e, d: None)
    marker = uuid.uuid4().hex
    try:
        exchange = await channel.get_exchange(broker.events)
        await exchange.publish(aio_pika.Message(b"{not json", message_id=marker),
                               routing_key="UserLoggedIn.v1")
        message = await dead_letter(channel, broker.dead_letters("sandbox"), marker)
    finally:
        stop.set()
        await task
    assert "JSON" in message.headers["x-reason"]


async def test_a_dead_step_message_reports_its_migration_failed_and_a_stray_one_does_not(
    settings, broker, channel
):
    queue = await watch(channel, broker, "MigrationStepFailed.v1")
    publisher = Publisher(settings.amqp_url, broker)
    on_dead = report_step_failed(publisher, "sandbox", "/test")
    claim = logged_in()
    stray = SessionsMigrated(migration_id=uuid.uuid4(), user_id=uuid.uuid4(),
                             guest_id=uuid.uuid4(), sessions=0, threads=0)
    try:
        await on_dead(Envelope.wrap(stray, "/test"), "not mine")
        expired = GuestExpired(guest_id=uuid.uuid4(), expired_at=datetime.now(UTC))
        await on_dead(Envelope.wrap(expired, "/test"), "a guest's expiry fails no migration")
        await on_dead(Envelope.wrap(claim, "/test"), "disk on fire")
    finally:
        await publisher.close()

    reports = []
    while (message := await queue.get(fail=False, timeout=5)) is not None:
        await message.ack()
        reports.append(Envelope.model_validate_json(message.body).payload())
    assert [(r.migration_id, r.step, r.reason) for r in reports] == [
        (claim.migration_id, "sandbox", "disk on fire")]


async def test_a_relay_whose_clock_runs_behind_still_publishes_at_once(
    settings, databases, broker, sessions_for, channel, monkeypatch
):
    """Rows are stamped by the database, so 'due' is the database's clock, never the relay's."""

    class HourBehind(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) - timedelta(hours=1)

    monkeypatch.setattr("shared.relay.datetime", HourBehind, raising=False)
    queue = await watch(channel, broker, "UserLoggedIn.v1")
    sessions = sessions_for("auth")
    async with sessions() as session, session.begin():
        envelope = await events_out.add(session, outbox, logged_in(), "/test")

    publisher = Publisher(settings.amqp_url, broker)
    await Relay(sessions, outbox, publisher).drain()
    await publisher.close()
    assert (await next_message(queue, str(envelope.id))).message_id == str(envelope.id)
