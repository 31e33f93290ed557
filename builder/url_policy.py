"""Which URLs a service build may fetch: channels, ``channel_alias``, pip indexes, find-links, direct URLs.

A spec submitted to the service names URLs that the server's workers then fetch. Without a
check, a user reaches what only the server can reach: loopback services, the cloud metadata
endpoint (``169.254.169.254``), private networks, ``file://`` paths of the server. A
:class:`UrlPolicy` allows

* URLs under an admin-configured prefix (``allowed_url_prefixes``; the server's own
  ``channel_alias``, mirrors and pip index always count), whatever they resolve to,
* ``file://`` URLs under an admin-configured root (``allowed_file_roots``),
* other ``https://`` URLs whose host resolves only to public addresses (``allow_public_https``),

and nothing else. It is checked when a spec is submitted and again by the worker right
before rattler and uv fetch (after a fresh DNS resolution), so a name that changed its
address in between is caught too. Classification uses :mod:`ipaddress` (IPv4-mapped
IPv6 and NAT64/6to4 forms of a forbidden IPv4 address are forbidden as well).

>>> policy = UrlPolicy(allowed_prefixes=("http://127.0.0.1:8000/conda/",), resolver=lambda host: ["127.0.0.1"])
>>> policy.violation("http://127.0.0.1:8000/conda/main") is None
True
>>> policy.violation("http://127.0.0.1:8000/other")
'http:// URLs are only fetched under an allowed prefix'
>>> policy.violation("https://169.254.169.254/latest/")
'169.254.169.254 is a link-local address'
>>> forbidden_address("::ffff:127.0.0.1")
'a loopback address'
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from envyard.builder.errors import ForbiddenUrlError

if TYPE_CHECKING:
    from envyard.builder.channels import ChannelOptions
    from envyard.builder.model import EnvironmentLock
    from envyard.builder.spec import EnvironmentSpec

__all__ = ["FetchedUrl", "Resolver", "UrlPolicy", "forbidden_address", "lock_urls", "spec_urls", "system_resolver"]

Resolver = Callable[[str], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
POLICY_HINT = (
    "the server only fetches public https:// URLs and the prefixes its admin allows: ask the admin to add the "
    "URL's prefix to allowed_url_prefixes (ENVYARD_ALLOWED_URL_PREFIXES, `envyard serve --allow-url PREFIX`) "
    "or, for file:// channels, its directory to allowed_file_roots"
)


def system_resolver(host: str) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), via the system resolver."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def forbidden_address(address: str | IPAddress) -> str | None:
    """Why a build may not connect to ``address`` (loopback, private, link-local ...), or None if it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return forbidden_address(embedded)
    for flag, what in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, flag):
            return what
    if not ip.is_global:
        return "not a public address"
    return None


