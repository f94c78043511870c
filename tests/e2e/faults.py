"""The fault run: many migrations in flight while processes, the broker and the database die.

``run(migrations)`` starts a private PostgreSQL and RabbitMQ (``private_servers``), every
process of the Procfile on them, and then:

1. guests work through the gateway: each makes two sessions (a thread in each) and two files
   in two areas;
2. RabbitMQ is stopped and every guest signs up, so every migration is in flight (stored in
   auth's outbox) when the faults start; RabbitMQ then comes back: that is its one restart;
3. while the migrations drain, at random moments: a random worker or relay is killed with
   SIGKILL and restarted, PostgreSQL is restarted once, and some ``UserLoggedIn`` events are
   published a second time with their original envelope id;
4. when the system is quiet it checks, as each user through the API, that exactly the
   guest's sessions, threads and files are the user's, once, whole; that the guest token
   reads nothing; that observers saw one ``MigrationCompleted`` id per migration on the
   stream; and that every dead-letter queue is empty.

The load generator retries its own HTTP calls with backoff, as a real client would; a signup
whose answer was lost is completed by logging in as the same user, never by a new signup.
``python -m tests.e2e.faults --migrations N`` prints the table (``make soak N=1000``).
"""

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from shared import schema, topology
from shared.db import asyncpg_dsn
from shared.events import Envelope, MigrationCompleted, UserLoggedIn
from shared.publishing import Publisher
from shared.settings import PROJECT_ROOT, Settings
from tests.e2e import private_servers
from tests.e2e.system import System

SERVICES = ("auth", "sessions", "sandbox")
KILLABLE = ("auth-listener", "auth-relay", "sessions-worker", "sessions-relay",
            "sandbox-worker", "sandbox-relay")
AREAS = ("uploads", "sandbox", "outputs")
PASSWORD = "fault-run-password"


@dataclass
class Plan:
    """One migration: what the guest made, and who it should belong to afterwards."""

    index: int
    guest_token: str = ""
    titles: list[str] = field(default_factory=list)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    email: str = ""
    user_token: str = ""
    migration_id: str = ""


