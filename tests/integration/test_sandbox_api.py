"""sandbox's API through the real app: uploads, listings, downloads, deletes, and bad input."""

import os
import uuid

import pytest

from services.sandbox.api import PREFIX, build
from shared.tokens import StaticKeys
from tests.integration.apps import client_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def sandbox(settings, databases, signing_key):
    async with client_for(build(settings, StaticKeys(signing_key.verification_keys()))) as client:
        yield client


@pytest.fixture
def guest(mint):
    guest_id = uuid.uuid4()
    return guest_id, {"Authorization": f"Bearer {mint('guest', guest_id)}"}


@pytest.fixture
def user(mint):
    user_id = uuid.uuid4()
    return user_id, {"Authorization": f"Bearer {mint('user', user_id)}"}


async def upload(client, headers, area="uploads", name="a.txt", content=b"hello", path=None):
    data = {"path": path} if path is not None else {}
    return await client.post(f"{PREFIX}/{area}", headers=headers, data=data,
                             files={"file": (name, content, "text/plain")})


def snapshot(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


async def test_an_uploaded_file_is_listed_downloaded_and_deleted_by_its_owner(sandbox, user,
                                                                              settings):
    user_id, headers = user
    response = await upload(sandbox, headers, path="docs", name="notes.md", content=b"# hi")
    assert response.status_code == 201, response.text
    assert response.json() == {"area": "uploads", "path": "docs/notes.md", "size": 4}
    assert (settings.sandbox_root / "users" / str(user_id) / "uploads" / "docs"
            / "notes.md").read_bytes() == b"# hi"

    listing = (await sandbox.get(f"{PREFIX}/uploads", headers=headers)).json()
    assert [(item["path"], item["size"]) for item in listing["items"]] == [("docs/notes.md", 4)]
    assert listing["items"][0]["modified_at"]

    download = await sandbox.get(f"{PREFIX}/uploads/docs/notes.md", headers=headers)
    assert download.status_code == 200
    assert download.content == b"# hi"

    deleted = await sandbox.delete(f"{PREFIX}/uploads/docs/notes.md", headers=headers)
    assert deleted.status_code == 204
    again = await sandbox.get(f"{PREFIX}/uploads/docs/notes.md", headers=headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"


async def test_an_owner_sees_only_their_own_files(sandbox, user, guest):
    _user_id, user_headers = user
    _guest_id, guest_headers = guest
    assert (await upload(sandbox, guest_headers, name="mine.txt")).status_code == 201
    listing = await sandbox.get(f"{PREFIX}/uploads", headers=user_headers)
    assert listing.json() == {"items": []}
    other = await sandbox.get(f"{PREFIX}/uploads/mine.txt", headers=user_headers)
    assert other.status_code == 404
    gone = await sandbox.delete(f"{PREFIX}/uploads/mine.txt", headers=user_headers)
    assert gone.status_code == 404
    mine = await sandbox.get(f"{PREFIX}/uploads/mine.txt", headers=guest_headers)
    assert mine.content == b"hello"


async def test_an_upload_never_replaces_an_existing_file(sandbox, user):
    _user_id, headers = user
    assert (await upload(sandbox, headers, content=b"first")).status_code == 201
    second = await upload(sandbox, headers, content=b"second")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "exists"
    kept = await sandbox.get(f"{PREFIX}/uploads/a.txt", headers=headers)
    assert kept.content == b"first"


async def test_an_unknown_area_is_a_404_with_its_own_code(sandbox, user):
    _user_id, headers = user
    for response in (
        await upload(sandbox, headers, area="secrets"),
        await sandbox.get(f"{PREFIX}/secrets", headers=headers),
        await sandbox.get(f"{PREFIX}/secrets/a.txt", headers=headers),
        await sandbox.delete(f"{PREFIX}/secrets/a.txt", headers=headers),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_area"


BAD_NAMES = ["", "..", "a/b", "a\\b", "tab\tname", "nul\0name", "bell\x07", ".gm-upload-x",
             "%2e%2e%2f", "x" * 300, " padded "]


async def test_bad_file_names_are_refused_and_nothing_is_written(sandbox, user, settings):
    user_id, headers = user
    owner = settings.sandbox_root / "users" / str(user_id)
    for bad in BAD_NAMES:
        response = await upload(sandbox, headers, name=bad)
        assert response.status_code in (400, 422), (bad, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "invalid_path"
    assert not any(p.is_file() for p in owner.rglob("*"))


BAD_FOLDERS = ["..", "../..", "../../etc", "/abs", "a//b", "a/../../b", "a\\..\\b", "%2e%2e%2f",
               "docs/%2E%2E", "ctl\x01", "a/" * 40]


async def test_bad_sub_folders_are_refused_and_nothing_outside_the_root_is_touched(
    sandbox, user, settings, tmp_path
):
    _user_id, headers = user
    before = snapshot(settings.sandbox_root.parent)
    for bad in BAD_FOLDERS:
        response = await upload(sandbox, headers, path=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] == "invalid_path"
    assert {p for p in snapshot(settings.sandbox_root.parent) - before
            if not p.startswith("sandbox")} == set()


async def test_bad_paths_in_the_url_are_refused_for_download_and_delete(sandbox, user):
    _user_id, headers = user
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "a%252Fb", "a%00b",
                "docs//x", ".gm-journal"):
        for method in (sandbox.get, sandbox.delete):
            response = await method(f"{PREFIX}/uploads/{bad}", headers=headers)
            assert response.status_code in (400, 404), (bad, response.text)
            assert response.json()["error"]["code"] in ("invalid_path", "not_found")


async def test_a_symbolic_link_in_an_area_is_never_followed(sandbox, user, settings, tmp_path):
    user_id, headers = user
    assert (await upload(sandbox, headers, name="ok.txt")).status_code == 201
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    area = settings.sandbox_root / "users" / str(user_id) / "uploads"
    os.symlink(outside, area / "escape")
    os.symlink(outside / "secret.txt", area / "secret.txt")
    assert (await sandbox.get(f"{PREFIX}/uploads/secret.txt", headers=headers)).status_code == 404
    assert (await sandbox.get(f"{PREFIX}/uploads/escape/secret.txt",
                              headers=headers)).status_code == 404
    assert (await upload(sandbox, headers, path="escape")).status_code == 400
    assert (await sandbox.delete(f"{PREFIX}/uploads/escape/secret.txt",
                                 headers=headers)).status_code == 404
    listed = (await sandbox.get(f"{PREFIX}/uploads", headers=headers)).json()["items"]
    assert [item["path"] for item in listed] == ["ok.txt"]
    assert sorted(os.listdir(outside)) == ["secret.txt"]


async def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(settings, databases,
                                                                      signing_key, user):
    user_id, headers = user
    small = settings.model_copy(update={"upload_max_bytes": 1000})
    keys = StaticKeys(signing_key.verification_keys())
    async with client_for(build(small, keys)) as client:
        just_over = await upload(client, headers, content=b"x" * 1001)
        declared = await upload(client, headers, content=b"x" * 200_000)
        fits = await upload(client, headers, name="fits.txt", content=b"x" * 1000)
    assert just_over.status_code == 413
    assert just_over.json()["error"]["code"] == "too_large"
    assert declared.status_code == 413
    assert fits.status_code == 201
    owner = settings.sandbox_root / "users" / str(user_id)
    assert sorted(p.name for p in owner.rglob("*") if p.is_file()) == ["fits.txt"]


async def test_an_upload_without_a_file_is_a_422_naming_the_field(sandbox, user):
    _user_id, headers = user
    response = await sandbox.post(f"{PREFIX}/uploads", headers=headers, data={"path": "x"})
    assert response.status_code == 422
    assert "file" in response.json()["error"]["message"]


@pytest.mark.parametrize("subject", ["../../etc", "..", "a/b", "/abs", "%2e%2e%2f",
                                     f"{uuid.uuid4()} ", "", "x" * 10_000])
async def test_c03_a_token_whose_subject_is_a_path_is_refused_and_touches_nothing(
    sandbox, mint, settings, subject
):
    before = snapshot(settings.sandbox_root)
    headers = {"Authorization": f"Bearer {mint('guest', subject)}"}
    for response in (
        await upload(sandbox, headers),
        await sandbox.get(f"{PREFIX}/uploads", headers=headers),
        await sandbox.get(f"{PREFIX}/uploads/a.txt", headers=headers),
        await sandbox.delete(f"{PREFIX}/uploads/a.txt", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_token"
    assert snapshot(settings.sandbox_root) == before


async def test_a_bare_guest_id_without_its_token_is_refused(sandbox):
    response = await sandbox.get(f"{PREFIX}/uploads", headers={"X-Guest-Id": str(uuid.uuid4())})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "guest_token_required"
