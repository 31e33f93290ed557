"""HTTP to one registry: oras-py's session and bearer-token flow, credentials, and failures as RegistryError.

Requests go through the ``requests`` session of an :class:`oras.provider.Registry`;
a 401 is answered once, from its ``WWW-Authenticate`` challenge: ``Basic`` with the
credentials, ``Bearer`` with a token that oras-py's :class:`oras.auth.TokenAuth`
fetches from the realm (anonymous when there are no credentials), cached per scope.
oras-py's own ``do_request`` is not used: it retries refused connections for minutes
and turns 5xx answers into bare ``ValueError``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import oras.auth.utils
import oras.provider
import requests

from envyard.builder.errors import RegistryError
from envyard.registry.reference import DOCKER_HUB_REGISTRY


class Readable(Protocol):
    """A request body stream (a file, or a window of one)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


#: A request body: bytes, or a factory opening a fresh stream (called again when a 401 makes us resend).
Body = bytes | Callable[[], Readable] | None

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password, and where they came from (said in 401 messages)."""

    username: str
    password: str
    source: str


def docker_config_credentials(registry: str, docker_config: Path | None) -> Credentials | None:
    """The ``auths`` entry for ``registry`` in a Docker ``config.json``, if the file and the entry exist."""
    if docker_config is None or not docker_config.is_file():
        return None
    try:
        auths = json.loads(docker_config.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise RegistryError(f"cannot read Docker config: {exc}", file=docker_config,
                            hint="fix or remove the file, or pass --username/--password") from exc
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    keys += [k.replace("localhost", "127.0.0.1") for k in keys if "localhost" in k]
    keys += [k.replace("127.0.0.1", "localhost") for k in keys if "127.0.0.1" in k]
    if registry == DOCKER_HUB_REGISTRY:
        keys += list(_HUB_KEYS)
    for key in keys:
        entry = auths.get(key) or auths.get(key + "/")
        if not isinstance(entry, Mapping):
            continue
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"], str(docker_config))
        if entry.get("auth"):
            try:
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise RegistryError(f"the 'auth' of {key!r} is not base64 of user:password", file=docker_config,
                                    hint=f"run `docker login {registry}` again") from exc
            return Credentials(username, password, str(docker_config))
    return None


def display_url(url: str) -> str:
    """The URL without its query (upload-session state is long and says nothing to a user)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for pattern in (r"\[SSL: [^\]]+\] ([^('\"]+)", r"\[Errno -?\d+\] ([^'\")]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return type(exc).__name__


def _registry_errors(response: requests.Response) -> str:
    try:
        errors = json.loads(response.content[:65536]).get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError, requests.RequestException):
        return ""