@dataclass
class Report:
    migrations: int
    faults: Counter = field(default_factory=Counter)
    completed: int = 0
    lost: int = 0
    duplicated_effects: int = 0
    in_flight_at_broker_restart: int = 0
    in_flight_at_database_restart: int = 0
    faults_while_in_flight: int = 0
    backlog_seconds: float = 0.0
    drain_seconds: float = 0.0
    observed_completed: int = 0
    observed_raw_duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        rows = [(f"faults injected: {kind}", str(count)) for kind, count in
                sorted(self.faults.items())]
        rows += [
            ("migrations", str(self.migrations)),
            ("in flight at the RabbitMQ restart", str(self.in_flight_at_broker_restart)),
            ("in flight at the PostgreSQL restart", str(self.in_flight_at_database_restart)),
            ("faults injected while migrations were in flight",
             f"{self.faults_while_in_flight} of {sum(self.faults.values())}"),
            ("completed", str(self.completed)),
            ("lost", str(self.lost)),
            ("duplicated effects", str(self.duplicated_effects)),
            ("MigrationCompleted ids seen by observers", str(self.observed_completed)),
            ("  raw duplicate deliveries of those", str(self.observed_raw_duplicates)),
            ("dead letters", str(sum(self.dead_letters.values()))),
            ("time to drain after the last fault", f"{self.drain_seconds:.1f} s"),
            ("time from the broker's return to quiet", f"{self.backlog_seconds:.1f} s"),
            ("whole run", f"{self.seconds:.1f} s"),
            ("problems", str(len(self.problems))),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        lines += [f"  - {problem}" for problem in self.problems[:20]]
        return "\n".join(lines)


# -- the system on private servers -------------------------------------------------------------


@dataclass
class Private:
    postgres: private_servers.PrivatePostgres
    rabbitmq: private_servers.PrivateRabbit
    settings: Settings
    system: System


async def _prepare(settings: Settings) -> None:
    for service in SERVICES:
        url = settings.database_url(service)
        await schema.create_database(url)
        await asyncio.to_thread(schema.upgrade, service, url)
    await topology.declare_all(settings.amqp_url, topology.Names(settings.broker_namespace))


@contextlib.contextmanager
def private_system(work_dir: Path) -> Iterator[Private]:
    """Every process of the Procfile on a PostgreSQL and a RabbitMQ of this run's own."""
    with private_servers.postgres() as pg, private_servers.rabbitmq() as mq:
        settings = Settings(
            environment="test", postgres_url=pg.url, amqp_url=mq.url,
            database_prefix="gmf", broker_namespace="gmf",
            sandbox_root=work_dir / "sandbox", key_dir=work_dir / "keys",
        )
        asyncio.run(_prepare(settings))
        system = System(settings, work_dir / "logs")
        try:
            system.start_all()
            yield Private(pg, mq, settings, system)
        finally:
            system.stop_all()


# -- the load generator --------------------------------------------------------------------


class Client:
    """HTTP through the gateway, retried with backoff while servers restart."""

    RETRY_STATUS = {500, 502, 503, 504}

    def __init__(self, base_url: str, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency * 2,
                              max_keepalive_connections=concurrency)
        self.http = httpx.Client(base_url=base_url + "/api/v1", timeout=30, limits=limits)
        self.retries = Counter()

    def call(self, method: str, path: str, token: str | None = None, *, ok=(200, 201),
             patience: float = 120, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + patience
        delay = 0.2
        while True:
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
                if response.status_code not in self.RETRY_STATUS:
                    if ok and response.status_code not in ok:
                        raise AssertionError(f"{method} {path}: {response.status_code} "
                                             f"{response.text[:300]}")
                    return response
                failure = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                failure = repr(exc)
            self.retries[method] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} kept failing: {failure}")
            time.sleep(delay)
            delay = min(delay * 2, 3.0)

    def close(self) -> None:
        self.http.close()


def guest_works(client: Client, index: int, run: str) -> Plan:
    plan = Plan(index)
    plan.guest_token = client.call("POST", "/auth/guest").json()["guest_token"]
    for n in range(2):
        title = f"run {run} migration {index} session {n}"
        made = client.call("POST", "/sessions", plan.guest_token, json={"title": title})
        client.call("POST", f"/sessions/{made.json()['id']}/threads", plan.guest_token,
                    json={"title": f"thread of {title}"})
        plan.titles.append(title)
    for n, area in enumerate((AREAS[index % 3], AREAS[(index + 1) % 3])):
        name = f"m{index}-f{n}.txt"
        content = f"migration {index} file {n} {uuid.uuid4()}\n".encode()
        client.call("POST", f"/sandbox/{area}", plan.guest_token, files={"file": (name, content)})
        plan.files.setdefault(area, {})[name] = content
    return plan


def sign_up(client: Client, plan: Plan, run: str) -> None:
    """Sign up with the guest token; if the answer was lost, log in as that same user."""
    plan.email = f"fault-{run}-{plan.index}@example.test"
    body = {"email": plan.email, "password": PASSWORD, "guest_token": plan.guest_token}
    answer = client.call("POST", "/auth/signup", json=body, ok=(201, 409))
    if answer.status_code == 409:
        answer = client.call("POST", "/auth/login", json=body)
    plan.user_token = answer.json()["access_token"]
    plan.migration_id = answer.json()["migration"]["migration_id"]


# -- the fault injector --------------------------------------------------------------------


class Faults:
    """Injects faults and records what it did, each with how many migrations were in flight."""

    def __init__(self, private: Private, rng: random.Random) -> None:
        self.private = private
        self.rng = rng
        self.counts: Counter = Counter()
        self.last_at = time.monotonic()
        self.in_flight: dict[str, int] = {}
        self.duplicated: set[str] = set()
        self.while_in_flight = 0
        self.lock = threading.Lock()

    def _done(self, kind: str) -> None:
        in_flight = pending_migrations(self.private.settings)
        with self.lock:
            self.counts[kind] += 1
            self.last_at = time.monotonic()
            self.while_in_flight += int(in_flight > 0)

    def kill_one(self) -> None:
        name = self.rng.choice(KILLABLE)
        self.private.system.restart(name)
        self._done(f"SIGKILL {name}")

    def stop_broker(self) -> None:
        self.private.rabbitmq.stop()

    def start_broker(self) -> None:
        self.in_flight["broker"] = pending_migrations(self.private.settings)
        self.private.rabbitmq.start()
        self._done("RabbitMQ restart")

    def restart_database(self) -> None:
        self.in_flight["database"] = pending_migrations(self.private.settings)
        self.private.postgres.restart()
        self._done("PostgreSQL restart")

    def deliver_twice(self) -> None:
        """Publish a few stored ``UserLoggedIn`` events again, with their original ids."""
        how_many = self.rng.randint(1, 5)
        envelopes = patiently(lambda: asyncio.run(_stored_logins(self.private.settings,
                                                                  how_many)))
        patiently(lambda: asyncio.run(_publish(self.private.settings, envelopes)))
        self.duplicated.update(str(e.id) for e in envelopes)
        self._done("UserLoggedIn delivered twice")

    def keep_killing(self, stop: threading.Event, pause: tuple[float, float]) -> None:
        while not stop.wait(self.rng.uniform(*pause)):
            self.kill_one()


async def _connect_auth(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(settings.database_url("auth")), timeout=10)


def patiently(call, seconds: float = 60.0):
    """The harness's own reads and publishes, retried while a server is coming back."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def pending_migrations(settings: Settings) -> int:
    async def count() -> int:
        connection = await _connect_auth(settings)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM migrations WHERE status = 'pending'")
        finally:
            await connection.close()

    return patiently(lambda: asyncio.run(count()))


async def _stored_logins(settings: Settings, how_many: int) -> list[Envelope]:
    connection = await _connect_auth(settings)
    try:
        rows = await connection.fetch(
            "SELECT envelope::text AS envelope FROM outbox WHERE routing_key = $1 "
            "ORDER BY random() LIMIT $2", UserLoggedIn.routing_key(), how_many)
    finally:
        await connection.close()
    return [Envelope.model_validate_json(row["envelope"]) for row in rows]


async def _publish(settings: Settings, envelopes: list[Envelope]) -> None:
    publisher = Publisher(settings.amqp_url, topology.Names(settings.broker_namespace))
    try:
        for envelope in envelopes:
            await publisher.publish(envelope)
    finally:
        await publisher.close()


# -- waiting and checking ------------------------------------------------------------------


async def _queue_depths(settings: Settings) -> dict[str, int]:
    names = topology.Names(settings.broker_namespace)
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names.all_queues():
            if name == names.observers:
                continue
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = queue.declaration_result.message_count
        return depths


async def _quiet(settings: Settings) -> bool:
    """Every migration ended, every stored event sent, and every work queue empty."""
    connection = await _connect_auth(settings)
    try:
        pending = await connection.fetchval(
            "SELECT count(*) FROM migrations WHERE status = 'pending'")
        unsent = 0
        for service in SERVICES:
            other = await asyncpg.connect(asyncpg_dsn(settings.database_url(service)))
            try:
                unsent += await other.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL")
            finally:
                await other.close()
    finally:
        await connection.close()
    if pending or unsent:
        return False
    return not any(count for name, count in (await _queue_depths(settings)).items()
                   if not name.endswith(".dead"))


def wait_until_quiet(settings: Settings, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if asyncio.run(_quiet(settings)):
                return True
        except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError):
            pass
        time.sleep(0.5)
    return False


@dataclass
class Checked:
    completed: bool
    doubled: bool
    problems: list[str]


def check_user(client: Client, plan: Plan) -> Checked:
    """One migration's result as its user sees it, through the API."""
    problems: list[str] = []
    doubled = False
    status = client.call("GET", f"/auth/migrations/{plan.migration_id}", plan.user_token).json()
    if status["status"] != "completed":
        problems.append(f"migration {plan.index} is {status['status']}: {status.get('failure')}")
        return Checked(False, False, problems)
    summary = status["summary"]
    expected = {"sessions_migrated": 2, "threads_migrated": 2, "files_migrated": 2}
    for key, value in expected.items():
        if summary.get(key) != value:
            problems.append(f"migration {plan.index}: summary {key}={summary.get(key)}")

    sessions = client.call("GET", "/sessions?limit=100", plan.user_token).json()["items"]
    titles = sorted(s["title"] for s in sessions)
    if titles != sorted(plan.titles):
        doubled |= len(titles) > len(plan.titles)
        problems.append(f"migration {plan.index}: user has sessions {titles}")
    for session in sessions:
        threads = client.call("GET", f"/sessions/{session['id']}/threads",
                              plan.user_token).json()["items"]
        if [t["title"] for t in threads] != [f"thread of {session['title']}"]:
            doubled |= len(threads) > 1
            problems.append(f"migration {plan.index}: {session['title']!r} has {threads}")

    for area in AREAS:
        listing = client.call("GET", f"/sandbox/{area}", plan.user_token).json()["items"]
        wanted = plan.files.get(area, {})
        paths = sorted(item["path"] for item in listing)
        if paths != sorted(wanted):
            doubled |= len(paths) > len(wanted)
            problems.append(f"migration {plan.index}: user's {area} holds {paths}")
        for name, content in wanted.items():
            if name in paths:
                body = client.call("GET", f"/sandbox/{area}/{name}", plan.user_token).content
                if body != content:
                    problems.append(f"migration {plan.index}: {area}/{name} is not whole")

    for path in ("/sessions", "/sandbox/uploads"):
        answer = client.call("GET", path, plan.guest_token, ok=None)
        if answer.status_code == 200 and answer.json()["items"]:
            problems.append(f"migration {plan.index}: the guest still reads {path}")
    return Checked(True, doubled, problems)


async def observed_completions(settings: Settings, idle: float = 3.0) -> dict[str, list[str]]:
    """Every ``MigrationCompleted`` on the observers' stream from its first offset, by subject:
    the list of event ids delivered (a repeated id is a raw duplicate delivery)."""
    names = topology.Names(settings.broker_namespace)
    seen: dict[str, list[str]] = {}
    arrived = asyncio.Event()
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        stream = await channel.get_queue(names.observers, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.type == MigrationCompleted.event_type():
                envelope = Envelope.model_validate_json(message.body)
                seen.setdefault(envelope.subject, []).append(str(envelope.id))
            arrived.set()
            await message.ack()

        await stream.consume(on_message, arguments={"x-stream-offset": "first"})
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), idle)
            except TimeoutError:
                return seen


