"""Image references as Docker writes them: ``[registry[:port]/]repository[:tag][@sha256:digest]``.

Parsing follows Docker's normalization: a first path component is a registry only
when it has a ``.`` or ``:`` or is ``localhost``; otherwise the image is on Docker Hub,
whose API host is ``registry-1.docker.io`` and whose one-name repositories live
under ``library/``.

>>> parse_reference("127.0.0.1:5000/team/env:1.0")
ImageReference(registry='127.0.0.1:5000', repository='team/env', tag='1.0', digest=None)
>>> parse_reference("python:3.11").repository
'library/python'
>>> str(parse_reference("ghcr.io/org/app"))
'ghcr.io/org/app:latest'
>>> is_loopback("localhost:5000"), is_loopback("[::1]:5000"), is_loopback("ghcr.io")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from envyard.builder.errors import RegistryError

DOCKER_HUB = "docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_REGISTRY_RE = re.compile(_HOST + r"(?::[0-9]{1,5})?")
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_HUB_ALIASES = {DOCKER_HUB, "index.docker.io", DOCKER_HUB_REGISTRY}
_VALID = "[REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/team/env:1.0"


@dataclass(frozen=True, slots=True)
class ImageReference:
    """Where an image lives: registry host[:port], repository, and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to put after ``/manifests/``: the digest when known, else the tag (``latest`` by default)."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag or not self.digest:
            text += f":{self.tag or DEFAULT_TAG}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _invalid(text: str, why: str) -> RegistryError:
    return RegistryError(f"invalid image reference {text!r}: {why}", hint=f"write it as {_VALID}", field="reference")


def parse_reference(text: str) -> ImageReference:
    """Parse a Docker-style image reference; raise :class:`RegistryError` naming the text when malformed."""
    rest = text.strip()
    if not rest:
        raise _invalid(text, "it is empty")
    if "://" in rest:
        raise _invalid(text, "a reference has no URL scheme")
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.fullmatch(digest):
            raise _invalid(text, f"digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, remainder
        if not _REGISTRY_RE.fullmatch(registry):
            raise _invalid(text, f"{registry!r} is not a registry host[:port]")
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _invalid(text, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    if not path:
        raise _invalid(text, "the repository name is missing")
    for component in path.split("/"):
        if not _COMPONENT_RE.fullmatch(component):
            why = "is empty" if not component else "must be lowercase letters, digits and single separators (. _ -)"
            raise _invalid(text, f"repository component {component!r} {why}")
    if registry.lower() in _HUB_ALIASES:
        registry = DOCKER_HUB_REGISTRY
        if "/" not in path:
            path = f"library/{path}"
    if len(path) > 255:
        raise _invalid(text, "the repository name is longer than 255 characters")
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest)


def split_host_port(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets) -> host and port.

    >>> split_host_port("[::1]:5000"), split_host_port("example.com")
    (('::1', 5000), ('example.com', None))
    """
    if registry.startswith("["):
        host, _, port = registry[1:].partition("]")
        return host, int(port[1:]) if port.startswith(":") else None
    if registry.count(":") == 1:
        host, port = registry.split(":")
        return host, int(port) if port.isdigit() else None
    return registry, None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``, with or without a port: registries Docker reaches by HTTP."""
    name, _ = split_host_port(host)
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