def _split(url: str) -> tuple[str, str, int | None, tuple[str, ...]]:
    """(scheme, host, port, path segments) of ``url``, lower-cased where case does not matter."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    segments = tuple(unquote(s) for s in parts.path.split("/") if s)
    return parts.scheme.lower(), (parts.hostname or "").lower().rstrip("."), port, segments


def _default_port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else {"http": 80, "https": 443}.get(scheme)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """The URLs a service build may fetch (see the module docstring)."""

    allowed_prefixes: tuple[str, ...] = ()
    allowed_file_roots: tuple[Path, ...] = ()
    allow_public_https: bool = True
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, *, resolver: Resolver = system_resolver) -> UrlPolicy:
        """The policy of a server or worker: its allow-lists plus its own channel alias, mirrors and pip index."""
        mirrors: Mapping[str, Sequence[str]] = settings.mirrors or {}
        trusted = [
            *settings.allowed_url_prefixes,
            settings.channel_alias,
            *mirrors,
            *(url for urls in mirrors.values() for url in urls),
            *([settings.pip_index_url] if settings.pip_index_url else []),
        ]
        roots = [Path(p) for p in settings.allowed_file_roots]
        prefixes = []
        for prefix in trusted:
            if prefix.lower().startswith("file:"):
                roots.append(_file_path(prefix))
            else:
                prefixes.append(prefix)
        return cls(
            allowed_prefixes=tuple(dict.fromkeys(prefixes)),
            allowed_file_roots=tuple(dict.fromkeys(r.absolute() for r in roots)),
            allow_public_https=settings.allow_public_https,
            resolver=resolver,
        )

    def _prefixed(self, url: str) -> bool:
        scheme, host, port, segments = _split(url)
        if ".." in segments or "." in segments:
            return False
        for prefix in self.allowed_prefixes:
            p_scheme, p_host, p_port, p_segments = _split(prefix)
            if (scheme, host) != (p_scheme, p_host) or p_port == -1:
                continue
            if _default_port(scheme, port) != _default_port(p_scheme, p_port):
                continue
            if segments[: len(p_segments)] == p_segments:
                return True
        return False

    def violation(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None. Resolves the host (public https URLs): call it again just
        before the fetch."""
        scheme, host, port, segments = _split(url)
        if scheme == "file":
            if host not in ("", "localhost"):
                return "file:// URLs may not name a host"
            path = _file_path(url)
            if ".." in path.parts:
                return "file:// URLs may not contain '..'"
            real = Path(path).resolve()
            if any(real.is_relative_to(root.resolve()) for root in self.allowed_file_roots):
                return None
            return "file:// URLs are only read under an allowed file root"
        if port == -1:
            return "the URL has an invalid port"
        if self._prefixed(url):
            return None
        if scheme != "https":
            return f"{scheme}:// URLs are only fetched under an allowed prefix" if scheme else "it is not a URL"
        if not self.allow_public_https:
            return "only the allowed prefixes are fetched"
        if not host:
            return "the URL has no host"
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            reason = forbidden_address(literal)
            return f"{host} is {reason}" if reason else None
        try:
            addresses = list(self.resolver(host))
        except (OSError, UnicodeError):
            return f"the host {host} does not resolve"
        if not addresses:
            return f"the host {host} does not resolve"
        for address in addresses:
            reason = forbidden_address(address)
            if reason:
                return f"the host {host} resolves to {address}, {reason}"
        return None

    def check(
        self,
        url: str,
        *,
        what: str,
        shown: str | None = None,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        """ForbiddenUrlError naming ``what`` (e.g. ``channel``) and the URL as the user wrote it (``shown``)."""
        reason = self.violation(url)
        if reason is not None:
            raise ForbiddenUrlError(
                f"{what} {shown or url!r} is not allowed: {reason}",
                file=file,
                line=line,
                field=field,
                hint=POLICY_HINT,
                details={"url": shown or url, "reason": reason},
            )

    def check_all(self, urls: Iterable[FetchedUrl], *, file: str | None = None,
                  lines: Callable[[str], int | None] = lambda shown: None) -> None:
        """:meth:`check` for each distinct URL (each host resolved once); ``lines`` finds a URL's line."""
        cached = self.cached()
        seen: set[str] = set()
        for item in urls:
            if item.url not in seen:
                seen.add(item.url)
                cached.check(item.url, what=item.what, shown=item.shown, file=file, line=lines(item.shown),
                             field=item.field)

    def cached(self) -> UrlPolicy:
        """This policy with a resolver that resolves each host once (for one check of many URLs)."""
        memo: dict[str, Sequence[str]] = {}
        resolve = self.resolver

        def resolver(host: str) -> Sequence[str]:
            if host not in memo:
                memo[host] = list(resolve(host))
            return memo[host]

        return UrlPolicy(self.allowed_prefixes, self.allowed_file_roots, self.allow_public_https, resolver)


class FetchedUrl(NamedTuple):
    """A URL a build would fetch: the URL, what it is, how the user wrote it, and the spec field."""

    url: str
    what: str
    shown: str
    field: str


def _spec_channel(text: str) -> str | None:
    """The channel of a ``channel::name`` MatchSpec, or the URL of a URL MatchSpec."""
    if "::" in text:
        return text.rsplit("::", 1)[0]
    return text.split()[0] if "://" in text.split()[0] else None


def spec_urls(spec: EnvironmentSpec, channels: ChannelOptions) -> list[FetchedUrl]:
    """Every URL a lock of ``spec`` fetches besides the server's defaults (PyPI when no index is named)."""
    from packaging.requirements import Requirement

    from envyard.builder.channels import channel_url
    from envyard.builder.spec_pip import redact_url

    found = [FetchedUrl(channel_url(c, channels), "channel", c, "channels") for c in spec.channels]
    for dep in spec.dependencies:
        channel = _spec_channel(dep.spec)
        if channel is not None:
            found.append(FetchedUrl(channel_url(channel, channels), "channel", channel, "dependencies"))
    pip = spec.pip
    if pip is not None:
        indexes = (pip.index_url, *pip.extra_index_urls)
        found += [FetchedUrl(u, "pip index", redact_url(u), "pip") for u in indexes if u]
        found += [FetchedUrl(u, "pip find-links", redact_url(u), "pip") for u in pip.find_links]
        for req in pip.requirements:
            url = Requirement(req.text).url
            if url:
                bare = url.split("+", 1)[1] if "+" in url.split("://", 1)[0] else url
                found.append(FetchedUrl(bare, "pip requirement URL", url, "pip"))
    return found


def lock_urls(lock: EnvironmentLock) -> list[FetchedUrl]:
    """Every package URL an install of ``lock`` downloads."""
    found: list[FetchedUrl] = []
    for platform in lock.platforms.values():
        found += [FetchedUrl(p.url, "package URL", p.url, "package") for p in platform.conda]
        found += [FetchedUrl(p.url, "package URL", p.url, "package") for p in platform.pip]
    return found


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    return Path(url2pathname(parts.path))
