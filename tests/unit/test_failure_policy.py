"""The one failure policy: what happens to a message after its handler ran."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError

from shared.consuming import Permanent, decide, parse
from shared.events import Envelope, GuestExpired, UserLoggedIn
from shared.topology import DELIVERY_LIMIT, RETRY_DELAYS_MS


def test_success_is_acknowledged():
    assert decide(None, 0, 0).action == "ack"


def test_a_permanent_failure_is_dead_lettered_at_once_with_its_reason():
    outcome = decide(Permanent("owner id is a path"), 0, 0)
    assert outcome.action == "dead" and "owner id is a path" in outcome.reason


def test_a_transient_failure_is_retried_with_growing_attempts_then_dead_lettered():
    attempts = [decide(RuntimeError("boom"), n, 0) for n in range(len(RETRY_DELAYS_MS) + 1)]
    assert [a.action for a in attempts] == ["retry"] * len(RETRY_DELAYS_MS) + ["dead"]
    assert [a.attempt for a in attempts[:-1]] == list(range(1, len(RETRY_DELAYS_MS) + 1))
    assert "boom" in attempts[-1].reason


def test_an_outage_waits_without_spending_the_messages_retry_budget():
    outcome = decide(OperationalError("select 1", {}, ConnectionRefusedError()), 3, 0)
    assert outcome.action == "retry" and not outcome.counts


def test_a_message_that_keeps_crashing_its_worker_is_dead_lettered():
    assert decide(RuntimeError("x"), 0, DELIVERY_LIMIT - 1).action == "dead"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"type": 1}', b"\xff\xfe"])
def test_a_body_that_is_not_a_cloud_event_is_refused(body):
    with pytest.raises(Exception) as caught:
        parse(body)
    assert decide(caught.value, 0, 0).action == "dead"


def test_an_envelope_round_trips_and_names_its_migration():
    event = UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(), guest_id=uuid.uuid4())
    envelope = Envelope.wrap(event, "/test")
    again = parse(envelope.model_dump_json().encode())
    assert again.payload() == event
    assert again.subject == str(event.migration_id) == again.correlationid
    assert again.routing_key == "UserLoggedIn.v1"
    assert again.specversion == "1.0"


def test_a_guest_expiry_names_its_guest_as_subject_in_envelope_and_log_fields():
    event = GuestExpired(guest_id=uuid.uuid4(), expired_at=datetime.now(UTC))
    again = parse(Envelope.wrap(event, "/test").model_dump_json().encode())
    assert again.payload() == event
    assert again.subject == str(event.guest_id) == again.correlationid
    assert again.routing_key == "GuestExpired.v1"
    assert again.subject_fields() == {"guest_id": str(event.guest_id)}
    claim = UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(), guest_id=uuid.uuid4())
    assert Envelope.wrap(claim, "/t").subject_fields() == {"migration_id": str(claim.migration_id)}


def test_an_unknown_event_type_is_dead_lettered():
    envelope = Envelope(source="/x", type="guestmigration.Nope.v1", subject="s",
                        correlationid="c", data={})
    with pytest.raises(Exception) as caught:
        envelope.payload()
    assert decide(caught.value, 0, 0).action == "dead"


def test_a_disk_error_spends_the_retry_budget_and_is_dead_lettered_in_the_end():
    full = OSError(28, "No space left on device")
    assert decide(full, 0, 0).counts
    assert decide(full, len(RETRY_DELAYS_MS), 0).action == "dead"
    assert not decide(ConnectionRefusedError(), 0, 0).counts


def test_the_reason_for_an_invalid_event_fits_on_one_line():
    envelope = Envelope(source="/x", type=UserLoggedIn.event_type(), subject="s",
                        correlationid="c", data={"migration_id": "../../etc"})
    with pytest.raises(Exception) as caught:
        envelope.payload()
    outcome = decide(caught.value, 0, 0)
    assert outcome.action == "dead" and "\n" not in outcome.reason
    assert "migration_id" in outcome.reason
