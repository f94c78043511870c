"""Verifying the tokens auth signs: user access tokens and guest tokens.

Only auth holds the private key; every service verifies with the public keys from auth's JWKS,
cached and fetched again when a token names a key id not seen yet. The algorithm is fixed
(RS256), so ``alg: none`` and HS256-with-the-public-key tokens are refused by construction.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import httpx
import jwt
from jwt import PyJWK

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
Kind = Literal["user", "guest"]
JWKS_PATH = "/api/v1/auth/.well-known/jwks.json"
REFETCH_MIN_SECONDS = 30.0


@dataclass(frozen=True)
class Caller:
    kind: Kind
    id: uuid.UUID
    token_id: str | None = None

    @property
    def is_guest(self) -> bool:
        return self.kind == "guest"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong kind; the reason says which."""


class KeySource:
    """Public keys by key id. ``static`` for auth itself; ``JwksKeys`` for the other services."""

    async def key(self, kid: str) -> PyJWK:
        raise NotImplementedError


class StaticKeys(KeySource):
    def __init__(self, keys: dict[str, PyJWK]) -> None:
        self._keys = keys

    async def key(self, kid: str) -> PyJWK:
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken("signed with an unknown key") from None


class JwksKeys(KeySource):
    def __init__(self, auth_url: str, timeout: float = 5.0) -> None:
        self._url = auth_url.rstrip("/") + JWKS_PATH
        self._timeout = timeout
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.get(self._url)
            response.raise_for_status()
        keys = {}
        for entry in response.json().get("keys", []):
            if entry.get("kty") == "RSA" and entry.get("kid"):
                keys[entry["kid"]] = PyJWK(entry, algorithm=ALGORITHM)
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("public keys fetched", extra={"keys": len(keys)})

    async def key(self, kid: str) -> PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < REFETCH_MIN_SECONDS and self._keys
            if kid not in self._keys and not fresh:
                try:
                    await self._refresh()
                except (httpx.HTTPError, ValueError) as exc:
                    log.warning("cannot fetch public keys", extra={"error": repr(exc)})
                    raise KeysUnavailable() from exc
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken("signed with an unknown key") from None


class KeysUnavailable(Exception):
    """auth's JWKS could not be read, so no token can be checked right now."""


class Verifier:
    def __init__(self, keys: KeySource, issuer: str, audience: str, leeway: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str, expect: Kind | None = None) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("not a token") from exc
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise InvalidToken("unexpected signing algorithm or key")
        key = await self._keys.key(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "kind"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("issued in the future") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"rejected: {exc}") from exc
        kind = claims.get("kind")
        if kind not in ("user", "guest"):
            raise InvalidToken("unknown token kind")
        if claims["iat"] > time.time() + self._leeway:
            raise InvalidToken("issued in the future")
        if expect is not None and kind != expect:
            raise InvalidToken(f"a {kind} token where a {expect} token is required")
        try:
            subject = uuid.UUID(claims["sub"])
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidToken("malformed subject") from exc
        if claims["sub"] != str(subject):
            # One id, one spelling: it names folders and rows, so no second form is accepted.
            raise InvalidToken("subject is not a canonical id")
        return Caller(kind=kind, id=subject, token_id=claims.get("jti"))


def verifier_for(settings, keys: KeySource) -> Verifier:
    """The verifier every service uses, with the issuer, audience and leeway of ``settings``."""
    return Verifier(keys, settings.token_issuer, settings.token_audience,
                    settings.token_leeway_seconds)
