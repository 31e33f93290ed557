"""Tokens and the one authorization dependency every route goes through.

Tokens are random strings shown once; the database keeps their sha256. A token has a
role, and a role allows a set of actions. ``/healthz`` and ``/readyz`` are the only
routes without a token.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session, select

from api.db import session_scope
from api.models import ApiToken, Role
from builder.errors import AuthenticationError, PermissionDeniedError

TOKEN_PREFIX = "ey_"
CACHE_SECONDS = 5.0


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    WORK = "work"
    ADMIN = "admin"


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.USER: frozenset({Action.READ, Action.WRITE}),
    Role.READER: frozenset({Action.READ}),
    Role.WORKER: frozenset({Action.READ, Action.WORK}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(session: Session, name: str, role: Role) -> str:
    """A new token (returned once, in clear) with ``role``."""
    token = new_token()
    session.add(ApiToken(name=name, token_sha256=hash_token(token), role=role))
    session.flush()
    return token


def ensure_admin_token(engine: Engine, path: Path) -> str:
    """The admin token in ``path`` (mode 600); a new one is created when the file is absent or not known."""
    if path.exists():
        token = path.read_text().strip()
        with session_scope(engine) as session:
            row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).first()
            if row is not None and not row.revoked and row.role == Role.ADMIN:
                return token
    with session_scope(engine) as session:
        token = create_token(session, "admin (created by envyard serve)", Role.ADMIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token


class TokenCache:
    """Token hash -> principal for a few seconds, so a request costs no token query."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + CACHE_SECONDS, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_bearer = HTTPBearer(auto_error=False)


def presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of ``Authorization: Bearer T``, or the password of ``Basic`` (any user name), as registry
    clients (docker, podman, skopeo, containerd) send it."""
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return None


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    token = presented_token(request, credentials)
    if token is None:
        raise AuthenticationError(
            "this route needs a token",
            hint="pass --token, set ENVYARD_TOKEN, or send 'Authorization: Bearer <token>' "
            "(registry clients: any user name with the token as password)",
        )
    key = hash_token(token)
    cache: TokenCache = request.app.state.token_cache
    principal = cache.get(key)
    if principal is not None:
        return principal
    with Session(request.app.state.engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == key)).first()
    if row is None or row.revoked or row.id is None:
        raise AuthenticationError(
            "the token is not known to this server or was revoked",
            hint="use the admin token in <data-dir>/admin-token or ask an admin for a new token",
        )
    principal = Principal(row.id, row.name, Role(row.role))
    cache.put(key, principal)
    return principal


def authorize(action: Action) -> Callable[..., Principal]:
    """The dependency on every route: the caller's principal, if its role allows ``action``."""

    def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        principal = authenticate(request, credentials)
        if action not in ALLOWED[principal.role]:
            raise PermissionDeniedError(
                f"a {principal.role} token may not {action}", hint="ask an admin for a token with a wider role"
            )
        return principal

    dependency.__name__ = f"authorize_{action}"
    return dependency
