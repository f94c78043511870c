"""Users and guests: signing up, checking passwords, creating guests."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import guests, users
from shared.errors import ApiError

_hasher = PasswordHasher()
# Checked against when the email is unknown, so both answers take the same time.
_UNKNOWN_USER_HASH = _hasher.hash(uuid.uuid4().hex)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _password_matches(stored: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def create_user(session: AsyncSession, email: str, password_hash: str) -> dict:
    """Insert a user; a taken email (in any letter case) is a 409."""
    user_id = uuid.uuid4()
    statement = (
        insert(users)
        .values(id=user_id, email=normalise_email(email), password_hash=password_hash)
        .on_conflict_do_nothing(index_elements=[users.c.email])
        .returning(users.c.id, users.c.email, users.c.created_at)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        raise ApiError(409, "email_taken", "an account with this email exists; log in instead")
    return dict(row._mapping)


async def authenticate(session: AsyncSession, email: str, password: str) -> dict:
    """The user with this email and password; the same 401 for a wrong email or password."""
    row = (
        await session.execute(
            select(users.c.id, users.c.email, users.c.created_at, users.c.password_hash).where(
                users.c.email == normalise_email(email)
            )
        )
    ).first()
    stored = row.password_hash if row else _UNKNOWN_USER_HASH
    if not await _password_matches(stored, password) or row is None:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    return {"id": row.id, "email": row.email, "created_at": row.created_at}


async def find_user(session: AsyncSession, user_id: uuid.UUID) -> dict | None:
    row = (
        await session.execute(
            select(users.c.id, users.c.email, users.c.created_at).where(users.c.id == user_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def create_guest(session: AsyncSession, lifetime: timedelta) -> dict:
    guest_id = uuid.uuid4()
    expires_at = datetime.now(UTC).replace(microsecond=0) + lifetime
    await session.execute(guests.insert().values(id=guest_id, expires_at=expires_at))
    return {"id": guest_id, "expires_at": expires_at}

