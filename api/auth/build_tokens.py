"""Build-scoped worker tokens: short-lived HS256 JWTs that let one process claim, heartbeat, upload and complete
ONE attempt of ONE build, and nothing else.

The Kubernetes build backend (:mod:`envyard.api.build_backends`) gives each build Job such a token (through a
Secret): a pod that is compromised, or outlives its Job, can act on its own build only, and only until the token
expires. They are signed with a key derived from the server's secret key (like registry tokens,
:mod:`envyard.api.auth.registry_tokens`), so every replica verifies them without a database row, and rotating the
secret key invalidates them all. They are accepted only on the worker protocol (``/api/v1/jobs/...``).

>>> key = build_token_key(b"s" * 32)
>>> claims = verify_build_token(key, sign_build_token(key, 7, 2, seconds=60))
>>> (claims.build_id, claims.attempt)
(7, 2)
>>> verify_build_token(build_token_key(b"x" * 32), sign_build_token(key, 7, 2)) is None
True
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from envyard.api.auth.secret_key import derive_key

__all__ = ["BUILD_TOKEN_AUDIENCE", "BuildClaims", "build_token_key", "sign_build_token", "verify_build_token"]

ALGORITHM = "HS256"
ISSUER = "envyard"
BUILD_TOKEN_AUDIENCE = "envyard-build"


@dataclass(frozen=True, slots=True)
class BuildClaims:
    """What a build token allows: work on build ``build_id``, claiming it only as attempt ``attempt``."""

    build_id: int
    attempt: int
    expires_at: int


def build_token_key(secret: bytes) -> bytes:
    return derive_key(secret, "build-token")


def sign_build_token(key: bytes, build_id: int, attempt: int, *, seconds: int = 3600,
                     issued_at: int | None = None) -> str:
    """A compact JWT for ``attempt`` of build ``build_id``, valid ``seconds``."""
    now = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": ISSUER, "aud": BUILD_TOKEN_AUDIENCE, "sub": f"build:{build_id}", "build": build_id,
              "attempt": attempt, "iat": now, "nbf": now, "exp": now + seconds, "jti": secrets.token_hex(8)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_build_token(key: bytes, token: str, now: float | None = None) -> BuildClaims | None:
    """The claims of an unexpired build token this server signed; None for anything else (registry tokens
    included: another audience and key)."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=BUILD_TOKEN_AUDIENCE, issuer=ISSUER,
                            options={"require": ["exp", "iat", "build", "attempt"], "verify_exp": False})
        build_id, attempt, expires_at = int(claims["build"]), int(claims["attempt"]), int(claims["exp"])
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        return None
    if expires_at <= (time.time() if now is None else now):
        return None
    return BuildClaims(build_id, attempt, expires_at)
