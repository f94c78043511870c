"""The sessions worker on ``GuestExpired``: only that guest's rows go, and only once."""

import uuid
from datetime import UTC, datetime

import pytest

from services.sessions import worker
from services.sessions.api import build
from shared.consuming import Permanent
from shared.events import Envelope, GuestExpired
from shared.tokens import StaticKeys
from tests.integration.apps import client_for
from tests.integration.test_sessions_migration import (
    bearer,
    deliver,
    logged_in,
    make_sessions,
    owned,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(settings, databases, signing_key):
    async with client_for(build(settings, StaticKeys(signing_key.verification_keys()))) as client:
        yield client


@pytest.fixture
def db(sessions_for):
    return sessions_for("sessions")


@pytest.fixture
def handle(db):
    return worker.make_handler(db)


def expired(guest_id: uuid.UUID) -> Envelope:
    return Envelope.wrap(GuestExpired(guest_id=guest_id, expired_at=datetime.now(UTC)),
                         "/services/auth")


async def test_an_expired_guest_loses_its_sessions_and_threads_and_nobody_else_does(
    api, handle, db, mint, caplog
):
    gone, other, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await make_sessions(api, bearer(mint, "guest", gone), 3, threads_each=2)
    await make_sessions(api, bearer(mint, "guest", other), 1)
    await make_sessions(api, bearer(mint, "user", user), 2)
    envelope = expired(gone)

    with caplog.at_level("INFO", logger=worker.__name__):
        await deliver(handle, envelope)

    assert await owned(db, guest_id=gone) == (0, 0)
    assert await owned(db, guest_id=other) == (1, 1)
    assert await owned(db, user_id=user) == (2, 2)
    [line] = [r for r in caplog.records if r.getMessage() == "expired guest's sessions removed"]
    assert (line.guest_id, line.count, line.threads) == (str(gone), 3, 6)


async def test_a_redelivered_or_repeated_expiry_changes_nothing(api, handle, db, mint, caplog):
    gone, other = uuid.uuid4(), uuid.uuid4()
    await make_sessions(api, bearer(mint, "guest", gone), 2)
    await make_sessions(api, bearer(mint, "guest", other), 2)
    envelope = expired(gone)

    with caplog.at_level("INFO", logger=worker.__name__):
        await deliver(handle, envelope)
        await deliver(handle, envelope)
        await deliver(handle, expired(gone))

    assert await owned(db, guest_id=gone) == (0, 0)
    assert await owned(db, guest_id=other) == (2, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert "event seen before, ignored" in messages
    first, again = [r for r in caplog.records
                    if r.getMessage() == "expired guest's sessions removed"]
    assert (first.count, first.threads) == (2, 2)
    assert (again.count, again.threads) == (0, 0)


async def test_an_expiry_for_a_guest_handed_to_a_user_is_refused_and_removes_nothing(
    api, handle, db, mint
):
    guest, user = uuid.uuid4(), uuid.uuid4()
    await make_sessions(api, bearer(mint, "guest", guest), 2)
    await deliver(handle, logged_in(guest, user))

    with pytest.raises(Permanent, match="handed to user"):
        await deliver(handle, expired(guest))

    assert await owned(db, user_id=user) == (2, 2)
