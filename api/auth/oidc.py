"""Sign-in through an identity provider: OpenID Connect (any provider: discovery, the authorization-code flow
with PKCE for browsers, the device flow for the CLI, ID tokens verified against the provider's JWKS) and
JupyterHub's OAuth2 provider (``/hub/api/oauth2/authorize``, ``/hub/api/oauth2/token``, ``/hub/api/user``).

What a sign-in yields is an :class:`Identity` (a user name, the provider's subject, email, groups); the routes
(:mod:`envyard.api.routers.auth`) turn it into a user (:func:`envyard.api.services.identity.upsert_user`) and an
envyard API token. The state of a browser sign-in (state, nonce, PKCE verifier, where to return) travels in a
short-lived cookie signed with a key derived from the server's secret key, so any replica finishes a sign-in
another started.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt as jose_jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from envyard.api.auth.secret_key import derive_key
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import AuthenticationError, ConfigError, NotFoundError, ServiceError

__all__ = [
    "ALGORITHMS",
    "authorization_url",
    "is_loopback_url",
    "LOGIN_COOKIE",
    "Identity",
    "LoginState",
    "OidcProvider",
    "jupyterhub_authorize_url",
    "jupyterhub_identity",
    "open_login_state",
    "seal_login_state",
]

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LOGIN_COOKIE = "envyard_login"
LOGIN_SECONDS = 600
DISCOVERY_SECONDS = 300.0
HTTP_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, as the provider says."""

    provider: str  # oidc, jupyterhub
    subject: str
    username: str
    email: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoginState:
    """A browser sign-in in progress."""

    provider: str
    state: str
    nonce: str
    verifier: str
    return_to: str | None  # a loopback URL of ``envyard login --browser``


def _state_key(secret: bytes) -> bytes:
    return derive_key(secret, "login-state")


def seal_login_state(secret: bytes, state: LoginState) -> str:
    now = int(time.time())
    return jwt.encode({"p": state.provider, "s": state.state, "n": state.nonce, "v": state.verifier,
                       "r": state.return_to, "iat": now, "exp": now + LOGIN_SECONDS}, _state_key(secret), "HS256")


