"""sessions's pure pieces: cursors, titles and lock keys, without any server."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from services.sessions import cursors, fencing
from services.sessions.api import Titled


def test_a_cursor_round_trips_its_position_to_the_microsecond():
    position = cursors.Position(datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), uuid.uuid4())
    assert cursors.decode(cursors.encode(position)) == position


def test_a_cursor_keeps_its_time_zone_offset():
    zone = timezone(timedelta(hours=5, minutes=30))
    position = cursors.Position(datetime(2024, 1, 1, tzinfo=zone), uuid.uuid4())
    assert cursors.decode(cursors.encode(position)).created_at == position.created_at


def test_a_cursor_is_url_safe_without_padding():
    encoded = cursors.encode(cursors.Position(datetime.now(UTC), uuid.uuid4()))
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded


@pytest.mark.parametrize("cursor", [
    "", "!!!", "e30", "bnVsbA", "W10", "x" * (cursors.MAX_LENGTH + 1),
    "eyJ0IjogIjIwMjQtMDEtMDFUMDA6MDA6MDAiLCAiaSI6ICJ4In0",
])
def test_a_malformed_cursor_is_refused_as_invalid(cursor):
    with pytest.raises(cursors.InvalidCursor):
        cursors.decode(cursor)


def test_a_cursor_without_a_time_zone_is_refused():
    naive = cursors.encode(cursors.Position(datetime(2024, 1, 1), uuid.uuid4()))
    with pytest.raises(cursors.InvalidCursor):
        cursors.decode(naive)


@pytest.mark.parametrize("title", ["a", "x" * 200, "ünïcode ✓", "two  spaces"])
def test_titles_of_one_to_200_printable_characters_are_accepted(title):
    assert Titled(title=title).title == title


@pytest.mark.parametrize("payload", [
    {"title": ""}, {"title": " \n "}, {"title": "x" * 201}, {"title": 1}, {"title": b"bytes"},
    {"title": "bell\a"}, {"title": "nul\x00"}, {"title": "ok", "extra": 1}, {},
])
def test_bad_titles_are_refused(payload):
    with pytest.raises(ValidationError):
        Titled.model_validate(payload)


def test_a_guest_lock_key_is_a_stable_signed_64_bit_number():
    guest = uuid.uuid4()
    key = fencing.lock_key(guest)
    assert key == fencing.lock_key(uuid.UUID(str(guest)))
    assert -(2**63) <= key < 2**63
    assert fencing.lock_key(uuid.UUID(int=2**128 - 1)) == -1
