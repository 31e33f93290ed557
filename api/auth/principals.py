"""Authentication: who a request comes from. The Authorization header's token (``Bearer``, or a ``Basic``
password as registry clients send it), the principal it stands for (its role and namespace grants), and the
cache that spares a query per request.

Tokens (:mod:`envyard.api.auth.tokens`) are stored as their sha256. On ``/v2/`` a request may also carry a
registry token (Docker's token auth, :mod:`envyard.api.auth.registry_tokens`): an HMAC-signed JWT naming the
envyard token it was issued to (or none: anonymous) and the repositories it may pull. Its principal is loaded
afresh (through the cache) on every request, so a revoked token's registry tokens stop working too.

Principals (with their grants) and the set of public namespaces are cached for :data:`CACHE_SECONDS`. The
replica that revokes a token, changes a grant or makes a namespace private clears its cache, so the change
holds there at once; other replicas follow within :data:`CACHE_SECONDS`. A request that cached data would
deny is checked once more against the database (see :func:`envyard.api.auth.policy.check`).

Where principals come from (the database, the cache, the secret key) is a :class:`PrincipalSource`, which
:mod:`envyard.api.deps` builds from the application; each principal keeps its source, so the policy can reload it.
"""

from __future__ import annotations

import base64
import enum
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import Engine
from sqlmodel import col, select

from envyard.api.auth.build_tokens import BuildClaims, build_token_key, verify_build_token
from envyard.api.auth.registry_tokens import is_registry_token, registry_token_key, verify_registry_token
from envyard.api.auth.tokens import TOKEN_PREFIX, hash_token
from envyard.api.db import session_scope
from envyard.api.models import ApiToken, Namespace, NamespaceGrant, NamespaceRole, Role
from envyard.builder.errors import AuthenticationError

__all__ = [
    "ANONYMOUS",
    "BEARER_ERROR",
    "CACHE_SECONDS",
    "REGISTRY_PREFIX",
    "TOKEN_HINT",
    "UNRESTRICTED",
    "Action",
    "Principal",
    "PrincipalSource",
    "TokenCache",
    "authenticate",
    "is_registry_path",
    "load_principal",
    "presented_token",
    "public_namespaces",
    "unauthenticated",
]

CACHE_SECONDS = 5.0
REGISTRY_PREFIX = "/v2/"
JOBS_PREFIX = "/api/v1/jobs/"  # the worker protocol: the only routes that take build-scoped tokens
BEARER_ERROR = "bearer_error"  # details key: the RFC 6750 error code of a registry 401 challenge
TOKEN_HINT = ("pass --token, set ENVYARD_TOKEN, or send 'Authorization: Bearer <token>' "
              "(registry clients: any user name with the token as password)")
UNRESTRICTED = frozenset({Role.ADMIN, Role.WORKER})


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    WORK = "work"
    ADMIN = "admin"


class TokenCache:
    """Token hash (or id) -> principal, and the public namespaces, for a few seconds: a request costs no query."""

    PUBLIC = "public-namespaces"

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._seconds = seconds

    def _get(self, key: str) -> Any:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _put(self, key: str, value: Any) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._seconds, value)

    def get(self, key: str) -> Principal | None:
        value = self._get(key)
        return value if isinstance(value, Principal) else None

    def put(self, key: str, principal: Principal) -> None:
        self._put(key, principal)

    def get_public(self) -> frozenset[str] | None:
        value = self._get(self.PUBLIC)
        return value if isinstance(value, frozenset) else None

    def put_public(self, names: frozenset[str]) -> None:
        self._put(self.PUBLIC, names)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True, slots=True)
class PrincipalSource:
    """Where principals are loaded from: the database, the token cache, and the secret key registry tokens are
    signed with (one per application; :func:`envyard.api.deps.principal_source` gives it to a request)."""

    engine: Engine
    cache: TokenCache
    secret_key: bytes


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token (its role and namespace grants), or nobody (``role`` None: anonymous).

    ``repositories`` is set when the request came with a registry token: the repositories it may pull.
    ``build`` is set when it came with a build-scoped worker token (:mod:`envyard.api.auth.build_tokens`): the one
    build (and attempt) it may work on.
    ``source`` is where it was loaded from (and is reloaded from when cached data would deny a request).
    """

    token_id: int | None
    name: str
    role: Role | None
    grants: Mapping[str, NamespaceRole] = field(default_factory=dict)
    repositories: frozenset[str] | None = None
    build: BuildClaims | None = None
    source: PrincipalSource | None = field(default=None, compare=False, repr=False)

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def restricted(self) -> bool:
        """Whether namespaces limit this principal (everyone but admin and worker tokens)."""
        return self.role not in UNRESTRICTED


ANONYMOUS = Principal(token_id=None, name="anonymous", role=None)


def is_registry_path(path: str) -> bool:
    return path.startswith(REGISTRY_PREFIX) or path == REGISTRY_PREFIX.rstrip("/")


def unauthenticated(request: Request, message: str, hint: str, error: str | None = None) -> AuthenticationError:
    """A 401; on /v2/ with the OCI code and (``error``) the RFC 6750 error its challenge names."""
    details: dict[str, str] = {}
    if is_registry_path(request.url.path):
        details["oci"] = "UNAUTHORIZED"
        if error:
            details[BEARER_ERROR] = error
    return AuthenticationError(message, hint=hint, details=details)


def presented_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of ``Authorization: Bearer T``, or the password of ``Basic`` (any user name), as registry
    clients (docker, podman, skopeo, containerd) send it; None without an Authorization header."""
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    password = ""
    if scheme.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            password = ""
    if not password:
        raise unauthenticated(request, "the Authorization header carries no token", TOKEN_HINT, "invalid_request")
    return password