def open_login_state(secret: bytes, cookie: str | None, state: str | None, provider: str) -> LoginState:
    """The sign-in ``cookie`` started, if ``state`` (from the provider's redirect) is its state."""
    hint = "start the sign-in again (it must finish within 10 minutes, in the browser that started it)"
    if not cookie:
        raise AuthenticationError("the sign-in cookie is missing", hint=hint)
    try:
        claims = jwt.decode(cookie, _state_key(secret), algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the sign-in took too long", hint=hint) from None
    except jwt.PyJWTError:
        raise AuthenticationError("the sign-in cookie is not one this server set", hint=hint) from None
    if claims.get("p") != provider or not state or not secrets.compare_digest(str(claims.get("s")), state):
        raise AuthenticationError("the sign-in's state does not match (a forged or stale redirect)", hint=hint)
    return LoginState(provider, state, str(claims["n"]), str(claims["v"]), claims.get("r"))


def _claim_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _groups(value: Any, claim: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AuthenticationError(f"the identity provider's '{claim}' claim is not a list of group names",
                              hint="set ENVYARD_OIDC_GROUPS_CLAIM to the claim that lists them")


class OidcProvider:
    """An OpenID provider from the settings: discovery and keys (cached, keys refetched for an unknown key id),
    authorization URLs, code and device-code exchanges, ID token verification."""

    def __init__(self, settings: ServiceSettings) -> None:
        if not (settings.oidc_issuer and settings.oidc_client_id):
            raise NotFoundError("OpenID Connect sign-in is not configured on this server", field="oidc_issuer",
                              hint="set ENVYARD_OIDC_ISSUER and ENVYARD_OIDC_CLIENT_ID (docs/identity.md)")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret
        self.scopes = settings.oidc_scopes
        self.audience = settings.oidc_audience or settings.oidc_client_id
        self.username_claim = settings.oidc_username_claim
        self.groups_claim = settings.oidc_groups_claim
        self.leeway = settings.oidc_leeway_seconds
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    # --- discovery and keys ---

    def _get(self, url: str) -> Any:
        try:
            response = httpx.get(url, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise ServiceError(f"the identity provider at {self.issuer} did not answer {url}: {err}",
                               hint="check ENVYARD_OIDC_ISSUER and that the provider is up") from None

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_SECONDS:
                found = self._get(f"{self.issuer}/.well-known/openid-configuration")
                if str(found.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ConfigError(f"the provider's discovery document names issuer '{found.get('issuer')}', "
                                      f"not '{self.issuer}'", field="oidc_issuer",
                                      hint="set ENVYARD_OIDC_ISSUER to exactly the provider's issuer")
                self._metadata, self._metadata_at = found, time.monotonic()
            return self._metadata

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            keys = self._keys
        if keys is None or refresh:
            keys = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))
            with self._lock:
                self._keys = keys
        return keys

    # --- flows ---

    def _auth(self) -> tuple[tuple[str, str] | None, dict[str, str]]:
        """HTTP basic credentials of a confidential client (client_secret_basic), else the public client's id."""
        if self.client_secret:
            return (self.client_id, self.client_secret), {}
        return None, {"client_id": self.client_id}

    def authorization_url(self, redirect_uri: str, state: LoginState) -> str:
        return authorization_url(self.metadata()["authorization_endpoint"], {
            "response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
            "scope": self.scopes, "state": state.state, "nonce": state.nonce,
            "code_challenge": create_s256_code_challenge(state.verifier), "code_challenge_method": "S256"})

    def exchange_code(self, redirect_uri: str, code: str, state: LoginState) -> Identity:
        """The identity of the ID token the provider gives for ``code`` (checked against ``state``'s nonce)."""
        auth, extra = self._auth()
        token = _token_request(self.metadata()["token_endpoint"], auth, {
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": state.verifier, **extra}, "the identity provider")
        return self._identity(token, nonce=state.nonce)

    def start_device(self) -> dict[str, Any]:
        """Start a device authorization (RFC 8628): the provider's user code, verification URI and device code."""
        endpoint = self.metadata().get("device_authorization_endpoint")
        if not endpoint:
            raise NotFoundError(f"the identity provider at {self.issuer} has no device flow",
                              hint="sign in with the browser: envyard login --browser")
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        data = {"scope": self.scopes, **({} if auth else {"client_id": self.client_id})}
        response = httpx.post(endpoint, data=data, auth=auth, timeout=HTTP_TIMEOUT)
        if response.status_code != 200:
            raise ServiceError(f"the identity provider refused a device sign-in: {response.text[:300]}")
        return dict(response.json())

    def poll_device(self, device_code: str) -> Identity | str:
        """The identity once the user approved; else the provider's error (``authorization_pending``,
        ``slow_down``, ``expired_token``, ``access_denied``)."""
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        response = httpx.post(self.metadata()["token_endpoint"], auth=auth, timeout=HTTP_TIMEOUT, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device_code,
            **({} if auth else {"client_id": self.client_id})})
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200:
            return str(body.get("error") or f"HTTP {response.status_code}")
        return self._identity(body, nonce=None)

    # --- ID tokens ---

    def _identity(self, token: dict[str, Any], nonce: str | None) -> Identity:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise AuthenticationError("the identity provider answered without an ID token",
                                      hint="the scopes must include 'openid' (ENVYARD_OIDC_SCOPES)")
        claims = self.verify(id_token, nonce=nonce)
        if self.groups_claim not in claims or self.username_claim not in claims:
            claims = {**self._userinfo(str(token.get("access_token", ""))), **claims}
        return self.identity_of(claims)

    def _userinfo(self, access_token: str) -> dict[str, Any]:
        endpoint = self.metadata().get("userinfo_endpoint")
        if not endpoint or not access_token:
            return {}
        response = httpx.get(endpoint, headers={"Authorization": f"Bearer {access_token}"}, timeout=HTTP_TIMEOUT)
        return dict(response.json()) if response.status_code == 200 else {}

    def identity_of(self, claims: dict[str, Any]) -> Identity:
        username = _claim_text(claims.get(self.username_claim))
        if username is None:
            raise AuthenticationError(f"the ID token has no '{self.username_claim}' claim to name the user",
                                      hint="set ENVYARD_OIDC_USERNAME_CLAIM (e.g. preferred_username, email, sub)")
        return Identity("oidc", str(claims["sub"]), username, _claim_text(claims.get("email")),
                        _groups(claims.get(self.groups_claim), self.groups_claim))

    def verify(self, id_token: str, nonce: str | None = None, now: int | None = None) -> dict[str, Any]:
        """The claims of ``id_token`` if its signature verifies with the provider's keys and its issuer, audience,
        expiry (and ``nonce``, for a browser sign-in) are right; else a 401 saying which check failed."""
        hint = "sign in again; if it persists, check the provider's client settings (docs/identity.md)"
        try:
            try:
                decoded = jose_jwt.decode(id_token, self._key_set(), algorithms=ALGORITHMS)
            except (ValueError, JoseError) as err:  # an unknown key id: the provider may have rotated its keys
                if isinstance(err, BadSignatureError):
                    raise
                decoded = jose_jwt.decode(id_token, self._key_set(refresh=True), algorithms=ALGORITHMS)
        except BadSignatureError:
            raise AuthenticationError("the ID token's signature does not verify with the identity provider's keys "
                                      "(JWKS)", hint=hint) from None
        except (ValueError, JoseError) as err:
            raise AuthenticationError(f"the ID token cannot be read: {err}", hint=hint) from None
        claims = dict(decoded.claims)
        options: dict[str, Any] = {"iss": {"essential": True, "value": self.issuer},
                                   "aud": {"essential": True, "value": self.audience},
                                   "exp": {"essential": True}, "iat": {"essential": True},
                                   "sub": {"essential": True}}
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        registry = jose_jwt.JWTClaimsRegistry(now=now, leeway=self.leeway, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise AuthenticationError(f"the ID token expired at {_when(claims.get('exp'))}", hint=hint) from None
        except MissingClaimError as err:
            raise AuthenticationError(f"the ID token lacks the claim '{err.claim}'", hint=hint) from None
        except InvalidClaimError as err:
            wanted = {"iss": self.issuer, "aud": self.audience, "nonce": "this sign-in's nonce"}.get(err.claim, "")
            raise AuthenticationError(f"the ID token's '{err.claim}' is {claims.get(err.claim)!r}, not {wanted!r}"
                                      if wanted else f"the ID token's '{err.claim}' claim is invalid: {err}",
                                      hint=hint) from None
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") not in (None, self.client_id):
            raise AuthenticationError(f"the ID token was issued to '{claims.get('azp')}', not to this server",
                                      hint=hint)
        return claims


def _when(value: Any) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(value)))
    except (TypeError, ValueError):
        return str(value)


# --- JupyterHub ------------------------------------------------------------------------------------------------------


def _hub(settings: ServiceSettings) -> tuple[str, str, str | None]:
    if not (settings.jupyterhub_url and settings.jupyterhub_client_id):
        raise NotFoundError("JupyterHub sign-in is not configured on this server", field="jupyterhub_url",
                          hint="set ENVYARD_JUPYTERHUB_URL and ENVYARD_JUPYTERHUB_CLIENT_ID (docs/identity.md)")
    return settings.jupyterhub_url.rstrip("/"), settings.jupyterhub_client_id, settings.jupyterhub_client_secret


def jupyterhub_authorize_url(settings: ServiceSettings, redirect_uri: str, state: LoginState) -> str:
    hub, client_id, _ = _hub(settings)
    return authorization_url(f"{hub}/hub/api/oauth2/authorize", {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state.state})


def jupyterhub_identity(settings: ServiceSettings, redirect_uri: str, code: str) -> Identity:
    """The hub user of ``code``: its access token, then ``/hub/api/user`` (name, groups)."""
    hub, client_id, secret = _hub(settings)
    token = _token_request(f"{hub}/hub/api/oauth2/token", None, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
        **({"client_secret": secret} if secret else {})}, "JupyterHub")
    try:
        response = httpx.get(f"{hub}/hub/api/user", timeout=HTTP_TIMEOUT,
                             headers={"Authorization": f"Bearer {token.get('access_token', '')}"})
        response.raise_for_status()
        user = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise AuthenticationError(f"JupyterHub refused the sign-in: /hub/api/user answered {err}",
                                  hint="start the sign-in again from the hub") from None
    name = _claim_text(user.get("name")) if isinstance(user, dict) else None
    if name is None:
        raise AuthenticationError("JupyterHub's /hub/api/user named no user", hint="check the hub's version")
    return Identity("jupyterhub", name, name, None, _groups(user.get("groups"), "groups"))


def authorization_url(endpoint: str, params: dict[str, str]) -> str:
    """``endpoint`` with the authorization request's parameters (added to any it has)."""
    return add_params_to_uri(endpoint, list(params.items()))


def _token_request(endpoint: str, auth: tuple[str, str] | None, data: dict[str, str], who: str) -> dict[str, Any]:
    """The token endpoint's answer to ``data``; a 401 naming the provider's error otherwise."""
    try:
        response = httpx.post(endpoint, data=data, auth=auth, timeout=HTTP_TIMEOUT,
                              headers={"Accept": "application/json"})
        body = response.json()
    except (httpx.HTTPError, ValueError) as err:
        raise ServiceError(f"{who} did not answer at {endpoint}: {err}", hint="check that it is up") from None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise AuthenticationError(f"{who} refused the sign-in: {error or f'HTTP {response.status_code}'}",
                                  hint="start the sign-in again")
    return body


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` is an http URL on this machine's loopback (``envyard login --browser``'s receiver)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port is not None
