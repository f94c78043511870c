"""sandbox's worker on real folders and a real database: the move, its reruns, and its events."""

import asyncio
import json
import uuid

import aio_pika
import pytest
from sqlalchemy import select

from services.sandbox import worker
from services.sandbox.api import PREFIX, build
from services.sandbox.filesystem import Filesystem
from services.sandbox.models import outbox
from shared.consuming import Consumer, Permanent
from shared.events import Envelope, UserLoggedIn
from shared.tokens import StaticKeys
from tests.integration.apps import client_for
from tests.unit.test_sandbox_move import GUEST, USER, Crash, FailingFilesystem, tree, write

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(sessions_for):
    return sessions_for("sandbox")


@pytest.fixture
def root(settings):
    return settings.sandbox_root


def logged_in(guest_id=None, user_id=None) -> Envelope:
    event = UserLoggedIn(migration_id=uuid.uuid4(), user_id=user_id or uuid.uuid4(),
                         guest_id=guest_id or uuid.uuid4())
    return Envelope.wrap(event, "/services/auth")


def ids(envelope: Envelope) -> tuple[str, str]:
    return envelope.data["guest_id"], envelope.data["user_id"]


async def run(sessions, root, envelope: Envelope, fs: Filesystem | None = None) -> None:
    await worker.make_handler(sessions, root, fs)(envelope, envelope.payload())


async def published(sessions, envelope: Envelope) -> list[dict]:
    async with sessions() as session:
        rows = (await session.execute(
            select(outbox.c.envelope).where(outbox.c.routing_key == "SandboxMigrated.v1")
        )).scalars().all()
    return [row["data"] for row in rows if row["subject"] == envelope.subject]


def prepare(root, envelope: Envelope) -> None:
    guest, user = ids(envelope)
    write(root / "users" / user, USER)
    write(root / "guests" / guest, GUEST)


def expected(envelope: Envelope) -> dict[str, str]:
    guest, _user = ids(envelope)
    files = {**USER, **GUEST, f"outputs/report (from guest {guest[:8]}).csv": "GUEST"}
    files["outputs/report.csv"] = "USER"
    return files


def files_of(root, user: str) -> dict[str, str]:
    return {rel: v for rel, v in tree(root / "users" / user).items() if not rel.endswith("/")}


EXPECTED_COUNTS = {"files": 5, "folders": 3, "renamed": 1, "links_skipped": 0,
                   "bytes": sum(len(v) for v in GUEST.values())}


def assert_counts(event: dict) -> None:
    assert {key: event[key] for key in EXPECTED_COUNTS} == EXPECTED_COUNTS
    assert sorted(event["directories"]) == ["outputs", "sandbox", "uploads"]


async def test_c01_the_guest_folders_are_merged_and_a_second_delivery_changes_nothing(
    sessions, root
):
    envelope = logged_in()
    prepare(root, envelope)
    guest, user = ids(envelope)
    await run(sessions, root, envelope)
    assert files_of(root, user) == expected(envelope)
    assert not (root / "users" / user / "uploads" / "uploads").exists()
    assert not (root / "guests" / guest).exists()
    events = await published(sessions, envelope)
    assert len(events) == 1
    assert_counts(events[0])

    await run(sessions, root, envelope)
    assert files_of(root, user) == expected(envelope)
    assert len(await published(sessions, envelope)) == 1


@pytest.mark.parametrize(("fail", "renameat2"), [
    ({"rename": 1}, True), ({"rename": 2}, True), ({"rename": 4}, True), ({"rmdir": 1}, True),
    ({"link": 3}, False), ({"unlink": 2}, False),
], ids=str)
async def test_c05_a_worker_that_crashed_mid_move_reruns_to_whole_counts_and_one_event(
    sessions, root, fail, renameat2
):
    envelope = logged_in()
    prepare(root, envelope)
    _guest, user = ids(envelope)
    with pytest.raises(Crash):
        await run(sessions, root, envelope, FailingFilesystem(fail, use_renameat2=renameat2))
    assert await published(sessions, envelope) == []
    await run(sessions, root, envelope)
    await run(sessions, root, envelope)
    assert files_of(root, user) == expected(envelope)
    events = await published(sessions, envelope)
    assert len(events) == 1
    assert_counts(events[0])


