"""``make demo``: a guest's work becomes a new user's, checked step by step against `make run`.

A guest makes three sessions (a thread in each) and uploads a file into each area, signs up
with the guest token, and the demo polls the migration until it ends, showing each step. It
then checks, as the user, that the sessions and files are theirs, and that the guest token no
longer reads or writes them. Exits 1 if any check fails. Talks only to ``GM_DEMO_URL``
(the gateway, http://127.0.0.1:8000 by default).
"""

import os
import sys
import time
import uuid

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FILES = {"uploads": ("notes.txt", b"notes from the guest\n"),
         "sandbox": ("scratch.py", b"print('hello')\n"),
         "outputs": ("report.csv", b"a,b\n1,2\n")}


class Demo:
    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base = base_url.rstrip("/") + "/api/v1"
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, self.base + path, headers=headers, **kwargs)


def run(demo: Demo) -> dict:
    print("1. a guest works")
    guest = demo.call("POST", "/auth/guest").json()
    guest_token = guest["guest_token"]
    titles = [f"Plan {n}" for n in (1, 2, 3)]
    for title in titles:
        made = demo.call("POST", "/sessions", guest_token, json={"title": title})
        demo.check(made.status_code == 201, f"guest created session {title!r}")
        thread = demo.call("POST", f"/sessions/{made.json()['id']}/threads", guest_token,
                           json={"title": f"first thread of {title}"})
        demo.check(thread.status_code == 201, "  with a thread")
    for area, (name, content) in FILES.items():
        upload = demo.call("POST", f"/sandbox/{area}", guest_token,
                           files={"file": (name, content)})
        demo.check(upload.status_code == 201, f"guest uploaded {area}/{name}")

    print("2. the guest signs up")
    email = f"demo-{uuid.uuid4().hex[:8]}@example.test"
    started = time.monotonic()
    signup = demo.call("POST", "/auth/signup",
                       json={"email": email, "password": "demo-password", "guest_token":
                             guest_token})
    demo.check(signup.status_code == 201, f"signed up as {email}")
    user_token = signup.json()["access_token"]
    migration = signup.json()["migration"]
    print(f"   migration {migration['migration_id']} is {migration['status']}")

    print("3. the migration runs")
    status = poll(demo, migration["status_url"].removeprefix("/api/v1"), user_token)
    elapsed = time.monotonic() - started
    demo.check(status["status"] == "completed", f"migration {status['status']}")

    print("4. everything is the user's now")
    sessions = demo.call("GET", "/sessions?limit=100", user_token).json()["items"]
    demo.check(sorted(s["title"] for s in sessions) == titles, "the user has the 3 sessions")
    for session in sessions:
        threads = demo.call("GET", f"/sessions/{session['id']}/threads", user_token).json()
        demo.check(len(threads["items"]) == 1, f"  {session['title']!r} kept its thread")
    for area, (name, content) in FILES.items():
        listing = demo.call("GET", f"/sandbox/{area}", user_token).json()["items"]
        demo.check([item["path"] for item in listing] == [name], f"the user has {area}/{name}")
        body = demo.call("GET", f"/sandbox/{area}/{name}", user_token).content
        demo.check(body == content, f"  {area}/{name} is whole")

    print("5. the guest token no longer reads or writes")
    demo.check(demo.call("GET", "/sessions", guest_token).status_code == 403,
               "guest cannot list sessions")
    demo.check(demo.call("POST", "/sessions", guest_token, json={"title": "late"}).status_code
               == 403, "guest cannot create a session")
    demo.check(demo.call("GET", "/sandbox/uploads", guest_token).status_code == 403,
               "guest cannot list files")
    demo.check(demo.call("POST", "/sandbox/uploads", guest_token,
                         files={"file": ("late.txt", b"late")}).status_code == 403,
               "guest cannot upload")
    return {"summary": status.get("summary"), "seconds": elapsed}


def poll(demo: Demo, path: str, token: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        status = demo.call("GET", path, token).json()
        steps = ", ".join(f"{name} {step['status']}" for name, step in
                          sorted(status["steps"].items()))
        if steps != shown:
            print(f"   {status['status']}: {steps}")
            shown = steps
        if status["status"] != "pending" or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def main() -> int:
    base_url = os.environ.get("GM_DEMO_URL", DEFAULT_URL)
    with httpx.Client(timeout=10) as client:
        demo = Demo(client, base_url)
        try:
            outcome = run(demo)
        except httpx.HTTPError as exc:
            print(f"cannot reach {base_url}: {exc!r}; is `make run` running?")
            return 1
    print("summary:", outcome["summary"])
    print(f"signup to completion: {outcome['seconds']:.2f} s")
    if demo.failures:
        print(f"{len(demo.failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
