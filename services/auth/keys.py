"""auth's signing key: generated on first start, kept under ``key_dir`` (never in git).

Every replica of auth loads the same file; the first to start writes it atomically, so two
replicas starting together still end up with one key.
"""

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK
from jwt.algorithms import RSAAlgorithm

from shared.tokens import ALGORITHM, Kind

log = logging.getLogger(__name__)

KEY_FILE = "signing-key.pem"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes

    @property
    def public_jwk(self) -> dict:
        private = serialization.load_pem_private_key(self.private_pem, password=None)
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def verification_keys(self) -> dict[str, PyJWK]:
        return {self.kid: PyJWK(self.public_jwk, algorithm=ALGORITHM)}


def load_or_create(key_dir: Path) -> SigningKey:
    path = key_dir / KEY_FILE
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = key_dir / f".{KEY_FILE}.{uuid.uuid4().hex}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(temporary, path)
            log.info("signing key generated", extra={"path": str(path)})
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    pem = path.read_bytes()
    kid = hashlib.sha256(pem).hexdigest()[:16]
    return SigningKey(kid=kid, private_pem=pem)


def mint(
    key: SigningKey,
    *,
    kind: Kind,
    subject: uuid.UUID,
    expires_at: datetime,
    issuer: str,
    audience: str,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": str(subject),
        "kind": kind,
        "iat": now,
        "nbf": now,
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid})
