"""The product's events: a CloudEvents 1.0 envelope around versioned pydantic schemas.

The routing key of an event is its name and version (``UserLoggedIn.v1``), so a consumer
binds to exactly the versions it understands. ``correlationid`` is a CloudEvents extension
attribute that follows one migration through every hop.

Most events are about one migration and their ``subject`` is its id (``MigrationEvent``).
``GuestExpired`` is about a guest nobody claimed, with no migration at all: its subject is
the guest id, and ``Envelope.subject_fields`` names the subject for log lines accordingly.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

TYPE_PREFIX = "guestmigration."


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    version: ClassVar[int] = 1
    # The field whose value is the envelope's ``subject`` (and the log field it binds).
    subject_field: ClassVar[str]

    def subject(self) -> str:
        return str(getattr(self, self.subject_field))

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.name}.v{cls.version}"

    @classmethod
    def event_type(cls) -> str:
        return f"{TYPE_PREFIX}{cls.routing_key()}"


class MigrationEvent(EventData):
    """An event about one migration; its id is the subject and the default correlation id."""

    subject_field: ClassVar[str] = "migration_id"

    migration_id: uuid.UUID


class UserLoggedIn(MigrationEvent):
    """A user signed up or logged in carrying a guest token: the guest's work is theirs now."""

    name: ClassVar[str] = "UserLoggedIn"
    user_id: uuid.UUID
    guest_id: uuid.UUID


class SessionsMigrated(MigrationEvent):
    """The sessions worker re-owned the guest's sessions and threads."""

    name: ClassVar[str] = "SessionsMigrated"
    user_id: uuid.UUID
    guest_id: uuid.UUID
    sessions: int = Field(ge=0)
    threads: int = Field(ge=0)


class SandboxMigrated(MigrationEvent):
    """The sandbox worker moved the guest's folders into the user's."""

    name: ClassVar[str] = "SandboxMigrated"
    user_id: uuid.UUID
    guest_id: uuid.UUID
    files: int = Field(ge=0)
    directories: list[str]
    folders: int = Field(ge=0, description="sub-folders carried across")
    renamed: int = Field(ge=0, description="guest files given a new name beside a user's file")
    links_skipped: int = Field(ge=0)
    bytes: int = Field(ge=0)


Step = Literal["sessions", "sandbox"]


class MigrationStepFailed(MigrationEvent):
    """A worker gave up on its step; the message is in its dead-letter queue."""

    name: ClassVar[str] = "MigrationStepFailed"
    step: Step
    reason: str


class MigrationCompleted(MigrationEvent):
    """Every step is done; published once per migration."""

    name: ClassVar[str] = "MigrationCompleted"
    user_id: uuid.UUID
    guest_id: uuid.UUID
    summary: dict[str, Any]


class MigrationFailed(MigrationEvent):
    """A step failed for good; the reason says which and why."""

    name: ClassVar[str] = "MigrationFailed"
    user_id: uuid.UUID
    guest_id: uuid.UUID
    step: Step
    reason: str


class GuestExpired(EventData):
    """auth removed a guest nobody claimed, past its expiry and the grace period: the guest's
    sessions and files go too. Never sent for a claimed guest, whose work is a user's."""

    name: ClassVar[str] = "GuestExpired"
    subject_field: ClassVar[str] = "guest_id"
    guest_id: uuid.UUID
    expired_at: datetime


ALL_EVENTS: tuple[type[EventData], ...] = (
    UserLoggedIn,
    SessionsMigrated,
    SandboxMigrated,
    MigrationStepFailed,
    MigrationCompleted,
    MigrationFailed,
    GuestExpired,
)
_BY_TYPE = {event.event_type(): event for event in ALL_EVENTS}


class Envelope(BaseModel):
    """CloudEvents 1.0, structured JSON mode."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    subject: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: str
    data: dict[str, Any]

    @classmethod
    def wrap(cls, data: EventData, source: str, correlation_id: str | None = None) -> "Envelope":
        subject = data.subject()
        return cls(
            source=source,
            type=data.event_type(),
            subject=subject,
            correlationid=correlation_id or subject,
            data=data.model_dump(mode="json"),
        )

    @property
    def routing_key(self) -> str:
        return self.type.removeprefix(TYPE_PREFIX)

    def subject_fields(self) -> dict[str, str]:
        """The subject as a log field: ``migration_id``, ``guest_id``, or ``subject`` when the
        type is unknown (a message we cannot read must not claim to name a migration)."""
        schema = _BY_TYPE.get(self.type)
        return {schema.subject_field if schema else "subject": self.subject}

    def payload(self) -> EventData:
        """The typed data; raises ``UnknownEvent`` or pydantic's ValidationError if malformed."""
        schema = _BY_TYPE.get(self.type)
        if schema is None:
            raise UnknownEvent(self.type)
        return schema.model_validate(self.data)


class UnknownEvent(ValueError):
    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