def _from_database(source: PrincipalSource, where: Any) -> Principal | None:
    with session_scope(source.engine) as session:
        row = session.exec(select(ApiToken).where(where)).first()
        if row is None or row.revoked or row.id is None:
            return None
        role = Role(row.role)
        grants: dict[str, NamespaceRole] = {}
        if role not in UNRESTRICTED:
            rows = session.exec(
                select(Namespace.name, NamespaceGrant.role)
                .join(Namespace, col(Namespace.id) == NamespaceGrant.namespace_id)
                .where(NamespaceGrant.token_id == row.id)
            ).all()
            grants = {name: NamespaceRole(grant) for name, grant in rows}
        token_id, name = row.id, row.name
    return Principal(token_id, name, role, grants, source=source)


def load_principal(source: PrincipalSource, key: str, where: Any, fresh: bool = False) -> Principal | None:
    """The principal of the token row ``where`` selects, through the cache under ``key`` (``fresh``: from the
    database, refreshing the cache); None for a token that is not known or revoked."""
    principal = None if fresh else source.cache.get(key)
    if principal is None:
        principal = _from_database(source, where)
        if principal is not None:
            source.cache.put(key, principal)
    return principal


def public_namespaces(source: PrincipalSource, fresh: bool = False) -> frozenset[str]:
    """Names of the namespaces an admin made public (cached like principals)."""
    names = None if fresh else source.cache.get_public()
    if names is None:
        with session_scope(source.engine) as session:
            names = frozenset(session.exec(select(Namespace.name).where(col(Namespace.public))).all())
        source.cache.put_public(names)
    return names


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None,
                 source: PrincipalSource) -> Principal:
    """The request's principal: :data:`ANONYMOUS` without credentials; 401 for credentials not known."""
    token = presented_token(request, credentials)
    if token is None:
        return replace(ANONYMOUS, source=source)
    if is_registry_token(token, TOKEN_PREFIX):
        if request.url.path.startswith(JOBS_PREFIX):
            return _build_principal(request, token, source)
        return _registry_principal(request, token, source)
    key = hash_token(token)
    principal = load_principal(source, key, ApiToken.token_sha256 == key)
    if principal is None:
        raise unauthenticated(request, "the token is not known to this server or was revoked",
                              "use the admin token in <data-dir>/admin-token or ask an admin for a new token",
                              "invalid_token")
    return principal


def _build_principal(request: Request, token: str, source: PrincipalSource) -> Principal:
    claims = verify_build_token(build_token_key(source.secret_key), token)
    if claims is None:
        raise unauthenticated(request, "the build token is invalid or expired",
                              "build tokens are valid for one build attempt; the launcher issues a new one per Job",
                              "invalid_token")
    return Principal(None, f"build-{claims.build_id}-attempt-{claims.attempt}", Role.WORKER, build=claims,
                     source=source)


def _registry_principal(request: Request, token: str, source: PrincipalSource) -> Principal:
    if not is_registry_path(request.url.path):
        raise unauthenticated(request, "registry tokens are accepted only on /v2/",
                              "send an envyard token (ey_...) to the API")
    claims = verify_registry_token(registry_token_key(source.secret_key), token)
    if claims is None:
        raise unauthenticated(request, "the registry token is invalid or expired",
                              "log in again: registry clients fetch a new token from /v2/token", "invalid_token")
    if claims.subject is None:
        return replace(ANONYMOUS, repositories=claims.repositories, source=source)
    principal = load_principal(source, f"id:{claims.subject}", col(ApiToken.id) == claims.subject)
    if principal is None:
        raise unauthenticated(request, "the registry token was issued to a token that is revoked",
                              "ask an admin for a new token and log in with it", "invalid_token")
    return replace(principal, repositories=claims.repositories)
