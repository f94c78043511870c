"""auth's API against real PostgreSQL: guests, accounts, claims, and bad input."""

import asyncio
import uuid

import pytest
from sqlalchemy import select

from services.auth import api as auth_api
from services.auth.models import outbox
from tests.integration.apps import client_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def auth(settings, databases):
    async with client_for(auth_api.build(settings)) as client:
        yield client


def email() -> str:
    return f"u{uuid.uuid4().hex[:12]}@example.test"


async def new_guest(auth) -> dict:
    response = await auth.post("/api/v1/auth/guest")
    assert response.status_code == 201, response.text
    return response.json()


async def test_signup_with_a_guest_token_starts_one_migration_and_stores_its_event(
    auth, sessions_for
):
    guest = await new_guest(auth)
    response = await auth.post("/api/v1/auth/signup", json={
        "email": email(), "password": "correct horse", "guest_token": guest["guest_token"]})
    assert response.status_code == 201, response.text
    answer = response.json()
    migration = answer["migration"]
    assert migration["status"] == "pending"
    assert migration["status_url"] == f"/api/v1/auth/migrations/{migration['migration_id']}"

    sessions = sessions_for("auth")
    async with sessions() as session:
        rows = (await session.execute(
            select(outbox.c.envelope).where(outbox.c.routing_key == "UserLoggedIn.v1")
        )).scalars().all()
    mine = [row for row in rows if row["subject"] == migration["migration_id"]]
    assert len(mine) == 1
    assert mine[0]["data"]["guest_id"] == guest["guest_id"]
    assert mine[0]["data"]["user_id"] == answer["user"]["id"]


async def test_the_same_guest_twice_for_the_same_user_returns_the_same_migration(auth):
    guest = await new_guest(auth)
    address = email()
    first = await auth.post("/api/v1/auth/signup", json={
        "email": address, "password": "correct horse", "guest_token": guest["guest_token"]})
    again = await auth.post("/api/v1/auth/login", json={
        "email": address, "password": "correct horse", "guest_token": guest["guest_token"]})
    token = again.json()["access_token"]
    third = await auth.post("/api/v1/auth/migrate-guest",
                            json={"guest_token": guest["guest_token"]},
                            headers={"Authorization": f"Bearer {token}"})
    assert third.status_code == 202
    ids = {first.json()["migration"]["migration_id"], again.json()["migration"]["migration_id"],
           third.json()["migration_id"]}
    assert len(ids) == 1


async def test_a_guest_claimed_by_another_user_is_refused(auth):
    guest = await new_guest(auth)
    await auth.post("/api/v1/auth/signup", json={
        "email": email(), "password": "correct horse", "guest_token": guest["guest_token"]})
    other = await auth.post("/api/v1/auth/signup", json={
        "email": email(), "password": "correct horse", "guest_token": guest["guest_token"]})
    assert other.status_code == 201
    assert other.json()["migration"]["status"] == "refused"
    token = other.json()["access_token"]
    claim = await auth.post("/api/v1/auth/migrate-guest",
                            json={"guest_token": guest["guest_token"]},
                            headers={"Authorization": f"Bearer {token}"})
    assert claim.status_code == 409
    assert claim.json()["error"]["code"] == "guest_claimed"


@pytest.mark.parametrize("body, code", [
    ({"email": "nobody@example.test", "password": "whatever1"}, "invalid_credentials"),
    ({"email": "not-an-email", "password": "whatever1"}, "invalid_request"),
    ({"email": "a\u0000b@example.test", "password": "whatever1"}, "invalid_request"),
    ({"email": "a@exa\u0000mple.test", "password": "whatever1"}, "invalid_request"),
    ({"email": "a\tb@example.test", "password": "whatever1"}, "invalid_request"),
    ({"email": "a@exam\nple.test", "password": "whatever1"}, "invalid_request"),
    ({"email": "a@example.test"}, "invalid_request"),
    ({"email": "a@example.test", "password": "x" * 129}, "invalid_request"),
    ({"email": "a@example.test", "password": "whatever1", "extra": 1}, "invalid_request"),
    ({"email": "a@example.test", "password": "whatever1", "guest_token": "abc"},
     "invalid_guest_token"),
])
async def test_bad_login_input_is_a_clear_error(auth, body, code):
    response = await auth.post("/api/v1/auth/login", json=body)
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] == code


