"""Tokens, principals and the one authorization dependency every route goes through.

Tokens (:mod:`api.tokens`) are stored as their sha256. A token has a global role, and
user and reader tokens also have a role per namespace (a :class:`~api.models.NamespaceGrant`):

* ``admin``: everything; ``worker``: read and work everywhere (a remote worker reads any build);
* ``user`` and ``reader``: on namespace N what their grant allows (viewer: read; editor: read and write;
  a reader token never writes, whatever its grant). A user token that creates a namespace is its editor;
* a namespace an admin made public is readable by everyone, requests without credentials included.
  ``/healthz`` and ``/readyz`` are the only other routes served without a token, with the documentation
  (``/docs``, ``/redoc``, ``/openapi.json``) where ``ServiceSettings.public_docs`` opens it (see api/openapi.py).

:func:`authorize` finds the namespace a request concerns in its path parameters (``namespace``; the
registry's ``name``, ``<namespace>/<environment>``; ``build_id`` and ``other_id``; the digest of
``/api/v1/blobs``); routes without one check the role only and list only what the caller may read
(:func:`readable_namespaces`). A namespace given in a request body is checked with :func:`require`.

On ``/v2/`` a request may also carry a registry token (Docker's token auth: ``GET /v2/token``, see
``registry/token_auth.py``): an HMAC-signed JWT naming the envyard token it was issued to (or none:
anonymous) and the repositories it may pull (:mod:`api.registry_tokens`). Its principal is loaded
afresh (through the cache) on every request, so a revoked token's registry tokens stop working too.

Principals (with their grants) and the set of public namespaces are cached for :data:`CACHE_SECONDS`. The
replica that revokes a token, changes a grant or makes a namespace private clears its cache, so the change
holds there at once; other replicas follow within :data:`CACHE_SECONDS`. A request that cached data would
deny is checked once more against the database, so new grants and newly public namespaces work at once.
"""

from __future__ import annotations

import base64
import enum
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from api.models import ApiToken, Build, BuildArtifact, Environment, Namespace, NamespaceGrant, NamespaceRole, Role
from api.registry_tokens import (
    is_registry_token,
    registry_token_key,
    verify_registry_token,
)
from api.tokens import TOKEN_PREFIX, hash_token
from builder.errors import AuthenticationError, EnvyardError, PermissionDeniedError

CACHE_SECONDS = 5.0
REGISTRY_PREFIX = "/v2/"
BEARER_ERROR = "bearer_error"  # details key: the RFC 6750 error code of a registry 401 challenge
TOKEN_HINT = ("pass --token, set ENVYARD_TOKEN, or send 'Authorization: Bearer <token>' "
              "(registry clients: any user name with the token as password)")


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
UNRESTRICTED = frozenset({Role.ADMIN, Role.WORKER})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token (its role and namespace grants), or nobody (``role`` None: anonymous).

    ``repositories`` is set when the request came with a registry token: the repositories it may pull.
    """

    token_id: int | None
    name: str
    role: Role | None
    grants: Mapping[str, NamespaceRole] = field(default_factory=dict)
    repositories: frozenset[str] | None = None

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def restricted(self) -> bool:
        """Whether namespaces limit this principal (everyone but admin and worker tokens)."""
        return self.role not in UNRESTRICTED

    def allows(self, action: Action, namespace: str | None, public: Collection[str] = ()) -> bool:
        """What the token's role and grants allow on ``namespace`` (None: a route without one)."""
        if self.role is None:
            return action == Action.READ and namespace is not None and namespace in public
        if action not in ALLOWED[self.role]:
            return False
        if namespace is None or not self.restricted:
            return True
        grant = self.grants.get(namespace)
        if action == Action.READ:
            return grant is not None or namespace in public
        return action == Action.WRITE and grant == NamespaceRole.EDITOR


ANONYMOUS = Principal(token_id=None, name="anonymous", role=None)


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


_bearer = HTTPBearer(auto_error=False)


def is_registry_path(path: str) -> bool:
    return path.startswith(REGISTRY_PREFIX) or path == REGISTRY_PREFIX.rstrip("/")


def _unauthenticated(request: Request, message: str, hint: str, error: str | None = None) -> AuthenticationError:
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
        raise _unauthenticated(request, "the Authorization header carries no token", TOKEN_HINT, "invalid_request")
    return password


def _load_principal(engine: Engine, where: Any) -> Principal | None:
    with Session(engine) as session:
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
    return Principal(row.id, row.name, role, grants)


