"""/api/v1/auth: sign-in through OpenID Connect (browser: authorization code with PKCE; CLI: the device flow, or
the browser flow returning to a loopback port; CI: an ID token exchanged) and through JupyterHub. Each yields an
envyard API token of the signed-in user. These routes take no token: the identity provider authenticates."""

from __future__ import annotations

import secrets
import threading
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Cookie, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from envyard.api.auth.oidc import (
    LOGIN_COOKIE,
    LoginState,
    OidcProvider,
    is_loopback_url,
    jupyterhub_authorize_url,
    jupyterhub_identity,
    open_login_state,
    seal_login_state,
)
from envyard.api.auth.tokens import token_key
from envyard.api.deps import SecretKeyDep, SessionDep, SettingsDep
from envyard.api.schemas import DevicePoll, IdTokenExchange, TokenCreated
from envyard.api.services import identity
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import AuthenticationError, SpecError

router = APIRouter(prefix="/api/v1/auth", tags=["sign-in"])
NOT_OFFERED = {404: {"description": "This sign-in is not configured on this server"},
               503: {"description": "The identity provider cannot be reached"}}
REFUSED = {401: {"description": "The sign-in failed (refused, forged, stale, or an invalid ID token)"}}
REDIRECT = {"description": "To the identity provider (or to envyard login's loopback receiver)",
            "headers": {"Location": {"schema": {"type": "string"}}}}
_providers: dict[tuple[str | None, str | None], OidcProvider] = {}
_providers_lock = threading.Lock()


def _oidc(settings: ServiceSettings) -> OidcProvider:
    """The provider of ``settings`` (one per issuer and client: discovery and keys stay cached)."""
    key = (settings.oidc_issuer, settings.oidc_client_id)
    with _providers_lock:
        if key not in _providers:
            _providers[key] = OidcProvider(settings)
        return _providers[key]


def _callback_url(request: Request, settings: ServiceSettings, provider: str) -> str:
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/api/v1/auth/{provider}/callback"


def _start(request: Request, settings: ServiceSettings, secret_key: bytes, provider: str,
           return_to: str | None, authorize: Any) -> RedirectResponse:
    if return_to is not None and not is_loopback_url(return_to):
        raise SpecError(f"return_to '{return_to}' is not a loopback URL", field="return_to",
                        hint="only envyard login --browser passes it (http://127.0.0.1:PORT/...)")
    state = LoginState(provider, secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                       secrets.token_urlsafe(48), return_to)
    response = RedirectResponse(authorize(_callback_url(request, settings, provider), state), status_code=303)
    response.set_cookie(LOGIN_COOKIE, seal_login_state(secret_key, state), max_age=600, httponly=True,
                        samesite="lax", path="/api/v1/auth/", secure=request.url.scheme == "https")
    return response


def _finish(state: LoginState, created: TokenCreated) -> Response:
    if state.return_to:  # envyard login --browser listens there
        response: Response = RedirectResponse(f"{state.return_to}?{urlencode({'token': created.token})}",
                                              status_code=303)
    else:
        response = JSONResponse(created.model_dump(mode="json"))
    response.delete_cookie(LOGIN_COOKIE, path="/api/v1/auth/")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/providers")
def providers(settings: SettingsDep) -> dict[str, bool]:
    """Which sign-ins this server offers."""
    return {"oidc": bool(settings.oidc_issuer and settings.oidc_client_id),
            "jupyterhub": bool(settings.jupyterhub_url and settings.jupyterhub_client_id)}


@router.get("/oidc/login", status_code=303, response_class=RedirectResponse, responses={**NOT_OFFERED})
def oidc_login(request: Request, settings: SettingsDep, secret_key: SecretKeyDep,
               return_to: str | None = Query(default=None, max_length=300)) -> RedirectResponse:
    """Start a browser sign-in: to the identity provider (authorization code with PKCE)."""
    provider = _oidc(settings)
    return _start(request, settings, secret_key, "oidc", return_to, provider.authorization_url)


