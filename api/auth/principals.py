"""Authentication: who a request comes from. The Authorization header's token (``Bearer``, or a ``Basic``
password as registry clients send it), the principal it stands for (its role, its owner, the role bindings that
apply to it), and the cache that spares most queries per request.

Tokens (:mod:`envyard.api.auth.tokens`) are stored as a keyed hash. A token may belong to a user or a service
account (:class:`~envyard.api.models.User`), whose groups and role bindings then apply to it, and may be limited
(expiry, namespaces, highest role, read-only). On ``/v2/`` a request may also carry a registry token (Docker's
token auth, :mod:`envyard.api.auth.registry_tokens`): an HMAC-signed JWT naming the envyard token it was issued to
(or none: anonymous) and the repositories it may pull. Its principal is loaded afresh (through the cache) on every
request, so a revoked token's registry tokens stop working too.

Principals and the set of public namespaces are cached for :data:`CACHE_SECONDS`, within one access epoch
(:func:`current_epoch`: the newest audit event's id; every change of access is audited). Each request reads the
epoch (one indexed query) and a cache of an older epoch is dropped, so a revocation or a removed binding holds on
every replica at once; an expiry holds at once because the principal carries its expiry time. A request that
cached data would deny is checked once more against the database (see :func:`envyard.api.auth.policy.check`).

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
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from envyard.api.auth.bindings import Binding
from envyard.api.auth.build_tokens import BuildClaims, build_token_key, verify_build_token
from envyard.api.auth.registry_tokens import is_registry_token, registry_token_key, verify_registry_token
from envyard.api.auth.tokens import HMAC_SCHEME, LEGACY_SCHEME, TOKEN_PREFIX, hash_token, token_key, upgrade_hash
from envyard.api.db import session_scope
from envyard.api.models import (
    ApiToken,
    AuditEvent,
    GroupMembership,
    Namespace,
    NamespaceGrant,
    NamespaceRole,
    Role,
    RoleBinding,
    User,
)
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
    "bindings_of",
    "current_epoch",
    "groups_of",
    "is_registry_path",
    "load_principal",
    "presented_token",
    "principal_of",
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
        self._epoch = -1

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

    def sync(self, epoch: int) -> None:
        """Forget everything cached in an older access epoch (see :func:`current_epoch`)."""
        with self._lock:
            if self._epoch != epoch:
                self._entries.clear()
                self._epoch = epoch


@dataclass(frozen=True, slots=True)
class PrincipalSource:
    """Where principals are loaded from: the database, the token cache, and the secret key registry tokens are
    signed with and API tokens hashed with (one per application; :func:`envyard.api.deps.principal_source` gives
    it to a request). ``global_namespace``: the curated namespace every signed-in caller reads."""

    engine: Engine
    cache: TokenCache
    secret_key: bytes
    global_namespace: str = "global"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token (its role, its owner and the bindings that apply to it), or nobody (``role`` None:
    anonymous).

    ``grants``: the token's namespace grants (also among ``bindings``, as ``namespace/*``). ``user``, ``kind``
    (``token``: an admin-made token without owner, ``user``, ``service``) and ``groups``: the owner. ``max_role``,
    ``read_only``, ``scope`` (namespace globs) and ``expires_at``: the token's limits.
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
    user: str | None = None
    user_id: int | None = None
    kind: str = "token"
    groups: frozenset[str] = frozenset()
    bindings: tuple[Binding, ...] = ()
    max_role: NamespaceRole | None = None
    read_only: bool = False
    scope: tuple[str, ...] | None = None
    expires_at: datetime | None = None

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def restricted(self) -> bool:
        """Whether namespaces limit this principal (everyone but admin and worker tokens)."""
        return self.role not in UNRESTRICTED

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


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


def bindings_of(session: Session, token: ApiToken | None, user: User | None,
                groups: frozenset[str]) -> tuple[Binding, ...]:
    """The bindings that apply to ``token`` and its owner ``user`` (in ``groups``): the token's grants and role
    bindings, the user's and their groups' role bindings, and the user's personal namespace."""
    found: list[Binding] = []
    if token is not None and token.id is not None:
        grants = session.exec(
            select(Namespace.name, NamespaceGrant.role)
            .join(Namespace, col(Namespace.id) == NamespaceGrant.namespace_id)
            .where(NamespaceGrant.token_id == token.id)).all()
        found += [Binding(NamespaceRole(role), f"{name}/*", f"grant to token {token.id}") for name, role in grants]
    subjects = [("token", str(token.id))] if token is not None and token.id is not None else []
    if user is not None:
        subjects += [("user", user.name), *(("group", group) for group in sorted(groups))]
        if user.namespace:
            found.append(Binding(NamespaceRole.ADMIN, f"{user.namespace}/*", f"personal namespace of {user.name}"))
    for kind, subject in subjects:
        rows = session.exec(select(RoleBinding).where(RoleBinding.subject_kind == kind, RoleBinding.subject == subject)
                            .order_by(col(RoleBinding.id))).all()
        found += [Binding(NamespaceRole(row.role), row.pattern, f"{kind} {subject}", row.id) for row in rows]
    return tuple(found)