async def test_c02_a_copy_failing_across_filesystems_is_not_reported_and_the_rerun_completes(
    sessions, root
):
    envelope = logged_in()
    prepare(root, envelope)
    guest, user = ids(envelope)
    across = FailingFilesystem({"copy": 2}, devices=(root / "guests", root / "users"))
    with pytest.raises(Crash):
        await run(sessions, root, envelope, across)
    assert await published(sessions, envelope) == []

    await run(sessions, root, envelope)
    assert files_of(root, user) == expected(envelope)
    assert not any(p.name.startswith(".gm-") for p in (root / "users" / user).rglob("*"))
    assert not (root / "guests" / guest).exists()
    assert not any(p.name.startswith(".moving-") and guest in str(p)
                   for p in (root / "guests").iterdir())
    assert_counts((await published(sessions, envelope))[0])


async def test_c02_a_move_that_is_all_copies_reports_the_same_counts(sessions, root):
    envelope = logged_in()
    prepare(root, envelope)
    _guest, user = ids(envelope)
    await run(sessions, root, envelope,
              FailingFilesystem(devices=(root / "guests", root / "users")))
    assert files_of(root, user) == expected(envelope)
    assert_counts((await published(sessions, envelope))[0])


@pytest.mark.parametrize("bad", ["../../etc", "..", "a/b", "/abs", "%2e%2e%2f",
                                 f"{uuid.uuid4()} ", "", "x" * 10_000])
async def test_c03_an_event_whose_ids_are_paths_is_permanent_and_touches_nothing(
    sessions, root, bad
):
    before = sorted(str(p) for p in root.rglob("*")) if root.exists() else []
    handle = worker.make_handler(sessions, root)
    for fields in ({"guest_id": bad, "user_id": uuid.uuid4()},
                   {"guest_id": uuid.uuid4(), "user_id": bad}):
        event = UserLoggedIn.model_construct(migration_id=uuid.uuid4(), **fields)
        envelope = Envelope.wrap(UserLoggedIn(migration_id=event.migration_id,
                                              user_id=uuid.uuid4(), guest_id=uuid.uuid4()),
                                 "/services/auth")
        with pytest.raises(Permanent):
            await handle(envelope, event)
    assert (sorted(str(p) for p in root.rglob("*")) if root.exists() else []) == before


async def test_c03_an_event_with_a_path_for_an_id_goes_to_the_dead_letter_queue(
    sessions, root, settings, broker
):
    body = logged_in().model_dump(mode="json")
    body["data"]["guest_id"] = "../../etc"
    message_id = str(uuid.uuid4())
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(body).encode(), message_id=message_id),
            routing_key=broker.work(worker.GROUP))
        consumer = Consumer(settings.amqp_url, broker, worker.GROUP,
                            worker.make_handler(sessions, root))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        dead = await channel.get_queue(broker.dead_letters(worker.GROUP), ensure=False)
        found = None
        for _ in range(100):
            message = await dead.get(fail=False)
            if message is not None:
                await message.ack()
                if message.message_id == message_id:
                    found = message
                    break
            else:
                await asyncio.sleep(0.1)
        stop.set()
        await task
    assert found is not None
    assert "rejected" in found.headers["x-reason"]
    assert "guest_id" in found.headers["x-reason"]
    assert not (root.parent / "etc").exists()


