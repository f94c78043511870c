"""Every process of the product, started as ``make run`` starts them, for end-to-end tests.

The commands come from ``deploy/Procfile`` itself, so the tests run what production runs. Each
run gets free ports, its own databases, broker namespace, sandbox root and key folder, and each
process's output goes to a log file that a failing test prints.
"""

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.settings import PROJECT_ROOT, Settings

PROCFILE = PROJECT_ROOT / "deploy" / "Procfile"
HEALTH_VARIABLE = re.compile(r"\$\{(GM_[A-Z_]+_HEALTH_PORT):-\d+\}")


def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class System:
    settings: Settings
    log_dir: Path
    commands: dict[str, str] = field(default_factory=procfile)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("gateway", "auth", "sessions", "sandbox"):
            self.ports[name] = free_port()
        for command in self.commands.values():
            for variable in HEALTH_VARIABLE.findall(command):
                self.ports[variable] = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("GM_")}
        env.update({
            "GM_ENVIRONMENT": "test",
            "GM_POSTGRES_URL": s.postgres_url,
            "GM_DATABASE_PREFIX": s.database_prefix,
            "GM_AMQP_URL": s.amqp_url,
            "GM_BROKER_NAMESPACE": s.broker_namespace,
            "GM_SANDBOX_ROOT": str(s.sandbox_root),
            "GM_KEY_DIR": str(s.key_dir),
            "GM_GATEWAY_PORT": str(self.ports["gateway"]),
            "GM_AUTH_PORT": str(self.ports["auth"]),
            "GM_SESSIONS_PORT": str(self.ports["sessions"]),
            "GM_SANDBOX_PORT": str(self.ports["sandbox"]),
            "GM_AUTH_URL": f"http://127.0.0.1:{self.ports['auth']}",
            "GM_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({k: str(v) for k, v in self.ports.items() if k.startswith("GM_")})
        return env

    def ready_url(self, name: str) -> str:
        service = name.split("-")[0]
        if name == "gateway":
            return f"http://127.0.0.1:{self.ports['gateway']}/health"
        if name.endswith("-api"):
            return f"http://127.0.0.1:{self.ports[service]}/ready"
        variable = HEALTH_VARIABLE.search(self.commands[name]).group(1)
        return f"http://127.0.0.1:{self.ports[variable]}/ready"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def start(self, name: str) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
        # ``env`` takes the Procfile's leading ``VAR=value`` words; a bare ``exec`` would try
        # to run the first of them as the program.
        self.processes[name] = subprocess.Popen(
            ["sh", "-c", f"exec env {self.commands[name]}"], cwd=PROJECT_ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def start_all(self, timeout: float = 60.0) -> None:
        for name in self.commands:
            self.start(name)
        self.wait_ready(list(self.commands), timeout)

    def wait_ready(self, names: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        with httpx.Client(timeout=2) as client:
            while waiting:
                name = waiting[0]
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n"
                                       f"{self.tail(name)}")
                try:
                    if client.get(self.ready_url(name)).status_code == 200:
                        waiting.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s:\n{self.tail(name)}")
                time.sleep(0.2)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self.start(name)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM everything, as Ctrl-C on ``make run`` does; returns each exit code."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = process.wait()
        return codes

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no output)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return "\n\n".join(f"== {name} ==\n{self.tail(name)}" for name in self.commands)
