"""The request's dependencies, and the one module that reads the application's state (``app.state``).

Routers take what they need as parameters typed with the aliases below; services receive it as arguments:

* :data:`SessionDep`: a database session for the request. The route commits (a function that takes a session
  never does); what needs several transactions takes an :data:`EngineDep` and opens
  :func:`envyard.api.db.session_scope` per step.
* :data:`StoreDep`, :data:`SettingsDep`, :data:`LeasePolicyDep`, :data:`LoadDep`, :data:`SecretKeyDep`,
  :data:`TokenCacheDep`: the artifact store, the settings, the worker lease policy, the load controls, the secret
  key, the token cache.
* :data:`CurrentPrincipal`: who asks (authenticated only); :data:`Reader`, :data:`Editor`, :data:`Admin`,
  :data:`Worker`: who asks, if the role allows reading, writing, administering, working on a route that names no
  resource (resources authorize through :mod:`envyard.api.resources`).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import Session

from envyard.api.auth.policy import permit
from envyard.api.auth.principals import Action, Principal, PrincipalSource, TokenCache, authenticate
from envyard.api.limits import LoadControls
from envyard.api.metrics import metrics_registry
from envyard.api.services.jobs import LeasePolicy
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore

__all__ = [
    "Admin",
    "AppState",
    "CurrentPrincipal",
    "Editor",
    "EngineDep",
    "LeasePolicyDep",
    "LoadDep",
    "Reader",
    "SecretKeyDep",
    "SessionDep",
    "SettingsDep",
    "StoreDep",
    "TokenCacheDep",
    "Worker",
    "app_state",
    "authorize",
    "current_principal",
    "get_engine",
    "get_load",
    "get_metrics_registry",
    "metrics_access",
    "get_policy",
    "get_secret_key",
    "get_session",
    "get_settings",
    "get_store",
    "get_token_cache",
    "install_state",
    "lease_policy",
    "principal_source",
]


class AppState:
    """What :func:`envyard.api.app.create_app` puts on the application (set with :func:`install_state`)."""

    def __init__(self, settings: ServiceSettings, engine: Engine, store: ArtifactStore, load: LoadControls,
                 admin_token: str, secret_key: bytes) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.load = load  # per-token limits, the log-stream hub, spec-check threads
        self.admin_token = admin_token
        self.principals = PrincipalSource(engine, TokenCache(), secret_key, settings.global_namespace)
        self.metrics = metrics_registry(engine)  # read from the database at scrape time (envyard.api.metrics)


def install_state(app: FastAPI, state: AppState) -> None:
    """Give ``app`` its state: the only way anything is put there."""
    app.state.envyard = state


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.envyard
    return state


def app_state(app: FastAPI) -> AppState:
    """The state of an app made by :func:`envyard.api.app.create_app`, for code that holds the app rather than a
    request (``envyard serve`` hands the admin token to its in-process workers; the benchmarks)."""
    state: AppState = app.state.envyard
    return state


def get_engine(request: Request) -> Engine:
    return _state(request).engine


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request, closed (and rolled back if not committed) after the response."""
    with Session(_state(request).engine, expire_on_commit=False) as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    return _state(request).store


def get_settings(request: Request) -> ServiceSettings:
    return _state(request).settings


def get_metrics_registry(request: Request) -> CollectorRegistry:
    return _state(request).metrics


def get_load(request: Request) -> LoadControls:
    return _state(request).load


def get_secret_key(request: Request) -> bytes:
    return _state(request).principals.secret_key


def get_token_cache(request: Request) -> TokenCache:
    return _state(request).principals.cache


def principal_source(request: Request) -> PrincipalSource:
    return _state(request).principals


def lease_policy(settings: ServiceSettings) -> LeasePolicy:
    return LeasePolicy(
        lease_seconds=settings.lease_seconds,
        time_limit_seconds=settings.build_time_limit_seconds,
        max_attempts=settings.max_attempts,
        backoff_seconds=settings.retry_backoff_seconds,
    )


def get_policy(request: Request) -> LeasePolicy:
    return lease_policy(get_settings(request))


EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
LoadDep = Annotated[LoadControls, Depends(get_load)]
SecretKeyDep = Annotated[bytes, Depends(get_secret_key)]
TokenCacheDep = Annotated[TokenCache, Depends(get_token_cache)]
LeasePolicyDep = Annotated[LeasePolicy, Depends(get_policy)]

_bearer = HTTPBearer(auto_error=False)


def current_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                      source: PrincipalSource = Depends(principal_source)) -> Principal:
    """The dependency that authenticates (and only authenticates): the caller's principal, the anonymous one
    without credentials, a 401 for credentials the server does not know. Resource dependencies
    (:mod:`envyard.api.resources`) take it, validate their ids, resolve the resource and then call
    :func:`envyard.api.auth.policy.check`."""
    return authenticate(request, credentials, source)


def authorize(action: Action, *, anonymous: bool = False) -> Callable[..., Principal]:
    """The dependency of routes that name no resource: the caller's principal if its role allows ``action``
    (:func:`envyard.api.auth.policy.permit`; ``anonymous=True``: requests without credentials pass, the route
    decides what they may see)."""

    def dependency(request: Request, principal: Principal = Depends(current_principal)) -> Principal:
        return permit(request, principal, action, anonymous=anonymous)

    dependency.__name__ = f"authorize_{action}"
    return dependency


def metrics_access(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                   source: PrincipalSource = Depends(principal_source)) -> None:
    """Who may read ``/metrics``: the ``metrics_token`` setting's bearer, a client in ``metrics_allowed_networks``,
    or an admin token (401/403 otherwise)."""
    settings = get_settings(request)
    given = credentials.credentials if credentials is not None else ""
    if settings.metrics_token and hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
        return
    client = request.client.host if request.client else ""
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(client)
        if any(address in ipaddress.ip_network(net, strict=False) for net in settings.metrics_allowed_networks):
            return
    permit(request, authenticate(request, credentials, source), Action.ADMIN)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
Reader = Annotated[Principal, Depends(authorize(Action.READ))]
Editor = Annotated[Principal, Depends(authorize(Action.WRITE))]
Admin = Annotated[Principal, Depends(authorize(Action.ADMIN))]
Worker = Annotated[Principal, Depends(authorize(Action.WORK))]
