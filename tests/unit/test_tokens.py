"""Tokens that lie (C08) and clocks that disagree (C09): each refused, each for its reason."""

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.auth import keys
from shared.tokens import ALGORITHM, InvalidToken, StaticKeys, Verifier

ISSUER, AUDIENCE, LEEWAY = "guest-migration-auth", "guest-migration", 10


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> keys.SigningKey:
    return keys.load_or_create(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def verifier(key) -> Verifier:
    return Verifier(StaticKeys(key.verification_keys()), ISSUER, AUDIENCE, LEEWAY)


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "kind": "user",
            "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: keys.SigningKey, body: dict, **header) -> str:
    return jwt.encode(body, key.private_pem, algorithm=ALGORITHM,
                      headers={"kid": key.kid, **header})


async def test_a_token_auth_signed_is_accepted(key, verifier):
    body = claims(kind="guest")
    caller = await verifier.verify(sign(key, body))
    assert caller.kind == "guest" and str(caller.id) == body["sub"]


async def test_alg_none_is_refused(key, verifier):
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "none", "kid": key.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    with pytest.raises(InvalidToken):
        await verifier.verify(f"{header.decode()}.{payload.decode()}.")


async def test_a_token_signed_with_another_key_is_refused(key, verifier):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    forged = jwt.encode(claims(), pem, algorithm=ALGORITHM, headers={"kid": key.kid})
    with pytest.raises(InvalidToken):
        await verifier.verify(forged)


async def test_hs256_keyed_with_the_public_key_is_refused(key, verifier):
    public_pem = serialization.load_pem_private_key(key.private_pem, None).public_key() \
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    segments = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, claims())
    ]
    signature = hmac.new(public_pem, b".".join(segments), hashlib.sha256).digest()
    token = b".".join([*segments, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


@pytest.mark.parametrize("overrides", [
    {"exp": None}, {"aud": "someone-else"}, {"iss": "someone-else"}, {"kind": "admin"},
    {"sub": "not-a-uuid"}, {"iat": None}, {"sub": str(uuid.uuid4()).upper()},
    {"sub": "{" + str(uuid.uuid4()) + "}"}, {"sub": 12},
])
async def test_tokens_missing_or_misnaming_a_claim_are_refused(key, verifier, overrides):
    with pytest.raises(InvalidToken):
        await verifier.verify(sign(key, claims(**overrides)))


async def test_a_guest_token_where_a_user_token_is_required_and_the_reverse(key, verifier):
    with pytest.raises(InvalidToken, match="guest token where a user"):
        await verifier.verify(sign(key, claims(kind="guest")), "user")
    with pytest.raises(InvalidToken, match="user token where a guest"):
        await verifier.verify(sign(key, claims(kind="user")), "guest")


@pytest.mark.parametrize("iat_offset, exp_offset, accepted", [
    (2, 300, True),       # issued 2 s ahead: within the leeway
    (120, 300, False),    # issued 2 minutes ahead
    (-300, -5, True),     # expired 5 s ago: within the leeway
    (-300, -60, False),   # expired a minute ago
])
async def test_clock_skew_is_tolerated_only_within_the_leeway(
    key, verifier, iat_offset, exp_offset, accepted
):
    now = int(time.time())
    token = sign(key, claims(iat=now + iat_offset, exp=now + exp_offset))
    if accepted:
        assert (await verifier.verify(token)).kind == "user"
    else:
        with pytest.raises(InvalidToken):
            await verifier.verify(token)


async def test_garbage_is_refused(verifier):
    for token in ("", "abc", "a.b.c", "x" * 5000):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)


def test_the_signing_key_is_made_once_and_kept(tmp_path):
    first = keys.load_or_create(tmp_path)
    second = keys.load_or_create(tmp_path)
    assert first == second
    assert (tmp_path / keys.KEY_FILE).stat().st_mode & 0o077 == 0