def _cached_principal(request: Request, key: str, where: Any, fresh: bool = False) -> Principal | None:
    cache: TokenCache = request.app.state.token_cache
    principal = None if fresh else cache.get(key)
    if principal is None:
        principal = _load_principal(request.app.state.engine, where)
        if principal is not None:
            cache.put(key, principal)
    return principal


def public_namespaces(request: Request, fresh: bool = False) -> frozenset[str]:
    """Names of the namespaces an admin made public (cached like principals)."""
    cache: TokenCache = request.app.state.token_cache
    names = None if fresh else cache.get_public()
    if names is None:
        with Session(request.app.state.engine) as session:
            names = frozenset(session.exec(select(Namespace.name).where(col(Namespace.public))).all())
        cache.put_public(names)
    return names


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The request's principal: :data:`ANONYMOUS` without credentials; 401 for credentials not known."""
    token = presented_token(request, credentials)
    if token is None:
        return ANONYMOUS
    if is_registry_token(token, TOKEN_PREFIX):
        return _registry_principal(request, token)
    key = hash_token(token)
    principal = _cached_principal(request, key, ApiToken.token_sha256 == key)
    if principal is None:
        raise _unauthenticated(request, "the token is not known to this server or was revoked",
                               "use the admin token in <data-dir>/admin-token or ask an admin for a new token",
                               "invalid_token")
    return principal


def _registry_principal(request: Request, token: str) -> Principal:
    if not is_registry_path(request.url.path):
        raise _unauthenticated(request, "registry tokens are accepted only on /v2/",
                               "send an envyard token (ey_...) to the API")
    claims = verify_registry_token(registry_token_key(request.app.state.secret_key), token)
    if claims is None:
        raise _unauthenticated(request, "the registry token is invalid or expired",
                               "log in again: registry clients fetch a new token from /v2/token", "invalid_token")
    if claims.subject is None:
        return replace(ANONYMOUS, repositories=claims.repositories)
    principal = _cached_principal(request, f"id:{claims.subject}", col(ApiToken.id) == claims.subject)
    if principal is None:
        raise _unauthenticated(request, "the registry token was issued to a token that is revoked",
                               "ask an admin for a new token and log in with it", "invalid_token")
    return replace(principal, repositories=claims.repositories)


# --- which namespaces a request concerns ----------------------------------------------------------------------------

Targets = list[frozenset[str]]  # every group needs one namespace the principal may act on


def _repository(request: Request) -> str | None:
    name = request.path_params.get("name") if is_registry_path(request.url.path) else None
    return str(name) if name else None


def _targets(request: Request) -> Targets | None:
    """The namespaces of the request's path parameters; None when it names none (a role-only route)."""
    params = request.path_params
    if "namespace" in params:
        return [frozenset({str(params["namespace"])})]
    repository = _repository(request)
    if repository is not None:
        return [frozenset({repository.partition("/")[0]})]
    build_ids = [params[key] for key in ("build_id", "other_id") if key in params]
    digest = None if is_registry_path(request.url.path) else params.get("digest")
    if not build_ids and digest is None:
        return None
    targets: Targets = []
    with Session(request.app.state.engine) as session:
        for value in build_ids:
            try:
                build_id = int(value)
            except ValueError:
                continue  # the route answers 422
            found = session.exec(
                select(Namespace.name).join(Environment, col(Environment.namespace_id) == Namespace.id)
                .join(Build, col(Build.environment_id) == Environment.id).where(col(Build.id) == build_id)
            ).first()
            if found is not None:
                targets.append(frozenset({found}))
        algorithm, _, hexdigest = str(digest or "").partition(":")
        if algorithm == "sha256" and hexdigest:
            names = session.exec(
                select(Namespace.name).distinct().join(Environment, col(Environment.namespace_id) == Namespace.id)
                .join(Build, col(Build.environment_id) == Environment.id)
                .join(BuildArtifact, col(BuildArtifact.build_id) == Build.id)
                .where(BuildArtifact.sha256 == hexdigest)
            ).all()
            if names:
                targets.append(frozenset(names))
    return targets


def _own(principal: Principal, action: Action, targets: Targets | None, public: Collection[str]) -> bool:
    """Whether the token behind ``principal`` (role, grants; not a registry token's scope) allows the request."""
    if targets is None:
        return principal.allows(action, None)
    if principal.anonymous and not targets:
        return False  # an unknown build or blob: nothing public to show
    return all(any(principal.allows(action, ns, public) for ns in group) for group in targets)


