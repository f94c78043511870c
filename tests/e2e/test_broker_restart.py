"""C04: consumers come back after RabbitMQ restarts, and a worker without one says so.

Runs every process on a private PostgreSQL and RabbitMQ (the shared ones are never touched).
"""

import asyncio
import time

import aio_pika
import httpx
import pytest

from shared import topology
from tests.e2e import faults

pytestmark = pytest.mark.e2e

WORKERS = ("auth-listener", "sessions-worker", "sandbox-worker")


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    with faults.private_system(tmp_path_factory.mktemp("c04")) as running:
        yield running


def ready_codes(private) -> dict[str, int | None]:
    codes = {}
    with httpx.Client(timeout=2) as client:
        for name in WORKERS:
            try:
                codes[name] = client.get(private.system.ready_url(name)).status_code
            except httpx.HTTPError:
                codes[name] = None
    return codes


def wait_for_codes(private, wanted: dict[str, int], seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        codes = ready_codes(private)
        if all(codes[name] == code for name, code in wanted.items()):
            return codes
        if time.monotonic() > deadline:
            return codes
        time.sleep(0.2)


async def consumer_counts(settings) -> dict[str, int]:
    names = topology.Names(settings.broker_namespace)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        counts = {}
        for group in topology.GROUPS:
            queue = await channel.declare_queue(names.work(group), passive=True)
            counts[group] = queue.declaration_result.consumer_count
        return counts


def test_workers_report_not_ready_while_the_broker_is_down_and_recover_after(private):
    assert set(wait_for_codes(private, dict.fromkeys(WORKERS, 200)).values()) == {200}

    private.rabbitmq.stop()
    try:
        down = wait_for_codes(private, dict.fromkeys(WORKERS, 503))
    finally:
        private.rabbitmq.start()
    assert down == dict.fromkeys(WORKERS, 503), private.system.logs()

    up = wait_for_codes(private, dict.fromkeys(WORKERS, 200), seconds=60)
    assert up == dict.fromkeys(WORKERS, 200), private.system.logs()
    assert asyncio.run(consumer_counts(private.settings)) == dict.fromkeys(topology.GROUPS, 1)


def test_a_guest_logged_in_after_the_broker_restarted_is_migrated(private):
    private.rabbitmq.restart()
    wait_for_codes(private, dict.fromkeys(WORKERS, 200), seconds=60)
    client = faults.Client(private.system.base_url, 2)
    try:
        plan = faults.guest_works(client, 0, "c04")
        faults.sign_up(client, plan, "c04")
        deadline = time.monotonic() + 60
        while faults.pending_migrations(private.settings) and time.monotonic() < deadline:
            time.sleep(0.2)
        checked = faults.check_user(client, plan)
    finally:
        client.close()
    assert checked.completed and checked.problems == [], private.system.logs()


def test_a_worker_whose_consumer_was_cancelled_by_the_broker_is_not_ready(private):
    """The connection stays up but the broker drops the consumer (its queue went away)."""

    async def delete_sessions_queue() -> None:
        connection = await aio_pika.connect(private.settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            names = topology.Names(private.settings.broker_namespace)
            await channel.queue_delete(names.work("sessions"))

    asyncio.run(delete_sessions_queue())
    gone = wait_for_codes(private, {"sessions-worker": 503})
    asyncio.run(topology.declare_all(private.settings.amqp_url,
                                     topology.Names(private.settings.broker_namespace)))
    back = wait_for_codes(private, {"sessions-worker": 200})
    assert gone["sessions-worker"] == 503, private.system.logs()
    assert back["sessions-worker"] == 200, private.system.logs()
