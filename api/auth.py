"""Tokens, principals, and the one authorization decision (:func:`check`) every route goes through.

Tokens (:mod:`api.tokens`) are stored as their sha256. A token has a global role, and
user and reader tokens also have a role per namespace (a :class:`~api.models.NamespaceGrant`):

* ``admin``: everything; ``worker``: read and work everywhere (a remote worker reads any build);
* ``user`` and ``reader``: on namespace N what their grant allows (viewer: read; editor: read and write;
  a reader token never writes, whatever its grant). A user token that creates a namespace is its editor;
* a namespace an admin made public is readable by everyone, requests without credentials included.
  ``/healthz`` and ``/readyz`` are the only other routes served without a token, with the documentation
  (``/docs``, ``/redoc``, ``/openapi.json``) where ``ServiceSettings.public_docs`` opens it (see api/openapi.py).

:func:`check` decides, on the resource a request names *as the route will use it*: each kind of resource has a
dependency in :mod:`api.resources` (builds, environments, namespaces, blobs, tokens; the registry's repositories in
``api/distribution/access.py``) that validates the strict ids of :mod:`api.ids`, loads the resource and then asks
:func:`check` about its namespaces. What cannot be resolved is denied (fail closed). Callers who may not read a
resource get the same 404 as for a resource that does not exist (on ``/v2/``: DENIED alike), anonymous callers a
401; routes that name no resource check the role only (:func:`authorize`) and list only what the caller may read
(:func:`readable_namespaces`). A namespace given in a request body is checked with :func:`require`.

On ``/v2/`` a request may also carry a registry token (Docker's token auth: ``GET /v2/token``, see
``api/distribution/access.py``): an HMAC-signed JWT naming the envyard token it was issued to (or none:
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

from envyard.api.models import ApiToken, Namespace, NamespaceGrant, NamespaceRole, Role
from envyard.api.registry_tokens import (
    is_registry_token,
    registry_token_key,
    verify_registry_token,
)
from envyard.api.tokens import TOKEN_PREFIX, hash_token
from envyard.builder.errors import AuthenticationError, EnvyardError, NotFoundError, PermissionDeniedError

__all__ = [
    "ANONYMOUS",
    "BEARER_ERROR",
    "CACHE_SECONDS",
    "Action",
    "Principal",
    "TokenCache",
    "authenticate",
    "authorize",
    "check",
    "current_principal",
    "is_registry_path",
    "may",
    "public_namespaces",
    "readable_namespaces",
    "require",
]

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


# --- the policy: may this principal do this action on the resource of these namespaces? --------------------------

Hidden = Callable[[], EnvyardError]


def current_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """The dependency that authenticates (and only authenticates): the caller's principal, :data:`ANONYMOUS`
    without credentials, a 401 for credentials the server does not know. Resource dependencies
    (:mod:`api.resources`) take it, validate their ids, resolve the resource and then call :func:`check`."""
    return authenticate(request, credentials)


def _not_visible(request: Request) -> NotFoundError:
    return NotFoundError(f"'{request.url.path}' names nothing this token may see",
                         hint="check the ids and names in the path; list what you may see with GET /api/v1/...")


def _verdict(request: Request, principal: Principal, action: Action, namespaces: Collection[str] | None,
             hidden: Hidden, label: str, repository: str | None, fresh: bool) -> EnvyardError | None:
    """None when ``principal`` may do ``action`` (see :func:`check`), else the error to answer with."""
    if principal.role is not None and action not in ALLOWED[principal.role]:
        return PermissionDeniedError(f"a {principal.role} token may not {action}",
                                     hint="ask an admin for a token with a wider role", details=_denied(request))
    if namespaces is None:  # a route that names no resource: the role decides
        if principal.repositories is not None:  # a registry token (only /v2/ takes them): the /v2/ ping
            return None if action == Action.READ else _out_of_scope(request, repository)
        if principal.allows(action, None):
            return None
        return _unauthenticated(request, "this route needs a token", TOKEN_HINT)
    public: Collection[str] = public_namespaces(request, fresh) if namespaces and principal.restricted else ()
    own = any(principal.allows(action, namespace, public) for namespace in namespaces)
    in_scope = principal.repositories is None or (action == Action.READ and repository in principal.repositories)
    if own and in_scope:
        return None
    if principal.anonymous and principal.repositories is None:
        return _unauthenticated(request, "this needs a token (or a namespace an admin made public)", TOKEN_HINT)
    if own or principal.anonymous:
        return _out_of_scope(request, repository)
    if action != Action.READ and any(principal.allows(Action.READ, ns, public) for ns in namespaces):
        return PermissionDeniedError(
            f"token '{principal.name}' may read but not {action} {label}",
            hint="ask an admin for the editor role: envyard namespace grant NAMESPACE TOKEN_ID --role editor",
            details=_denied(request),
        )
    return hidden()  # unknown, or not readable: the same answer


def _out_of_scope(request: Request, repository: str | None) -> AuthenticationError:
    return _unauthenticated(request, f"the registry token does not grant pull of '{repository or ''}'",
                            "fetch a token for this repository from /v2/token", "insufficient_scope")


def _denied(request: Request) -> dict[str, str]:
    return {"oci": "DENIED"} if is_registry_path(request.url.path) else {}


def check(request: Request, principal: Principal, action: Action, namespaces: Collection[str] | None, *,
          hidden: Hidden | None = None, label: str = "here", repository: str | None = None) -> Principal:
    """The one decision: ``principal`` (possibly reloaded) if it may do ``action`` on a resource in
    ``namespaces``, else raise.

    ``namespaces``: the namespaces of the resource a request names, resolved from the same validated values the
    route uses (one namespace for a build or an environment; every namespace holding a blob); empty when the
    resource does not exist or cannot be resolved, which nobody may act on (fail closed); None for a route that
    names no resource (the role decides). ``repository``: the /v2/ repository, for a registry token's scope.

    Answers: 401 for anonymous requests (alike for unknown and private resources), 403 when the role forbids
    ``action`` or the caller may read the resource but not ``action`` it (naming nothing but ``label``), and
    ``hidden()`` (the resource kind's 404) when the caller may not read it: unknown and forbidden look alike.
    A denial on cached data is checked once more against the database (new grants work at once).
    """
    error = _verdict(request, principal, action, namespaces, hidden or (lambda: _not_visible(request)), label,
                     repository, fresh=False)
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
    elif not (principal.anonymous and namespaces):
        raise error  # nothing cached could change the answer
    error = _verdict(request, principal, action, namespaces, hidden or (lambda: _not_visible(request)), label,
                     repository, fresh=True)
    if error is not None:
        raise error
    return principal


def authorize(action: Action, *, anonymous: bool = False) -> Callable[..., Principal]:
    """The dependency of routes that name no resource (listings, submissions with the namespace in the body,
    the worker's claim, admin operations): the caller's principal if its role allows ``action``.

    A route with path parameters names a resource and must authorize through its resource dependency
    (:mod:`api.resources`): here, a restricted principal is refused on any request with path parameters (fail
    closed), so a route that forgot its resource dependency leaks nothing.

    ``anonymous=True`` (the registry's token endpoint): requests without credentials get :data:`ANONYMOUS`,
    the route decides what that may see; wrong credentials are still a 401.
    """

    def dependency(request: Request, principal: Principal = Depends(current_principal)) -> Principal:
        if anonymous and principal.anonymous and principal.repositories is None:
            return principal
        if request.path_params and principal.restricted:
            return check(request, principal, action, frozenset())  # a resource nobody resolved: denied
        return check(request, principal, action, None)

    dependency.__name__ = f"authorize_{action}"
    return dependency


def require(request: Request, principal: Principal, action: Action, namespace: str) -> Principal:
    """:func:`check` for a namespace the caller named in a request body (e.g. creating an environment): its
    refusal names that namespace (the caller gave it; whether it exists shows anyway when creating it)."""
    return check(request, principal, action, frozenset({namespace}), label=f"namespace '{namespace}'",
                 hidden=lambda: PermissionDeniedError(
                     f"token '{principal.name}' may not {action} namespace '{namespace}'",
                     hint="ask an admin for a grant: envyard namespace grant NAMESPACE TOKEN_ID --role viewer|editor",
                     details=_denied(request)))


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
