"""A PostgreSQL and a RabbitMQ of the test's own, which it may stop and restart at will.

The machine's shared servers (5432, 5672) serve other people's tests at the same time, so a
fault test never touches them: it starts its own servers on free loopback ports, in a temporary
folder, as the ``postgres`` and ``rabbitmq`` OS users, and removes everything when it ends. The
RabbitMQ node has its own Erlang cookie (its own ``HOME``), so no command here can even reach
the shared node. Restarting keeps the data folders, so durable queues and rows survive it.
"""

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class ServerError(RuntimeError):
    """A private server did not start or stop; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(port: int, up: bool, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_answers(port) == up:
            return True
        time.sleep(0.1)
    return False


def _owned_tempdir(prefix: str, user: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    shutil.chown(folder, user, user)
    return folder


def _tail(path: Path, lines: int = 30) -> str:
    files = sorted(path.glob("*.log")) if path.is_dir() else [path]
    text = "\n".join(f.read_text(errors="replace") for f in files if f.exists())
    return "\n".join(text.splitlines()[-lines:])


def _run_as(user: str, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", "env", *_pairs(env or {}), *argv],
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def _pairs(env: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in env.items()]


class PrivatePostgres:
    """One PostgreSQL cluster on a free port with trust auth, owned by this object."""

    def __init__(self) -> None:
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                          key=lambda p: int(Path(p).parent.name))
        if not versions:
            raise ServerError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = Path(versions[-1])
        self.port = free_port()
        self.root = _owned_tempdir("gm-pg-", "postgres")
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return _run_as("postgres", [str(self.bin / "pg_ctl"), "-D", str(self.data), *args])

    def init(self) -> None:
        made = _run_as("postgres", [str(self.bin / "initdb"), "-D", str(self.data), "-A",
                                    "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        if made.returncode != 0:
            raise ServerError(f"initdb failed: {made.stderr}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=300 -c fsync=off -c synchronous_commit=off")
        started = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", options)
        if started.returncode != 0 or not _wait_port(self.port, True, 30):
            raise ServerError(f"PostgreSQL did not start: {started.stderr}\n{_tail(self.log)}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` is as abrupt as a crash (recovery runs on start)."""
        stopped = self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        if stopped.returncode != 0 and self.running:
            raise ServerError(f"PostgreSQL did not stop: {stopped.stderr}")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRabbit:
    """One RabbitMQ node (``gmfault<random>@localhost``) on free ports, owned by this object."""

    def __init__(self) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise ServerError(f"no RabbitMQ scripts in {RABBITMQ_BIN}")
        self.node = f"gmfault{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.root = _owned_tempdir("gm-mq-", "rabbitmq")
        for folder in ("mnesia", "log", "home"):
            (self.root / folder).mkdir()
        (self.root / "enabled_plugins").write_text("")
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.root)], check=True)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.root / "beam.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run_as("rabbitmq", [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
                       {"HOME": self.env["HOME"], "ERL_EPMD_ADDRESS": "127.0.0.1"}, timeout)

    def start(self) -> None:
        started = _run_as("rabbitmq", [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
                          self.env)
        if started.returncode != 0:
            raise ServerError(f"RabbitMQ did not start: {started.stderr}")
        # ``-detached`` returns before the node registers with epmd, and ``await_startup``
        # gives up at once on a node it cannot see yet: ask again until it answers.
        deadline = time.monotonic() + 90
        while True:
            awaited = self._ctl("await_startup", "--timeout", "90")
            if awaited.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if awaited.returncode != 0 or not _wait_port(self.port, True, 30):
            raise ServerError(f"RabbitMQ did not start: {awaited.stdout}{awaited.stderr}\n"
                              f"{_tail(self.root / 'log')}")

    def stop(self) -> None:
        stopped = self._ctl("stop", timeout=90)
        if stopped.returncode != 0 and self._pid() is not None:
            raise ServerError(f"RabbitMQ did not stop: {stopped.stdout}{stopped.stderr}")
        _wait_port(self.port, False, 30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _pid(self) -> int | None:
        try:
            pid = int((self.root / "beam.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Stop the node (by its own pid if it will not stop) and delete its folder."""
        if self._pid() is not None:
            with contextlib.suppress(Exception):
                self.stop()
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def rabbitmq() -> Iterator[PrivateRabbit]:
    server = PrivateRabbit()
    try:
        server.start()
        yield server
    finally:
        server.remove()
