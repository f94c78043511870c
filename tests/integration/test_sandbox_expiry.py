"""The sandbox worker on ``GuestExpired``: the guest's folder goes once, and nothing else."""

import logging
import os
import uuid
from datetime import UTC, datetime

import pytest

from services.sandbox import worker
from shared.consuming import Permanent
from shared.events import Envelope, GuestExpired
from tests.integration.test_sandbox_worker import logged_in, prepare, run
from tests.unit.test_sandbox_move import GUEST, tree, write

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(sessions_for):
    return sessions_for("sandbox")


@pytest.fixture
def root(settings):
    return settings.sandbox_root


def expired(guest_id) -> Envelope:
    return Envelope.wrap(GuestExpired(guest_id=guest_id, expired_at=datetime.now(UTC)),
                         "/services/auth")


def gone(path) -> bool:
    return not path.exists() and not path.is_symlink()


def removals(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "expired guest's folder removed"]


async def test_an_expired_guests_folder_is_removed_once_and_counted(sessions, root, caplog):
    guest, other = str(uuid.uuid4()), str(uuid.uuid4())
    write(root / "guests" / guest, GUEST)
    write(root / "guests" / other, {"uploads/keep.txt": "keep"})
    envelope = expired(guest)

    with caplog.at_level(logging.INFO, logger=worker.__name__):
        await run(sessions, root, envelope)
        await run(sessions, root, envelope)
        await run(sessions, root, expired(guest))

    assert gone(root / "guests" / guest)
    assert tree(root / "guests" / other)["uploads/keep.txt"] == "keep"
    first, again = removals(caplog)
    assert (first.guest_id, first.count, first.files) == (guest, 5, 5)
    assert again.count == 0
    assert "event seen before, ignored" in [r.getMessage() for r in caplog.records]


async def test_a_link_to_outside_the_root_is_removed_and_its_target_untouched(
    sessions, root, tmp_path
):
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": "keep", "dir/inner.txt": "keep"})
    guest = str(uuid.uuid4())
    write(root / "guests" / guest, {"uploads/own.txt": "x"})
    os.symlink(outside, root / "guests" / guest / "outputs")
    os.symlink(outside / "secret.txt", root / "guests" / guest / "uploads" / "s.txt")

    await run(sessions, root, expired(guest))

    assert gone(root / "guests" / guest)
    assert tree(outside) == {"secret.txt": "keep", "dir/inner.txt": "keep", "dir/": ""}


@pytest.mark.parametrize("bad", ["../../etc", "..", "a/b", f"{uuid.uuid4()} ", ""])
async def test_an_expiry_whose_guest_id_is_a_path_is_permanent_and_touches_nothing(
    sessions, root, bad
):
    before = sorted(str(p) for p in root.rglob("*")) if root.exists() else []
    event = GuestExpired.model_construct(guest_id=bad, expired_at=datetime.now(UTC))
    with pytest.raises(Permanent, match="owner id"):
        await worker.make_handler(sessions, root)(expired(uuid.uuid4()), event)
    assert (sorted(str(p) for p in root.rglob("*")) if root.exists() else []) == before


async def test_an_expiry_for_a_guest_whose_folders_moved_to_a_user_is_refused(sessions, root):
    envelope = logged_in()
    prepare(root, envelope)
    guest, user = envelope.data["guest_id"], envelope.data["user_id"]
    await run(sessions, root, envelope)
    before = tree(root / "users" / user)

    with pytest.raises(Permanent, match="claimed"):
        await run(sessions, root, expired(uuid.UUID(guest)))

    assert tree(root / "users" / user) == before
