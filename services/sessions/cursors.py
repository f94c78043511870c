"""Opaque cursors for keyset pagination on ``(created_at, id)``, newest first.

A cursor is the position of the last row of a page, base64url-encoded JSON. It is not signed:
it only narrows a query that is already filtered by the caller, so a forged one can reveal
nothing, and a malformed one is a clear 400.
"""

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

MAX_LENGTH = 200


class InvalidCursor(ValueError):
    """The cursor was not made by this service."""


@dataclass(frozen=True)
class Position:
    created_at: datetime
    id: uuid.UUID


def encode(position: Position) -> str:
    raw = json.dumps({"t": position.created_at.isoformat(), "i": str(position.id)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str) -> Position:
    if not cursor or len(cursor) > MAX_LENGTH:
        raise InvalidCursor("cursor has the wrong length")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fields = json.loads(raw)
        created_at = datetime.fromisoformat(fields["t"])
        row_id = uuid.UUID(fields["i"])
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor("cursor is malformed") from exc
    if created_at.tzinfo is None:
        raise InvalidCursor("cursor has no time zone")
    return Position(created_at, row_id)