def groups_of(session: Session, user_id: int) -> frozenset[str]:
    return frozenset(session.exec(select(GroupMembership.group).where(GroupMembership.user_id == user_id)).all())


def _capped(role: Role, bindings: tuple[Binding, ...], max_role: NamespaceRole | None, read_only: bool,
            scope: tuple[str, ...] | None) -> Role:
    """A user's token with an admin binding on ``*/*`` (and no limit below that) is an admin token."""
    if role != Role.USER or read_only or scope is not None or max_role not in (None, NamespaceRole.ADMIN):
        return role
    everything = any(b.role == NamespaceRole.ADMIN and b.pattern == "*/*" for b in bindings)
    return Role.ADMIN if everything else role


def principal_of(session: Session, row: ApiToken | None, user: User | None,
                 source: PrincipalSource | None) -> Principal:
    """The principal of token ``row`` (owned by ``user``), or of ``user`` alone (``row`` None: what the user's
    bindings allow, for ``envyard access check``)."""
    groups = groups_of(session, user.id) if user is not None and user.id is not None else frozenset()
    bindings = bindings_of(session, row, user, groups)
    grants = {b.pattern[:-2]: b.role for b in bindings if b.via.startswith("grant to token")}
    max_role = NamespaceRole(row.max_role) if row is not None and row.max_role else None
    read_only = bool(row is not None and row.read_only)
    scope = tuple(row.namespaces) if row is not None and row.namespaces is not None else None
    role = Role(row.role) if row is not None else Role.USER
    return Principal(
        row.id if row is not None else None, row.name if row is not None else (user.name if user else "?"),
        _capped(role, bindings, max_role, read_only, scope), grants, source=source,
        user=user.name if user is not None else None, user_id=user.id if user is not None else None,
        kind=user.kind if user is not None else "token", groups=groups, bindings=bindings, max_role=max_role,
        read_only=read_only, scope=scope, expires_at=row.expires_at if row is not None else None)


def _from_database(source: PrincipalSource, where: Any) -> Principal | None:
    with session_scope(source.engine) as session:
        row = session.exec(select(ApiToken).where(where)).first()
        if row is None or row.revoked or row.id is None:
            return None
        user = session.get(User, row.user_id) if row.user_id is not None else None
        if user is not None and user.disabled:
            return None
        return principal_of(session, row, user, source)


def current_epoch(engine: Engine) -> int:
    """The access epoch: the id of the newest audit event. Every change of access (a token revoked, a binding or
    grant changed, a namespace made private) is audited, so a cache of another epoch is stale."""
    with session_scope(engine) as session:
        return int(session.exec(select(func.max(AuditEvent.id))).one() or 0)


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
    """The request's principal: :data:`ANONYMOUS` without credentials; 401 for credentials not known, revoked or
    expired. The cache is checked against the access epoch first (one small query), so a token revoked on
    another replica is refused here at once."""
    token = presented_token(request, credentials)
    source.cache.sync(current_epoch(source.engine))
    if token is None:
        return replace(ANONYMOUS, source=source)
    if is_registry_token(token, TOKEN_PREFIX):
        if request.url.path.startswith(JOBS_PREFIX):
            return _build_principal(request, token, source)
        return _registry_principal(request, token, source)
    key = token_key(source.secret_key)
    digest = hash_token(token, key)
    principal = load_principal(source, digest, (col(ApiToken.token_sha256) == digest)
                               & (col(ApiToken.hash_scheme) == HMAC_SCHEME))
    if principal is None:  # a token from before keyed hashes: rehash it
        legacy = _from_database(source, (col(ApiToken.token_sha256) == hash_token(token))
                                & (col(ApiToken.hash_scheme) == LEGACY_SCHEME))
        if legacy is not None:
            upgrade_hash(source.engine, token, key)
            principal = legacy
    if principal is None:
        raise unauthenticated(request, "the token is not known to this server or was revoked",
                              "use the admin token in <data-dir>/admin-token or ask an admin for a new token",
                              "invalid_token")
    return _unexpired(request, principal)


def _unexpired(request: Request, principal: Principal) -> Principal:
    if principal.expired:
        assert principal.expires_at is not None
        raise unauthenticated(request, f"the token '{principal.name}' expired at "
                              f"{principal.expires_at.isoformat(timespec='seconds')}",
                              "create a new one (envyard token create) or sign in again (envyard login)",
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
    return replace(_unexpired(request, principal), repositories=claims.repositories)
