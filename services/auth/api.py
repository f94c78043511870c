"""auth's HTTP API and its process entry (``python -m services.auth.api``)."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.auth import accounts, keys, migration
from shared.api import DbSession, create_app, serve
from shared.asyncapi import document as asyncapi_document
from shared.errors import ApiError, not_found
from shared.events import ALL_EVENTS
from shared.identity import CurrentUser, verify
from shared.settings import Settings
from shared.tokens import StaticKeys, verifier_for

PREFIX = "/api/v1/auth"
# No white space or control characters anywhere: PostgreSQL refuses NUL in text, and nobody's
# address holds a tab.
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Credentials(Strict):
    email: Annotated[str, Field(min_length=3, max_length=254)]
    password: Annotated[str, Field(min_length=8, max_length=128)]
    guest_token: Annotated[str | None, Field(max_length=4096)] = None

    @field_validator("email")
    @classmethod
    def _looks_like_email(cls, value: str) -> str:
        if not EMAIL.fullmatch(value.strip()):
            raise ValueError("not an email address")
        return value.strip()


class GuestClaim(Strict):
    guest_token: Annotated[str, Field(min_length=1, max_length=4096)]


class User(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


class MigrationRef(BaseModel):
    migration_id: uuid.UUID | None = None
    status: Literal["pending", "completed", "failed", "refused"]
    status_url: str | None = None
    reason: str | None = None


class Session(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user: User
    migration: MigrationRef | None = None


class Guest(BaseModel):
    guest_id: uuid.UUID
    guest_token: str
    expires_at: datetime


router = APIRouter(prefix=PREFIX, tags=["auth"])


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _mint(request: Request, kind, subject: uuid.UUID, expires_at: datetime) -> str:
    settings = _settings(request)
    return keys.mint(request.app.state.signing_key, kind=kind, subject=subject,
                     expires_at=expires_at, issuer=settings.token_issuer,
                     audience=settings.token_audience)


def _ref(claim: migration.Claim) -> MigrationRef:
    return MigrationRef(migration_id=claim.migration_id, status=claim.status,
                        status_url=f"{PREFIX}/migrations/{claim.migration_id}")


async def _guest_of(request: Request, token: str) -> uuid.UUID:
    try:
        return (await verify(request, token, "guest")).id
    except ApiError as exc:
        raise ApiError(401, "invalid_guest_token",
                       exc.message.replace("invalid token", "invalid guest token")) from None


async def _claim_within(session, guest_id: uuid.UUID | None, user_id: uuid.UUID,
                        refuse: bool) -> MigrationRef | None:
    """Claim the guest in the open transaction; ``refuse`` turns a conflict into a 409."""
    if guest_id is None:
        return None
    try:
        return _ref(await migration.claim(session, guest_id, user_id))
    except migration.GuestClaimed:
        if refuse:
            raise ApiError(409, "guest_claimed", "this guest belongs to another account") from None
        return MigrationRef(status="refused", reason="this guest belongs to another account")
    except migration.GuestUnknown:
        if refuse:
            raise ApiError(410, "guest_gone", "this guest no longer exists") from None
        return MigrationRef(status="refused", reason="this guest no longer exists")


def _session_for(request: Request, user: dict, ref: MigrationRef | None) -> Session:
    expires_at = datetime.now(UTC) + timedelta(minutes=_settings(request).access_token_minutes)
    return Session(access_token=_mint(request, "user", user["id"], expires_at),
                   expires_at=expires_at, user=User(**user), migration=ref)


@router.post("/guest", status_code=201)
async def new_guest(request: Request, session: DbSession) -> Guest:
    """Start working as a guest; keep the guest token, it is the only proof of the guest."""
    async with session.begin():
        guest = await accounts.create_guest(
            session, timedelta(days=_settings(request).guest_token_days)
        )
    token = _mint(request, "guest", guest["id"], guest["expires_at"])
    return Guest(guest_id=guest["id"], guest_token=token, expires_at=guest["expires_at"])


@router.post("/signup", status_code=201, response_model_exclude_none=True)
async def signup(body: Credentials, request: Request, session: DbSession) -> Session:
    """Create an account; with a guest token, the guest's work starts moving to it."""
    guest_id = await _guest_of(request, body.guest_token) if body.guest_token else None
    password_hash = await accounts.hash_password(body.password)
    async with session.begin():
        user = await accounts.create_user(session, body.email, password_hash)
        ref = await _claim_within(session, guest_id, user["id"], refuse=False)
    return _session_for(request, user, ref)


@router.post("/login", response_model_exclude_none=True)
async def login(body: Credentials, request: Request, session: DbSession) -> Session:
    """Log in; with a guest token, the guest's work starts moving to the account."""
    guest_id = await _guest_of(request, body.guest_token) if body.guest_token else None
    async with session.begin():
        user = await accounts.authenticate(session, body.email, body.password)
        ref = await _claim_within(session, guest_id, user["id"], refuse=False)
    return _session_for(request, user, ref)


@router.post("/migrate-guest", status_code=202)
async def migrate_guest(body: GuestClaim, caller: CurrentUser, request: Request,
                        session: DbSession) -> MigrationRef:
    """Move a guest's work to the calling user; the same guest again returns the same migration."""
    guest_id = await _guest_of(request, body.guest_token)
    async with session.begin():
        return await _claim_within(session, guest_id, caller.id, refuse=True)


@router.get("/migrations/{migration_id}")
async def migration_status(migration_id: uuid.UUID, caller: CurrentUser,
                           session: DbSession) -> dict:
    """A migration's status, each step's state and counts, and the summary once completed."""
    async with session.begin():
        answer = await migration.status(session, migration_id, caller.id)
    if answer is None:
        raise not_found("migration")
    return answer


@router.get("/me")
async def me(caller: CurrentUser, session: DbSession) -> User:
    """The calling user."""
    async with session.begin():
        user = await accounts.find_user(session, caller.id)
    if user is None:
        raise ApiError(401, "invalid_token", "token names no user")
    return User(**user)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    """The public keys that verify every token auth signs."""
    return JSONResponse({"keys": [request.app.state.signing_key.public_jwk]},
                        headers={"Cache-Control": "public, max-age=300"})


@router.get("/asyncapi.json")
async def asyncapi(request: Request) -> dict:
    """The migration events as an AsyncAPI 2.6 document, generated from their schemas."""
    return asyncapi_document(_settings(request).broker_namespace, ALL_EVENTS)


def build(settings: Settings) -> FastAPI:
    def prepare(app: FastAPI) -> None:
        key = keys.load_or_create(settings.key_dir)
        app.state.signing_key = key
        app.state.verifier = verifier_for(settings, StaticKeys(key.verification_keys()))

    return create_app("auth", settings, router, prepare)


if __name__ == "__main__":
    settings = Settings()
    serve(build(settings), "auth-api", settings, settings.auth_port)
