"""sessions's HTTP API and its process entry (``python -m services.sessions.api``).

Every route serves one caller, a user or a guest, named by a token auth signed, and sees only
that caller's rows. A guest whose work was handed to a user is refused (``guest_migrated``).
"""

import unicodedata
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.sessions import cursors, fencing, store
from services.sessions.models import TITLE_MAX
from shared import errors
from shared.api import DbSession, create_app, serve
from shared.errors import ApiError, not_found
from shared.identity import CurrentCaller
from shared.settings import Settings
from shared.tokens import Caller, JwksKeys, KeySource, verifier_for

PREFIX = "/api/v1/sessions"
PAGE_DEFAULT = 20
PAGE_MAX = 100


class Titled(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[StrictStr, Field(min_length=1, max_length=TITLE_MAX)]

    @field_validator("title")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is blank")
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("title contains control characters")
        return value


class SessionOut(BaseModel):
    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime


class ThreadOut(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class ThreadPage(BaseModel):
    items: list[ThreadOut]
    next_cursor: str | None


Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="rows per page")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]

router = APIRouter(prefix=PREFIX, tags=["sessions"])


@asynccontextmanager
async def _reading(db: AsyncSession, caller: Caller) -> AsyncIterator[None]:
    async with db.begin():
        if caller.is_guest:
            await fencing.admit_guest_read(db, caller.id)
        yield


@asynccontextmanager
async def _writing(db: AsyncSession, caller: Caller) -> AsyncIterator[None]:
    """A transaction in which a guest cannot be migrated, or a refusal if it already was."""
    async with db.begin():
        if caller.is_guest:
            await fencing.admit_guest_write(db, caller.id)
        yield


def _position(cursor: str | None) -> cursors.Position | None:
    if cursor is None:
        return None
    try:
        return cursors.decode(cursor)
    except cursors.InvalidCursor as exc:
        raise ApiError(400, "invalid_cursor", f"{exc}; pass next_cursor as given") from None


@router.post("", status_code=201)
async def create_session(body: Titled, caller: CurrentCaller, db: DbSession) -> SessionOut:
    """Start a session owned by the caller."""
    async with _writing(db, caller):
        row = await store.create_session(db, caller, body.title)
    return SessionOut(**row)


@router.get("")
async def list_sessions(caller: CurrentCaller, db: DbSession, limit: Limit = PAGE_DEFAULT,
                        cursor: Cursor = None) -> SessionPage:
    """The caller's sessions, newest first, a page at a time."""
    after = _position(cursor)
    async with _reading(db, caller):
        items, next_cursor = await store.list_sessions(db, caller, limit, after)
    return SessionPage(items=[SessionOut(**row) for row in items], next_cursor=next_cursor)


@router.get("/{session_id}")
async def read_session(session_id: uuid.UUID, caller: CurrentCaller,
                       db: DbSession) -> SessionOut:
    """One of the caller's sessions; anyone else's is a 404, the same as a missing one."""
    async with _reading(db, caller):
        row = await store.find_session(db, caller, session_id)
    if row is None:
        raise not_found("session")
    return SessionOut(**row)


@router.patch("/{session_id}")
async def rename_session(session_id: uuid.UUID, body: Titled, caller: CurrentCaller,
                         db: DbSession) -> SessionOut:
    """Rename one of the caller's sessions."""
    async with _writing(db, caller):
        row = await store.rename_session(db, caller, session_id, body.title)
    if row is None:
        raise not_found("session")
    return SessionOut(**row)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: uuid.UUID, caller: CurrentCaller,
                         db: DbSession) -> Response:
    """Delete one of the caller's sessions with its threads."""
    async with _writing(db, caller):
        deleted = await store.delete_session(db, caller, session_id)
    if not deleted:
        raise not_found("session")
    return Response(status_code=204)


@router.post("/{session_id}/threads", status_code=201)
async def add_thread(session_id: uuid.UUID, body: Titled, caller: CurrentCaller,
                     db: DbSession) -> ThreadOut:
    """Add a thread to one of the caller's sessions."""
    async with _writing(db, caller):
        row = await store.add_thread(db, caller, session_id, body.title)
    if row is None:
        raise not_found("session")
    return ThreadOut(**row)


@router.get("/{session_id}/threads")
async def list_threads(session_id: uuid.UUID, caller: CurrentCaller, db: DbSession,
                       limit: Limit = PAGE_DEFAULT, cursor: Cursor = None) -> ThreadPage:
    """The threads of one of the caller's sessions, newest first, a page at a time."""
    after = _position(cursor)
    async with _reading(db, caller):
        found = await store.list_threads(db, caller, session_id, limit, after)
    if found is None:
        raise not_found("session")
    items, next_cursor = found
    return ThreadPage(items=[ThreadOut(**row) for row in items], next_cursor=next_cursor)


async def _guest_migrated(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(
        errors.body("guest_migrated", "this guest now belongs to an account: log in to see its "
             "sessions, the guest token no longer reads or changes them"),
        403,
    )


def build(settings: Settings, keys: KeySource | None = None) -> FastAPI:
    def prepare(app: FastAPI) -> None:
        app.state.verifier = verifier_for(settings, keys or JwksKeys(settings.auth_url))

    app = create_app("sessions", settings, router, prepare)
    app.add_exception_handler(fencing.GuestMigrated, _guest_migrated)
    return app


if __name__ == "__main__":
    settings = Settings()
    serve(build(settings), "sessions-api", settings, settings.sessions_port)
