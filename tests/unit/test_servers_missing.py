"""C11: without servers and without Docker, tests fail saying what to start; never skip."""

import os
import socket
import subprocess
import sys

from shared.settings import PROJECT_ROOT


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pytest_run(*args: str) -> subprocess.CompletedProcess:
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GM_")}
    env.update({
        "GM_POSTGRES_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}",
        "GM_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
        "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
    })
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_suite_imports_without_a_docker_engine():
    result = pytest_run("--collect-only", "-q", "tests/integration", "tests/e2e")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "errors during collection" not in result.stdout.lower()
    assert "tests collected" in result.stdout or "collected" in result.stdout


def test_an_integration_test_fails_and_names_what_to_start_when_no_server_answers():
    result = pytest_run("-q", "tests/integration/test_auth_api.py", "-k", "duplicate_signup")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "skipped" not in output
    assert "not reachable" in output and "no Docker engine" in output
    assert "start PostgreSQL and RabbitMQ" in output
