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


def test_the_gateway_passes_paths_on_exactly_as_the_client_encoded_them(system):
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        token = client.post("/api/v1/auth/guest").json()["guest_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for name, content in (("100%.txt", b"PERCENT"), ("100%25.txt", b"PERCENT-25")):
            stored = client.post("/api/v1/sandbox/uploads", headers=headers,
                                 files={"file": (name, content)})
            assert stored.status_code == 201, stored.text
        fetched = client.get("/api/v1/sandbox/uploads/100%2525.txt", headers=headers)
        assert fetched.content == b"PERCENT-25"
        assert client.delete("/api/v1/sandbox/uploads/100%2525.txt",
                             headers=headers).status_code == 204
        names = [i["path"] for i in client.get("/api/v1/sandbox/uploads",
                                               headers=headers).json()["items"]]
        assert names == ["100%.txt"]


@pytest.mark.parametrize("path", ["/api/v1/sessions/%00", "/api/v1/sandbox/uploads/%00",
                                  "/api/v1/auth/migrations/%00", "/api/v1/sandbox/%00"])
def test_control_characters_in_a_path_are_a_clear_4xx_through_the_gateway(system, path):
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        token = client.post("/api/v1/auth/guest").json()["guest_token"]
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert 400 <= response.status_code < 500
    assert "code" in response.json()["error"]


def test_a_trailing_slash_never_redirects_the_browser_to_a_service_port(system):
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        response = client.get("/api/v1/sessions/")
    assert response.status_code == 404
    assert "location" not in response.headers


def test_an_oversized_json_body_is_refused_before_it_is_parsed(system):
    with httpx.Client(base_url=system.base_url, timeout=30) as client:
        token = client.post("/api/v1/auth/guest").json()["guest_token"]
        huge = b'{"title": "' + b"x" * 2_000_000 + b'"}'
        declared = client.post("/api/v1/sessions", content=huge, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})

        def chunks():
            yield huge

        streamed = client.post("/api/v1/auth/login", content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "too_large"


def test_the_gateway_is_ready_when_every_service_is(system):
    with httpx.Client(base_url=system.base_url, timeout=10) as client:
        answer = client.get("/ready")
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"auth": True, "sessions": True, "sandbox": True}


STOPPED = {"api": "Application shutdown complete", "gateway": "Application shutdown complete",
           "worker": "worker stopped", "listener": "worker stopped", "relay": "relay stopped",
           "sweeper": "sweeper stopped"}


def test_every_process_stops_cleanly_on_sigterm(system):
    """As Ctrl-C on ``make run``: each finishes its shutdown and exits.

    uvicorn re-raises the signal once its shutdown is complete, so an API's exit status is
    "terminated by SIGTERM" after its clean-shutdown line; the workers and relays exit with 0.
    """
    codes = system.stop_all()
    for name, code in codes.items():
        assert code in (0, -signal.SIGTERM), f"{name} exited with {code}\n{system.logs()}"
        assert STOPPED[name.rsplit("-", 1)[-1]] in system.tail(name), system.tail(name)
