"""sessions's API against real PostgreSQL: the owner's rows only, pages, and bad input."""

import base64
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import insert

from services.auth import keys
from services.sessions.api import PREFIX, build
from services.sessions.models import sessions as sessions_table
from shared.tokens import StaticKeys
from tests.integration.apps import client_for

pytestmark = pytest.mark.integration

NIL = str(uuid.UUID(int=0)).encode()


@pytest.fixture
async def api(settings, databases, signing_key):
    async with client_for(build(settings, StaticKeys(signing_key.verification_keys()))) as client:
        yield client


@pytest.fixture
def as_new(mint):
    """``as_new("user")``: headers of a caller nobody has used yet."""

    def make(kind: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(kind, uuid.uuid4())}"}

    return make


async def create(api, headers, title: str = "a session") -> dict:
    response = await api.post(PREFIX, json={"title": title}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def code(response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.parametrize("kind", ["user", "guest"])
async def test_an_owner_creates_reads_renames_and_deletes_a_session(api, as_new, kind):
    me = as_new(kind)
    made = await create(api, me, "first")
    assert made["title"] == "first"

    read = await api.get(f"{PREFIX}/{made['id']}", headers=me)
    assert read.status_code == 200 and read.json() == made

    renamed = await api.patch(f"{PREFIX}/{made['id']}", json={"title": "second"}, headers=me)
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "second"
    assert renamed.json()["updated_at"] >= made["updated_at"]

    deleted = await api.delete(f"{PREFIX}/{made['id']}", headers=me)
    assert deleted.status_code == 204
    gone = await api.get(f"{PREFIX}/{made['id']}", headers=me)
    assert gone.status_code == 404 and code(gone) == "not_found"
    assert (await api.delete(f"{PREFIX}/{made['id']}", headers=me)).status_code == 404


async def test_threads_are_added_to_and_listed_from_their_session_newest_first(api, as_new):
    me = as_new("guest")
    session = await create(api, me)
    titles = [f"thread {n}" for n in range(3)]
    for title in titles:
        added = await api.post(f"{PREFIX}/{session['id']}/threads", json={"title": title},
                               headers=me)
        assert added.status_code == 201, added.text
        assert added.json()["session_id"] == session["id"]

    listed = await api.get(f"{PREFIX}/{session['id']}/threads", headers=me)
    assert listed.status_code == 200
    assert [t["title"] for t in listed.json()["items"]] == titles[::-1]
    assert listed.json()["next_cursor"] is None


async def test_threads_come_in_pages_too(api, as_new):
    me = as_new()
    session = await create(api, me)
    path = f"{PREFIX}/{session['id']}/threads"
    for n in range(5):
        await api.post(path, json={"title": f"t{n}"}, headers=me)
    first = (await api.get(path, params={"limit": 2}, headers=me)).json()
    rest = (await api.get(path, params={"limit": 10, "cursor": first["next_cursor"]},
                          headers=me)).json()
    titles = [t["title"] for t in first["items"] + rest["items"]]
    assert titles == ["t4", "t3", "t2", "t1", "t0"]
    assert rest["next_cursor"] is None
    bad = await api.get(path, params={"cursor": "nope"}, headers=me)
    assert bad.status_code == 400 and code(bad) == "invalid_cursor"


async def test_deleting_a_session_deletes_its_threads(api, as_new):
    me = as_new()
    session = await create(api, me)
    await api.post(f"{PREFIX}/{session['id']}/threads", json={"title": "t"}, headers=me)
    await api.delete(f"{PREFIX}/{session['id']}", headers=me)
    threads = await api.get(f"{PREFIX}/{session['id']}/threads", headers=me)
    assert threads.status_code == 404


async def test_another_owners_session_answers_404_like_a_missing_one(api, as_new):
    owner, stranger, guest = as_new("user"), as_new("user"), as_new("guest")
    session = await create(api, owner)
    path = f"{PREFIX}/{session['id']}"
    missing = f"{PREFIX}/{uuid.uuid4()}"
    for headers in (stranger, guest):
        attempts = [
            await api.get(path, headers=headers),
            await api.patch(path, json={"title": "mine now"}, headers=headers),
            await api.delete(path, headers=headers),
            await api.post(f"{path}/threads", json={"title": "t"}, headers=headers),
            await api.get(f"{path}/threads", headers=headers),
        ]
        assert [(r.status_code, r.json()) for r in attempts] == [
            (404, (await api.get(missing, headers=headers)).json())
        ] * len(attempts)
        listed = await api.get(PREFIX, headers=headers)
        assert listed.json() == {"items": [], "next_cursor": None}
    still = await api.get(path, headers=owner)
    assert still.json()["title"] == session["title"]


async def test_a_guest_and_a_user_with_the_same_id_do_not_see_each_others_sessions(
    api, mint
):
    same = uuid.uuid4()
    user = {"Authorization": f"Bearer {mint('user', same)}"}
    guest = {"Authorization": f"Bearer {mint('guest', same)}"}
    session = await create(api, user)
    assert (await api.get(f"{PREFIX}/{session['id']}", headers=guest)).status_code == 404


async def test_pages_walk_every_session_once_newest_first(api, as_new):
    me = as_new()
    made = [(await create(api, me, f"s{n}"))["id"] for n in range(23)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        response = await api.get(PREFIX, params=params, headers=me)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == made[::-1]


async def test_pages_break_ties_on_the_same_instant_by_id(api, mint, sessions_for):
    owner = uuid.uuid4()
    me = {"Authorization": f"Bearer {mint('user', owner)}"}
    instant = datetime.now(UTC)
    ids = sorted((uuid.uuid4() for _ in range(7)), reverse=True)
    factory = sessions_for("sessions")
    async with factory() as db, db.begin():
        await db.execute(insert(sessions_table), [
            {"id": i, "owner_user_id": owner, "title": "tied", "created_at": instant}
            for i in ids
        ])
    seen, cursor = [], None
    for _ in range(3):
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await api.get(PREFIX, params=params, headers=me)).json()
        seen += [uuid.UUID(item["id"]) for item in page["items"]]
        cursor = page["next_cursor"]
    assert cursor is None
    assert seen == ids


async def test_the_page_size_defaults_to_20_and_is_capped_at_100(api, as_new):
    me = as_new()
    for n in range(21):
        await create(api, me, f"s{n}")
    first = (await api.get(PREFIX, headers=me)).json()
    assert len(first["items"]) == 20 and first["next_cursor"]
    for limit in (0, 101, "many"):
        response = await api.get(PREFIX, params={"limit": limit}, headers=me)
        assert response.status_code == 422 and code(response) == "invalid_request"


@pytest.mark.parametrize("cursor", [
    "not base64 !", "e30", "eyJ0IjogMX0", "x" * 500,
    base64.urlsafe_b64encode(b'{"t": "2024-01-01T00:00:00", "i": "%s"}' % NIL).decode(),
    base64.urlsafe_b64encode(b'{"t": "yesterday", "i": "%s"}' % NIL).decode(),
    base64.urlsafe_b64encode(b'["2024-01-01T00:00:00+00:00"]').decode(),
])
async def test_a_bad_cursor_is_a_400_invalid_cursor(api, as_new, cursor):
    response = await api.get(PREFIX, params={"cursor": cursor}, headers=as_new())
    assert response.status_code == 400
    assert code(response) == "invalid_cursor"


@pytest.mark.parametrize("payload", [
    {"title": ""},
    {"title": "   "},
    {"title": "x" * 201},
    {"title": 7},
    {"title": None},
    {"title": ["a"]},
    {"title": "nul \x00 byte"},
    {},
    {"title": "ok", "owner_user_id": str(uuid.uuid4())},
])
async def test_a_bad_title_or_unknown_field_is_a_422(api, as_new, payload):
    me = as_new()
    created = await api.post(PREFIX, json=payload, headers=me)
    assert created.status_code == 422 and code(created) == "invalid_request"
    session = await create(api, me)
    renamed = await api.patch(f"{PREFIX}/{session['id']}", json=payload, headers=me)
    assert renamed.status_code == 422 and code(renamed) == "invalid_request"
    thread = await api.post(f"{PREFIX}/{session['id']}/threads", json=payload, headers=me)
    assert thread.status_code == 422 and code(thread) == "invalid_request"


async def test_a_title_with_a_lone_surrogate_is_a_422_not_a_500(api, as_new):
    raw = b'{"title": "broken \\ud800 half"}'
    response = await api.post(PREFIX, content=raw, headers={**as_new(),
                                                           "Content-Type": "application/json"})
    assert response.status_code == 422 and code(response) == "invalid_request"


async def test_a_title_of_exactly_200_characters_is_kept_whole(api, as_new):
    title = "é" * 200
    assert (await create(api, as_new(), title))["title"] == title


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "..", "%2e%2e", "x" * 1000])
async def test_an_id_that_is_not_an_id_is_a_clear_422(api, as_new, bad_id):
    me = as_new()
    for response in (
        await api.get(f"{PREFIX}/{bad_id}", headers=me),
        await api.patch(f"{PREFIX}/{bad_id}", json={"title": "t"}, headers=me),
        await api.delete(f"{PREFIX}/{bad_id}", headers=me),
        await api.get(f"{PREFIX}/{bad_id}/threads", headers=me),
    ):
        assert response.status_code in (404, 422), response.text
        assert code(response) in ("not_found", "invalid_request")


