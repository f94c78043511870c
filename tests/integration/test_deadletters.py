"""``tools.deadletters``: listing leaves dead letters in place; replay sends chosen ones back."""

import asyncio
import uuid

import aio_pika
import pytest

from shared import topology
from shared.consuming import Consumer, Permanent
from shared.events import Envelope, UserLoggedIn
from shared.publishing import Publisher
from tools import deadletters

pytestmark = pytest.mark.integration


@pytest.fixture
async def names(settings):
    """A namespace of its own, so other tests' dead letters never show up here."""
    names = topology.Names(f"gmt.dl.{uuid.uuid4().hex[:8]}")
    await topology.declare_all(settings.amqp_url, names)
    yield names
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await topology.delete(await connection.channel(), names)


async def dead_letter_two(settings, names) -> list[Envelope]:
    """Two events the sessions consumer refuses for good, dead-lettered the real way."""
    envelopes = [
        Envelope.wrap(UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(),
                                   guest_id=uuid.uuid4()), "/test")
        for _ in range(2)
    ]

    async def refuse(envelope, data):
        raise Permanent("owner id is not well-formed")

    stop = asyncio.Event()
    consumer = Consumer(settings.amqp_url, names, "sessions", refuse)
    task = asyncio.create_task(consumer.run(stop, drain_seconds=2))
    publisher = Publisher(settings.amqp_url, names)
    try:
        for envelope in envelopes:
            await publisher.publish(envelope)
        async with asyncio.timeout(10):
            while len(await deadletters.list_dead(settings.amqp_url, names, "sessions")) < 2:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
        await publisher.close()
    return envelopes


async def work_queue_messages(settings, names) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.work("sessions"))
        taken = []
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
        return taken


async def test_listing_shows_reason_type_and_migration_and_removes_nothing(settings, names):
    envelopes = await dead_letter_two(settings, names)

    first = await deadletters.list_dead(settings.amqp_url, names)
    second = await deadletters.list_dead(settings.amqp_url, names)

    assert sorted(d.message_id for d in first) == sorted(str(e.id) for e in envelopes)
    assert sorted(d.message_id for d in second) == sorted(d.message_id for d in first)
    by_id = {d.message_id: d for d in first}
    for envelope in envelopes:
        letter = by_id[str(envelope.id)]
        assert letter.group == "sessions"
        assert "not well-formed" in letter.reason
        assert letter.type == envelope.type
        assert letter.migration_id == envelope.subject
    assert "not well-formed" in deadletters.table(first)


async def test_replay_sends_only_the_chosen_message_back_with_its_retry_count_reset(
    settings, names
):
    chosen, left = await dead_letter_two(settings, names)

    replayed = await deadletters.replay(settings.amqp_url, names, [str(chosen.id)])

    assert replayed == [str(chosen.id)]
    remaining = await deadletters.list_dead(settings.amqp_url, names)
    assert [d.message_id for d in remaining] == [str(left.id)]
    back = await work_queue_messages(settings, names)
    assert [m.message_id for m in back] == [str(chosen.id)]
    assert Envelope.model_validate_json(back[0].body).id == chosen.id
    assert not {"x-retries", "x-reason", "x-death"} & set(back[0].headers)


async def test_replaying_an_unknown_id_changes_nothing(settings, names):
    envelopes = await dead_letter_two(settings, names)

    assert await deadletters.replay(settings.amqp_url, names, [str(uuid.uuid4())]) == []
    remaining = await deadletters.list_dead(settings.amqp_url, names)
    assert sorted(d.message_id for d in remaining) == sorted(str(e.id) for e in envelopes)