class Transport:
    """Authenticated requests to one registry; every failure is a :class:`RegistryError`."""

    def __init__(self, registry: str, *, plain_http: bool, credentials: Credentials | None, timeout: float) -> None:
        self.registry = registry
        self.base_url = f"{'http' if plain_http else 'https'}://{registry}"
        self.credentials = credentials
        self.timeout = timeout
        self._oras = oras.provider.Registry(hostname=registry, insecure=plain_http, auth_backend="token")
        self.session: requests.Session = self._oras.session
        if credentials is not None:
            self._oras.auth.set_basic_auth(credentials.username, credentials.password)
        self._authorization: str | None = None
        self._tokens: dict[tuple[str | None, ...], str] = {}

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        ok: Container[int],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send (again once after a 401 challenge); a status outside ``ok`` raises :class:`RegistryError`."""
        response = self._send(method, url, headers, body, stream)
        if response.status_code == 401 and self._authenticate(response, url):
            response.close()
            response = self._send(method, url, headers, body, stream)
        if response.status_code in ok:
            return response
        error = self.status_error(method, url, response)
        response.close()
        raise error

    def _send(self, method: str, url: str, headers: Mapping[str, str] | None, body: Body, stream: bool
              ) -> requests.Response:
        sent = dict(headers or {})
        if self._authorization:
            sent["Authorization"] = self._authorization
        data = body() if callable(body) else body
        try:
            return self.session.request(method, url, headers=sent, data=data, stream=stream, timeout=self.timeout)
        except requests.RequestException as exc:
            raise self.connection_error(method, url, exc) from exc
        finally:
            if data is not None and not isinstance(data, bytes):
                data.close()

    def _authenticate(self, response: requests.Response, url: str) -> bool:
        """Prepare the Authorization a challenge asks for; False when there is nothing new to try."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.partition(" ")[0].lower()
        if scheme == "basic" and self.credentials is not None:
            pair = oras.auth.utils.get_basic_auth(self.credentials.username, self.credentials.password)
            value = f"Basic {pair}"
        elif scheme == "bearer":
            parsed = oras.auth.utils.parse_auth_header(challenge)
            if not parsed.realm:
                return False
            key = (parsed.realm, parsed.service, parsed.scope)
            token = self._tokens.get(key)
            if token is None or f"Bearer {token}" == self._authorization:
                token = self._fetch_token(parsed)
                if not token:
                    return False
                self._tokens[key] = token
            value = f"Bearer {token}"
        else:
            return False
        if value == self._authorization:
            return False
        self._authorization = value
        return True

    def _fetch_token(self, parsed: oras.auth.utils.authHeader) -> str | None:
        auth: Any = self._oras.auth
        try:
            token = auth.request_token(parsed) if self.credentials else auth.request_anonymous_token(parsed)
        except requests.RequestException as exc:
            raise self.connection_error("GET", str(parsed.realm), exc) from exc
        return str(token) if token else None

    def tried(self) -> str:
        """Which credentials were (or were not) sent, for messages."""
        if self.credentials is None:
            return "no credentials were sent"
        return f"user {self.credentials.username!r} (from {self.credentials.source}) was tried"

    def status_error(self, method: str, url: str, response: requests.Response) -> RegistryError:
        """A RegistryError for an unexpected HTTP status, with the URL, status and the registry's own error codes."""
        status = response.status_code
        said = _registry_errors(response)
        where = f"{method} {display_url(url)}: {status} {response.reason or ''}".rstrip()
        where += f" ({said})" if said else ""
        details = {"url": display_url(url), "status": status, "method": method}
        login = f"pass --username/--password or run `docker login {self.registry}`"
        if status == 401:
            hint = (f"check the username and password, or {login}" if self.credentials
                    else f"{login} (some registries also answer 401 for a repository that does not exist)")
            return RegistryError(f"registry {self.registry} requires authentication; {self.tried()}: {where}",
                                 hint=hint, details=details)
        if status == 403:
            return RegistryError(f"registry {self.registry} denied access; {self.tried()}: {where}",
                                 hint=f"use credentials allowed to do this: {login}", details=details)
        if status == 404:
            return RegistryError(f"not found on registry {self.registry}: {where}",
                                 hint="check the repository name, tag and digest", details=details)
        if status >= 500:
            return RegistryError(f"registry {self.registry} failed: {where}",
                                 hint="a server-side failure; retry later or look at the registry's logs",
                                 details=details)
        return RegistryError(f"registry {self.registry} refused the request: {where}", details=details)

    def connection_error(self, method: str, url: str, exc: BaseException) -> RegistryError:
        """A RegistryError for a request that got no HTTP answer (refused, TLS, timeout, DNS)."""
        shown = f"{method} {display_url(url)}"
        details = {"url": display_url(url), "method": method, "error": type(exc).__name__}
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryError(f"TLS error talking to registry {self.registry} ({shown}): {_reason(exc)}",
                                 hint="for a registry without a valid certificate or serving plain HTTP, "
                                      "pass --insecure", details=details)
        if isinstance(exc, requests.exceptions.Timeout):
            return RegistryError(f"registry {self.registry} did not answer in {self.timeout:g} s ({shown})",
                                 hint="check the network, or retry later", details=details)
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused" if "refused" in str(exc).lower() else _reason(exc)
            return RegistryError(f"cannot connect to registry {self.registry} ({shown}): {reason}",
                                 hint="check that the registry is running and that host:port is right",
                                 details=details)
        return RegistryError(f"request to registry {self.registry} failed ({shown}): {_reason(exc)}",
                             details=details)