def forged_with_the_same_key_id(signing_key, other_key, settings) -> str:
    impostor = keys.SigningKey(kid=signing_key.kid, private_pem=other_key.private_pem)
    return keys.mint(impostor, kind="user", subject=uuid.uuid4(),
                     expires_at=datetime.now(UTC) + timedelta(minutes=5),
                     issuer=settings.token_issuer, audience=settings.token_audience)


async def test_tokens_that_lie_are_401(api, mint, settings, signing_key, tmp_path):
    other_key = keys.load_or_create(tmp_path)
    now = datetime.now(UTC)
    unsigned = jwt.encode({"sub": str(uuid.uuid4()), "kind": "user", "iss": settings.token_issuer,
                           "aud": settings.token_audience, "iat": int(now.timestamp()),
                           "exp": int((now + timedelta(minutes=5)).timestamp())},
                          None, algorithm="none")
    tokens = {
        "expired": mint("user", uuid.uuid4(), timedelta(minutes=-5)),
        "another key": keys.mint(other_key, kind="guest", subject=uuid.uuid4(),
                                 expires_at=now + timedelta(minutes=5),
                                 issuer=settings.token_issuer, audience=settings.token_audience),
        "forged": forged_with_the_same_key_id(signing_key, other_key, settings),
        "wrong kind": mint("admin", uuid.uuid4()),
        "alg none": unsigned,
        "garbage": "abc.def.ghi",
    }
    for name, token in tokens.items():
        response = await api.get(PREFIX, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert code(response) == "invalid_token", name


async def test_a_bare_guest_id_is_refused_as_guest_token_required(api):
    response = await api.post(PREFIX, json={"title": "t"},
                              headers={"X-Guest-Id": str(uuid.uuid4())})
    assert response.status_code == 401
    assert code(response) == "guest_token_required"
    assert (await api.get(PREFIX)).status_code == 401


async def test_the_openapi_document_is_served_under_the_prefix(api):
    document = (await api.get(f"{PREFIX}/openapi.json")).json()
    assert set(document["paths"]) >= {PREFIX, f"{PREFIX}/{{session_id}}",
                                      f"{PREFIX}/{{session_id}}/threads"}
    assert "requestBody" in document["paths"][PREFIX]["post"]