async def dead_letter_counts(settings: Settings) -> dict[str, int]:
    names = topology.Names(settings.broker_namespace)
    depths = await _queue_depths(settings)
    return {group: depths[names.dead_letters(group)] for group in topology.GROUPS}


# -- the run -------------------------------------------------------------------------------


def _in_parallel(function, items, concurrency: int) -> list:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(function, items))


def run(migrations: int, *, seed: int | None = None, concurrency: int = 12,
        drain_timeout: float = 300.0, keep_logs: Path = PROJECT_ROOT / "var" / "faults",
        ) -> Report:
    """Run ``migrations`` migrations through the faults; the report says what held."""
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:6]
    report = Report(migrations)
    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="gm-faults-"))
    try:
        with private_system(work_dir) as private:
            client = Client(private.system.base_url, concurrency)
            try:
                _drive(private, client, rng, run_id, report, concurrency, drain_timeout)
            finally:
                client.close()
    except Exception as exc:
        report.problems.append(f"the run broke off: {exc!r}")
    finally:
        if not report.ok and (work_dir / "logs").exists():
            kept = keep_logs / run_id
            shutil.copytree(work_dir / "logs", kept, dirs_exist_ok=True)
            report.problems.append(f"process logs kept in {kept}")
        shutil.rmtree(work_dir, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _drive(private: Private, client: Client, rng: random.Random, run_id: str,
           report: Report, concurrency: int, drain_timeout: float) -> None:
    plans = _in_parallel(lambda i: guest_works(client, i, run_id), range(report.migrations),
                         concurrency)
    faults = Faults(private, rng)

    # Every signup goes in while the broker is away, so all migrations are in flight (stored
    # in auth's outbox, nothing yet delivered) when the broker comes back and the faults start.
    faults.stop_broker()
    stop_killing = threading.Event()
    killer = threading.Thread(target=faults.keep_killing, args=(stop_killing, (1.0, 4.0)))
    killer.start()
    try:
        _in_parallel(lambda plan: sign_up(client, plan, run_id), plans, concurrency)
    finally:
        stop_killing.set()
        killer.join()
    faults.start_broker()
    broker_back = time.monotonic()

    during = ["database"] + ["kill"] * max(6, report.migrations // 25)
    during += ["twice"] * max(3, report.migrations // 60)
    rng.shuffle(during)
    actions = {"database": faults.restart_database, "kill": faults.kill_one,
               "twice": faults.deliver_twice}
    for kind in during:
        time.sleep(rng.uniform(0.1, 1.0))
        actions[kind]()

    report.faults = faults.counts
    report.in_flight_at_broker_restart = faults.in_flight.get("broker", 0)
    report.in_flight_at_database_restart = faults.in_flight.get("database", 0)
    report.faults_while_in_flight = faults.while_in_flight
    quiet = wait_until_quiet(private.settings, drain_timeout)
    report.drain_seconds = time.monotonic() - faults.last_at
    report.backlog_seconds = time.monotonic() - broker_back
    if not quiet:
        report.problems.append(f"not quiet {drain_timeout:.0f} s after the last fault")
    private.system.wait_ready(list(private.system.commands), timeout=60)
    _check(private, client, plans, report, concurrency)


def _check(private: Private, client: Client, plans: list[Plan], report: Report,
           concurrency: int) -> None:
    for checked in _in_parallel(lambda plan: check_user(client, plan), plans, concurrency):
        report.problems.extend(checked.problems)
        report.completed += int(checked.completed)
        report.duplicated_effects += int(checked.doubled)
        report.lost += int(bool(checked.problems) and not checked.doubled)

    observed = asyncio.run(observed_completions(private.settings))
    report.observed_completed = sum(len(set(ids)) for ids in observed.values())
    report.observed_raw_duplicates = sum(len(ids) - len(set(ids)) for ids in observed.values())
    for plan in plans:
        distinct = set(observed.get(plan.migration_id, []))
        if len(distinct) != 1:
            report.problems.append(f"migration {plan.index}: observers saw {len(distinct)} "
                                   "distinct MigrationCompleted events")
    report.dead_letters = asyncio.run(dead_letter_counts(private.settings))
    for group, count in report.dead_letters.items():
        if count:
            report.problems.append(f"{count} dead letter(s) in {group}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    print(f"fault run: {args.migrations} migrations on a private PostgreSQL and RabbitMQ")
    report = run(args.migrations, seed=args.seed, concurrency=args.concurrency,
                 drain_timeout=args.drain_timeout)
    print(report.table())
    print("all guarantees held" if report.ok else "GUARANTEES BROKEN")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
