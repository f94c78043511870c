"""The whole flow through the gateway, with every process running as ``make run`` runs them."""

import signal

import httpx
import pytest

from tools import demo

pytestmark = pytest.mark.e2e


def test_a_guests_sessions_and_files_become_the_new_users(system, capsys):
    with httpx.Client(timeout=10) as client:
        run = demo.Demo(client, system.base_url)
        outcome = demo.run(run)
    assert run.failures == [], f"{run.failures}\n{system.logs()}"
    summary = outcome["summary"]
    assert summary["sessions_migrated"] == 3
    assert summary["threads_migrated"] == 3
    assert summary["files_migrated"] == 3
    assert summary["directories_migrated"] == 3


def test_a_bare_guest_id_is_refused_through_the_gateway(system):
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        guest = client.post("/api/v1/auth/guest").json()
        bare = client.get("/api/v1/sessions", headers={"X-Guest-Id": guest["guest_id"]})
        assert bare.status_code == 401
        assert bare.json()["error"]["code"] == "guest_token_required"
        unknown = client.get("/api/v1/nothing/here")
        assert unknown.status_code == 404


STOPPED = {"api": "Application shutdown complete", "gateway": "Application shutdown complete",
           "worker": "worker stopped", "listener": "worker stopped", "relay": "relay stopped"}


def test_every_process_stops_cleanly_on_sigterm(system):
    """As Ctrl-C on ``make run``: each finishes its shutdown and exits.

    uvicorn re-raises the signal once its shutdown is complete, so an API's exit status is
    "terminated by SIGTERM" after its clean-shutdown line; the workers and relays exit with 0.
    """
    codes = system.stop_all()
    for name, code in codes.items():
        assert code in (0, -signal.SIGTERM), f"{name} exited with {code}\n{system.logs()}"
        assert STOPPED[name.rsplit("-", 1)[-1]] in system.tail(name), system.tail(name)