@router.get("/oidc/callback", response_model=TokenCreated, responses={303: REDIRECT, **NOT_OFFERED, **REFUSED})
def oidc_callback(request: Request, session: SessionDep, settings: SettingsDep, secret_key: SecretKeyDep,
                  code: str | None = Query(default=None, max_length=2000),
                  state: str | None = Query(default=None, max_length=200),
                  error: str | None = Query(default=None, max_length=200),
                  error_description: str | None = Query(default=None, max_length=1000),
                  envyard_login: str | None = Cookie(default=None)) -> Response:
    """Where the provider returns: the code is exchanged, the ID token verified, the user upserted, a token
    issued (shown once, or handed to ``envyard login --browser``'s loopback receiver)."""
    if error:
        raise AuthenticationError(f"the identity provider refused the sign-in: {error_description or error}",
                                  hint="start the sign-in again")
    login = open_login_state(secret_key, envyard_login, state, "oidc")
    if not code:
        raise AuthenticationError("the identity provider returned no code", hint="start the sign-in again")
    found = _oidc(settings).exchange_code(_callback_url(request, settings, "oidc"), code, login)
    created = identity.sign_in(session, token_key(secret_key), "oidc", found.subject, found.username, found.email,
                               found.groups, settings.global_namespace, settings.login_token_hours)
    session.commit()
    return _finish(login, created)


@router.post("/oidc/token", status_code=201, responses={**NOT_OFFERED, **REFUSED})
def oidc_exchange(body: IdTokenExchange, session: SessionDep, settings: SettingsDep,
                  secret_key: SecretKeyDep) -> TokenCreated:
    """An envyard token for an ID token of the provider issued to this server's client (e.g. a CI job's): its
    signature, issuer, audience and expiry are verified."""
    provider = _oidc(settings)
    found = provider.identity_of(provider.verify(body.id_token))
    created = identity.sign_in(session, token_key(secret_key), "oidc", found.subject, found.username, found.email,
                               found.groups, settings.global_namespace, settings.login_token_hours)
    session.commit()
    return created


@router.post("/oidc/device", responses={**NOT_OFFERED})
def oidc_device(settings: SettingsDep) -> dict[str, Any]:
    """Start a device sign-in (``envyard login``): the user opens ``verification_uri`` and enters ``user_code``;
    the CLI polls ``POST /api/v1/auth/oidc/device/token`` with ``device_code``."""
    found = _oidc(settings).start_device()
    return {k: found[k] for k in ("device_code", "user_code", "verification_uri", "verification_uri_complete",
                                  "expires_in", "interval") if k in found}


@router.post("/oidc/device/token", status_code=201, response_model=TokenCreated, responses={
    202: {"description": "Not approved yet", "content": {"application/json": {"schema": {"type": "object"}}}},
    **NOT_OFFERED, **REFUSED})
def oidc_device_token(body: DevicePoll, session: SessionDep, settings: SettingsDep,
                      secret_key: SecretKeyDep) -> Response:
    """202 ``{"status": "authorization_pending"|"slow_down"}`` until the user approved, then the token (201)."""
    found = _oidc(settings).poll_device(body.device_code)
    if isinstance(found, str):
        if found in ("authorization_pending", "slow_down"):
            return JSONResponse({"status": found}, status_code=202)
        raise AuthenticationError(f"the device sign-in ended: {found}", hint="start again: envyard login")
    created = identity.sign_in(session, token_key(secret_key), "oidc", found.subject, found.username, found.email,
                               found.groups, settings.global_namespace, settings.login_token_hours)
    session.commit()
    return JSONResponse(created.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


@router.get("/jupyterhub/login", status_code=303, response_class=RedirectResponse, responses={**NOT_OFFERED})
def jupyterhub_login(request: Request, settings: SettingsDep, secret_key: SecretKeyDep,
                     return_to: str | None = Query(default=None, max_length=300)) -> RedirectResponse:
    """Start a sign-in through JupyterHub's OAuth2 provider."""
    return _start(request, settings, secret_key, "jupyterhub", return_to,
                  lambda redirect_uri, state: jupyterhub_authorize_url(settings, redirect_uri, state))


@router.get("/jupyterhub/callback", response_model=TokenCreated,
            responses={303: REDIRECT, **NOT_OFFERED, **REFUSED})
def jupyterhub_callback(request: Request, session: SessionDep, settings: SettingsDep, secret_key: SecretKeyDep,
                        code: str | None = Query(default=None, max_length=2000),
                        state: str | None = Query(default=None, max_length=200),
                        envyard_login: str | None = Cookie(default=None)) -> Response:
    login = open_login_state(secret_key, envyard_login, state, "jupyterhub")
    if not code:
        raise AuthenticationError("JupyterHub returned no code", hint="start the sign-in again")
    found = jupyterhub_identity(settings, _callback_url(request, settings, "jupyterhub"), code)
    created = identity.sign_in(session, token_key(secret_key), "jupyterhub", found.subject, found.username,
                               found.email, found.groups, settings.global_namespace, settings.login_token_hours)
    session.commit()
    return _finish(login, created)