async def test_c13_a_user_with_files_receives_two_guests_one_after_the_other(sessions, root):
    user_id = uuid.uuid4()
    user = str(user_id)
    write(root / "users" / user, {"uploads/r.csv": "USER", "uploads/docs/u.md": "U"})
    envelopes = [logged_in(user_id=user_id), logged_in(user_id=user_id)]
    for envelope in envelopes:
        guest, _ = ids(envelope)
        write(root / "guests" / guest, {"uploads/r.csv": guest, "uploads/docs/g.md": guest,
                                        f"outputs/{guest}.txt": "own"})
        await run(sessions, root, envelope)
    files = files_of(root, user)
    assert files["uploads/r.csv"] == "USER"
    assert files["uploads/docs/u.md"] == "U"
    for envelope, renamed in zip(envelopes, (1, 2), strict=True):
        guest, _ = ids(envelope)
        assert files[f"uploads/r (from guest {guest[:8]}).csv"] == guest
        assert files[f"outputs/{guest}.txt"] == "own"
        event = (await published(sessions, envelope))[0]
        assert (event["files"], event["renamed"]) == (3, renamed)
    second_guest = ids(envelopes[1])[0]
    assert files[f"uploads/docs/g (from guest {second_guest[:8]}).md"] == second_guest
    assert files["uploads/docs/g.md"] == ids(envelopes[0])[0]
    assert len(files) == 8


async def test_guest_uploads_racing_the_move_are_either_moved_or_refused(
    sessions, root, settings, signing_key, mint
):
    keys = StaticKeys(signing_key.verification_keys())
    mixed = False
    async with client_for(build(settings, keys)) as client:
        for delay in (0.01, 0.05, 0.1, 0.15, 0.02, 0.08):
            guest_id, user_id = uuid.uuid4(), uuid.uuid4()
            headers = {"Authorization": f"Bearer {mint('guest', guest_id)}"}
            first = await client.post(f"{PREFIX}/uploads", headers=headers,
                                      files={"file": ("first.txt", b"1")})
            assert first.status_code == 201
            envelope = logged_in(guest_id=guest_id, user_id=user_id)

            async def send(n: int, headers=headers):
                await asyncio.sleep(n * 0.003)
                return n, await client.post(f"{PREFIX}/uploads", headers=headers,
                                            files={"file": (f"f{n}.txt", b"x" * n)})

            async def move_soon(envelope=envelope, delay=delay):
                await asyncio.sleep(delay)
                await run(sessions, root, envelope)

            results = await asyncio.gather(move_soon(),
                                           *(send(n) for n in range(1, 30)))
            answers = dict(results[1:])
            assert {r.status_code for r in answers.values()} <= {201, 403}
            mixed = mixed or {r.status_code for r in answers.values()} == {201, 403}
            stored = set(files_of(root, str(user_id)))
            accepted = {f"uploads/f{n}.txt" for n, r in answers.items() if r.status_code == 201}
            assert stored == accepted | {"uploads/first.txt"}
            for response in answers.values():
                if response.status_code == 403:
                    assert response.json()["error"]["code"] == "guest_migrated"
            guest_dir = root / "guests" / str(guest_id)
            assert not guest_dir.exists() or not any(p.is_file() for p in guest_dir.rglob("*"))
            event = (await published(sessions, envelope))[0]
            assert event["files"] == len(stored)

        late = await client.delete(f"{PREFIX}/uploads/first.txt", headers=headers)
        assert late.status_code == 403
    assert mixed, "in at least one round some uploads must land before the move and some after"


async def test_a_migrated_guest_token_no_longer_lists_or_downloads_while_the_user_can(
    sessions, root, settings, signing_key, mint
):
    guest_id, user_id = uuid.uuid4(), uuid.uuid4()
    as_guest = {"Authorization": f"Bearer {mint('guest', guest_id)}"}
    as_user = {"Authorization": f"Bearer {mint('user', user_id)}"}
    async with client_for(build(settings, StaticKeys(signing_key.verification_keys()))) as client:
        stored = await client.post(f"{PREFIX}/outputs", headers=as_guest,
                                   files={"file": ("r.csv", b"1,2")})
        assert stored.status_code == 201
        assert (await client.get(f"{PREFIX}/outputs/r.csv", headers=as_guest)).content == b"1,2"

        await run(sessions, root, logged_in(guest_id=guest_id, user_id=user_id))

        for path in (f"{PREFIX}/outputs", f"{PREFIX}/outputs/r.csv"):
            refused = await client.get(path, headers=as_guest)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "guest_migrated"
        assert (await client.get(f"{PREFIX}/outputs/r.csv", headers=as_user)).content == b"1,2"