async def test_a_duplicate_signup_is_a_conflict_in_any_letter_case(auth):
    address = email()
    first = await auth.post("/api/v1/auth/signup", json={"email": address,
                                                         "password": "correct horse"})
    second = await auth.post("/api/v1/auth/signup", json={"email": address.upper(),
                                                          "password": "correct horse"})
    assert first.status_code == 201 and "migration" not in first.json()
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "email_taken"


async def test_migrate_guest_reads_the_guest_token_from_the_json_body(auth):
    schema = (await auth.get("/api/v1/auth/openapi.json")).json()
    operation = schema["paths"]["/api/v1/auth/migrate-guest"]["post"]
    assert not [p for p in operation.get("parameters", []) if p["in"] == "query"]
    assert "requestBody" in operation

    login = await auth.post("/api/v1/auth/signup", json={"email": email(),
                                                         "password": "correct horse"})
    token = login.json()["access_token"]
    missing = await auth.post("/api/v1/auth/migrate-guest", json={},
                              headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 422
    assert "guest_token" in missing.json()["error"]["message"]
    bare = await auth.post("/api/v1/auth/migrate-guest", json={"guest_id": str(uuid.uuid4())},
                           headers={"Authorization": f"Bearer {token}"})
    assert bare.status_code == 422


async def test_concurrent_polls_and_claims_share_a_small_pool_without_deadlock(settings, databases):
    """C07: 50 status polls and 20 claims at once on 5 connections; all answer, none leak."""
    small = settings.model_copy(update={"db_pool_size": 5, "db_max_overflow": 0})
    app = auth_api.build(small)
    async with client_for(app) as auth:
        users = []
        for _ in range(20):
            signup = await auth.post("/api/v1/auth/signup",
                                     json={"email": email(), "password": "correct horse"})
            guest = await new_guest(auth)
            users.append((signup.json()["access_token"], guest["guest_token"]))
        headers = {"Authorization": f"Bearer {users[0][0]}"}
        first = await auth.post("/api/v1/auth/migrate-guest", headers=headers,
                                json={"guest_token": users[0][1]})
        status_url = first.json()["status_url"]

        claims = [auth.post("/api/v1/auth/migrate-guest", json={"guest_token": guest},
                            headers={"Authorization": f"Bearer {token}"})
                  for token, guest in users]
        polls = [auth.get(status_url, headers=headers) for _ in range(50)]
        answers = await asyncio.gather(*claims, *polls)

        assert [r.status_code for r in answers[:20]] == [202] * 20
        assert [r.status_code for r in answers[20:]] == [200] * 50
        assert app.state.engine.pool.checkedout() == 0


async def test_a_body_that_is_not_json_is_a_clear_error(auth):
    response = await auth.post("/api/v1/auth/login", content=b'{"email": ',
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "invalid_json",
                                         "message": "the body is not valid JSON"}


async def test_a_login_without_a_guest_token_starts_no_migration_and_says_none(auth):
    """C10: ``migration`` is present only when a guest token came along."""
    address = email()
    await auth.post("/api/v1/auth/signup", json={"email": address, "password": "correct horse"})
    login = await auth.post("/api/v1/auth/login", json={"email": address,
                                                        "password": "correct horse"})
    assert login.status_code == 200
    assert "migration" not in login.json()
    assert set(login.json()) == {"access_token", "token_type", "expires_at", "user"}
    me = await auth.get("/api/v1/auth/me",
                        headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.json()["email"] == address
