"""Registry tokens of Docker's token auth: short-lived HS256 JWTs naming the envyard token they were issued
to (or none: anonymous) and the repositories they may pull. ``GET /v2/token`` (:mod:`envyard.api.distribution.access`)
signs them; :mod:`envyard.api.auth.principals` verifies them on ``/v2/`` requests.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass

import jwt

from envyard.api.auth.secret_key import derive_key

__all__ = ["ALGORITHM", "REGISTRY_SERVICE", "REGISTRY_TOKEN_SECONDS", "RegistryClaims", "is_registry_token",
           "registry_token_key", "sign_registry_token", "verify_registry_token"]

REGISTRY_SERVICE = "envyard"
REGISTRY_TOKEN_SECONDS = 300
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class RegistryClaims:
    subject: int | None  # the envyard token's id; None: issued without credentials
    repositories: frozenset[str]  # pullable
    issued_at: int
    expires_at: int


def registry_token_key(secret: bytes) -> bytes:
    return derive_key(secret, "registry-token")


def is_registry_token(token: str, api_token_prefix: str) -> bool:
    """Whether ``token`` looks like a JWT rather than an envyard API token."""
    return not token.startswith(api_token_prefix) and token.count(".") == 2


def sign_registry_token(key: bytes, subject: int | None, repositories: Collection[str], *,
                        issued_at: int | None = None, seconds: int = REGISTRY_TOKEN_SECONDS) -> str:
    """A compact JWT with the Docker token claims: ``sub``, ``aud`` (the service) and ``access``."""
    now = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": REGISTRY_SERVICE, "sub": "anonymous" if subject is None else str(subject),
              "aud": REGISTRY_SERVICE, "iat": now, "nbf": now, "exp": now + seconds, "jti": secrets.token_hex(8),
              "access": [{"type": "repository", "name": name, "actions": ["pull"]} for name in sorted(repositories)]}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_registry_token(key: bytes, token: str, now: float | None = None) -> RegistryClaims | None:
    """The claims of a token this server signed and that has not expired; None for anything else
    (another algorithm, ``alg: none`` included, a bad signature, a wrong audience or issuer, expired)."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=REGISTRY_SERVICE, issuer=REGISTRY_SERVICE,
                            options={"require": ["exp", "iat", "sub", "access"], "verify_exp": False})
        subject = None if claims["sub"] == "anonymous" else int(claims["sub"])
        repositories = frozenset(str(a["name"]) for a in claims["access"]
                                 if a.get("type") == "repository" and "pull" in a.get("actions", ()))
        issued_at, expires_at = int(claims["iat"]), int(claims["exp"])
    except (jwt.PyJWTError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if expires_at <= (time.time() if now is None else now):
        return None
    return RegistryClaims(subject, repositories, issued_at, expires_at)