def _verdict(request: Request, principal: Principal, action: Action, targets: Targets | None,
             fresh: bool) -> EnvyardError | None:
    """None when ``principal`` may do ``action`` on ``targets``, else the error to answer with."""
    if principal.role is not None and action not in ALLOWED[principal.role]:
        return PermissionDeniedError(f"a {principal.role} token may not {action}",
                                     hint="ask an admin for a token with a wider role", details=_denied(request))
    public: Collection[str] = ()
    if targets and action == Action.READ and principal.restricted:
        public = public_namespaces(request, fresh)
    repository = _repository(request)
    if principal.repositories is not None and targets is None and repository is None and action == Action.READ:
        return None  # the /v2/ ping with any valid registry token
    own = _own(principal, action, targets, public)
    in_scope = principal.repositories is None or (action == Action.READ and repository in principal.repositories)
    if own and in_scope:
        return None
    named = sorted({ns for group in targets or [] for ns in group})
    if principal.anonymous and principal.repositories is None:
        where = f"namespace '{', '.join(named)}' is not public: " if named else ""
        return _unauthenticated(request, f"{where}this route needs a token", TOKEN_HINT)
    if own or principal.anonymous:
        return _unauthenticated(request, f"the registry token does not grant pull of '{repository}'",
                                "fetch a token for this repository from /v2/token", "insufficient_scope")
    return PermissionDeniedError(
        f"token '{principal.name}' may not {action} namespace '{', '.join(named)}'" if named
        else f"token '{principal.name}' may not {action} here",
        hint="ask an admin for a grant: envyard namespace grant NAMESPACE TOKEN_ID --role viewer|editor",
        details=_denied(request),
    )


def _denied(request: Request) -> dict[str, str]:
    return {"oci": "DENIED"} if is_registry_path(request.url.path) else {}


def _enforce(request: Request, principal: Principal, action: Action, targets: Targets | None) -> Principal:
    """``principal`` if allowed; a denial on cached data is checked once more against the database."""
    error = _verdict(request, principal, action, targets, fresh=False)
    if error is None:
        return principal
    if principal.role is not None and action not in ALLOWED[principal.role]:
        raise error  # roles never change
    if principal.token_id is not None and principal.restricted:
        reloaded = _cached_principal(request, f"id:{principal.token_id}", col(ApiToken.id) == principal.token_id,
                                     fresh=True)
        if reloaded is None:
            raise _unauthenticated(request, "the token was revoked", "ask an admin for a new token",
                                   "invalid_token")
        principal = replace(reloaded, repositories=principal.repositories)
    error = _verdict(request, principal, action, targets, fresh=True)
    if error is not None:
        raise error
    return principal


def authorize(action: Action, *, anonymous: bool = False) -> Callable[..., Principal]:
    """The dependency on every route: the caller's principal, if it may do ``action`` on the namespace the
    request's path names (or, naming none, if its role allows ``action``).

    ``anonymous=True`` (the registry's token endpoint): requests without credentials get :data:`ANONYMOUS`,
    the route decides what that may see; wrong credentials are still a 401.
    """

    def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        principal = authenticate(request, credentials)
        if anonymous and principal.anonymous and principal.repositories is None:
            return principal
        return _enforce(request, principal, action, _targets(request) if _scoped(principal, action) else None)

    dependency.__name__ = f"authorize_{action}"
    return dependency


def _scoped(principal: Principal, action: Action) -> bool:
    """Whether the namespaces of the request matter: a restricted principal whose role allows ``action``."""
    if not principal.restricted:
        return False
    return action == Action.READ if principal.role is None else action in ALLOWED[principal.role]


def require(request: Request, principal: Principal, action: Action, namespace: str) -> Principal:
    """The check of :func:`authorize` for a namespace named in a request body (e.g. creating an environment)."""
    return _enforce(request, principal, action, [frozenset({namespace})] if _scoped(principal, action) else None)


def may(request: Request, principal: Principal, action: Action, namespace: str) -> bool:
    """Whether ``principal`` may do ``action`` on ``namespace`` (registry token scopes aside), without raising."""
    if principal.allows(action, namespace):
        return True
    try:
        require(request, replace(principal, repositories=None), action, namespace)
    except EnvyardError:
        return False
    return True


def readable_namespaces(request: Request, principal: Principal) -> frozenset[str] | None:
    """What a listing may show: the names of the namespaces ``principal`` reads (None: all), read afresh (one
    query), so a namespace just created or granted is listed at once on every replica."""
    if not principal.restricted:
        return None
    granted = select(NamespaceGrant.namespace_id).where(NamespaceGrant.token_id == (principal.token_id or -1))
    with Session(request.app.state.engine) as session:
        return frozenset(session.exec(
            select(Namespace.name).where(col(Namespace.public) | col(Namespace.id).in_(granted))
        ).all())
