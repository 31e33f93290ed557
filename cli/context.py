"""What a command runs against: the root options (``--api``, ``--token``, ``--data-dir``) and the token they lead
to, the API client built from them, the names the server accepts, and the local settings of commands that build
on this machine.

All HTTP to an envyard server goes through :class:`envyard.worker.client.ApiClient`, so the server's problem
details come back as the typed error they name and the root group prints them as one line with their exit code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from envyard.builder.errors import AuthenticationError, ServiceError, SpecError

if TYPE_CHECKING:
    from envyard.worker.client import ApiClient

__all__ = [
    "DEFAULT_API_URL",
    "LOOPBACK_HOSTS",
    "NAME",
    "RETRY_SECONDS",
    "TOKEN_FILE_WAIT_SECONDS",
    "ServerOptions",
    "api_client",
    "builder_settings",
    "credentials_file",
    "check_name",
    "environment_name",
    "install_options",
    "lock_platform",
    "public_client",
    "source_date_epoch",
    "store_token",
    "stored_token",
    "terminate_as_interrupt",
]

DEFAULT_API_URL = "http://127.0.0.1:8080"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_FILE_WAIT_SECONDS = 30.0
RETRY_SECONDS = 3.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # envyard.api.schemas.NAME_PATTERN


@dataclass
class ServerOptions:
    """The root options a command that talks to a server uses (``ctx.obj``); the token is resolved lazily."""

    api_url: str = DEFAULT_API_URL
    token: str | None = None
    data_dir: Path | None = None

    def token_files(self) -> list[Path]:
        """Admin-token files of a local server, in the order they are tried (none for a remote server)."""
        if urlsplit(self.api_url).hostname not in LOOPBACK_HOSTS:
            return []
        env_dir = os.environ.get("ENVYARD_DATA_DIR")
        dirs = [self.data_dir] if self.data_dir is not None else [*([Path(env_dir)] if env_dir else []),
                                                                  Path("envyard-data")]
        return [d / "admin-token" for d in dirs]

    def resolve_token(self) -> str:
        """``--token``/``ENVYARD_TOKEN``, else the token ``envyard login`` stored for this server, else a local
        server's ``<data-dir>/admin-token``."""
        if self.token:
            return self.token
        if stored := stored_token(self.api_url):
            return stored
        # A local server started just before this command creates its token file at startup: wait for it.
        deadline = time.monotonic() + (TOKEN_FILE_WAIT_SECONDS if self.data_dir is not None else 0)
        while True:
            for path in self.token_files():
                if path.is_file() and (token := path.read_text().strip()):
                    return token
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        tried = ", ".join(str(p) for p in self.token_files()) or "none (the server is not on this host)"
        raise AuthenticationError(
            f"no API token for {self.api_url}",
            hint="sign in (envyard login), pass --token T, or set ENVYARD_TOKEN, or (for a local server) "
                 "--data-dir DIR holding the "
                 f"server's admin-token file; admin-token files tried: {tried}",
        )


@cache
def _cli_api_client_class() -> type[ApiClient]:
    """ApiClient with a hint for people (not workers) when the server cannot be reached.

    Made on first use: httpx and the worker's client load only in commands that talk to a server.
    """
    from envyard.worker.client import ApiClient

    class CliApiClient(ApiClient):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            try:
                return super().request(method, path, **kwargs)
            except ServiceError as err:
                if " failed: " in err.message:
                    err.hint = f"is the envyard server running at {self.api_url}? (choose it with --api URL or " \
                               "ENVYARD_API_URL)"
                raise

    return CliApiClient


def credentials_file() -> Path:
    """Where ``envyard login`` keeps the tokens it got, per server URL (mode 600): ``envyard/credentials.json``
    in the user's configuration directory (``$XDG_CONFIG_HOME``, default ``~/.config``)."""
    return Path(click.get_app_dir("envyard")) / "credentials.json"


def _credentials() -> dict[str, str]:
    path = credentials_file()
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def stored_token(api_url: str) -> str | None:
    """The token ``envyard login`` stored for ``api_url``."""
    return _credentials().get(api_url.rstrip("/"))


def store_token(api_url: str, token: str | None) -> Path:
    """Keep ``token`` for ``api_url`` (None: forget it) in :func:`credentials_file`, readable by the user only."""
    found = _credentials()
    if token is None:
        found.pop(api_url.rstrip("/"), None)
    else:
        found[api_url.rstrip("/")] = token
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(found, handle, indent=2)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def public_client(ctx: click.Context) -> ApiClient:
    """A client of the server the root options name that sends no token (sign-in routes)."""
    options = ctx.find_root().obj
    api_url = options.api_url if hasattr(options, "api_url") else DEFAULT_API_URL
    client = _cli_api_client_class()(api_url, "", retry_seconds=RETRY_SECONDS)
    client.http.headers.pop("Authorization", None)
    ctx.call_on_close(client.close)
    return client


def api_client(ctx: click.Context) -> ApiClient:
    """A client of the server the root options name, closed with the command."""
    options = ctx.find_root().obj  # not isinstance: under ``python -m envyard.cli`` the root is __main__'s class
    if not hasattr(options, "resolve_token"):
        options = ServerOptions()
    logging.getLogger("envyard.worker").addHandler(logging.NullHandler())  # no retry chatter on stderr
    client = _cli_api_client_class()(options.api_url, options.resolve_token(), retry_seconds=RETRY_SECONDS)
    ctx.call_on_close(client.close)
    return client


def environment_name(value: str, argument: str = "environment") -> tuple[str, str]:
    """``NAMESPACE/NAME`` as the server accepts it.

    >>> environment_name("data-science/pytorch")
    ('data-science', 'pytorch')
    """
    namespace, sep, name = value.partition("/")
    if not sep or not NAME.match(namespace) or not NAME.match(name):
        raise SpecError(f"'{value}' is not NAMESPACE/NAME", field=argument,
                        hint="write the environment as NAMESPACE/NAME, e.g. data-science/pytorch (letters, digits, "
                             "'.', '_', '-')")
    return namespace, name


def check_name(value: str, argument: str) -> str:
    """A name of a server object (a namespace, a registry target) as the server accepts it."""
    if not NAME.match(value):
        raise SpecError(f"'{value}' is not a valid name", field=argument,
                        hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
    return value


# --- commands that build on this machine ----------------------------------------------------------------------------


def builder_settings() -> Any:
    """The builder's settings (``ENVYARD_*`` variables) for a local command."""
    from envyard.builder.settings import Settings

    return Settings()


def install_options(settings: Any, **overrides: Any) -> Any:
    """Install options with the settings' package cache layers and pip cache."""
    from envyard.builder.install import InstallOptions

    return InstallOptions(cache_layers=settings.package_cache_layers, pip_cache_dir=settings.pip_cache_dir,
                          **overrides)


def lock_platform(lock: Any, platform: str | None) -> str:
    """``platform`` if the lock has it, else (none given) this machine's or the lock's first."""
    from envyard.builder.install import host_platform

    chosen = platform or (host_platform() if host_platform() in lock.platforms else lock.platform_names[0])
    if chosen not in lock.platforms:
        raise SpecError(f"the lock has no {chosen} (it has {', '.join(lock.platform_names)})", field="platform",
                        hint="pass -p with one of the lock's platforms, or re-lock with -p " + chosen)
    return chosen


def source_date_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` (0 when unset): the timestamp of reproducible archives and images."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise SpecError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds",
                        field="SOURCE_DATE_EPOCH", hint="unset it or set it to an integer") from None


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, ``kill``) unwinds like Ctrl-C, so staging directories are removed."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
