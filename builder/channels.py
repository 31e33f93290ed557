"""Channels: from what a spec writes (``conda-forge``, a URL, a path) to a base URL, and the gateway.

One :class:`rattler.Gateway` with an on-disk repodata cache serves every solve
of a process; :func:`make_gateway` builds it from :class:`ChannelOptions`.

>>> opts = ChannelOptions(channel_alias="file:///srv/mirror/")
>>> channel_url("conda-forge", opts)
'file:///srv/mirror/conda-forge'
>>> channel_url("https://repo.example.org/conda/bioconda/", opts)
'https://repo.example.org/conda/bioconda'
>>> qualify_spec("conda-forge::numpy >=2", opts)
'file:///srv/mirror/conda-forge::numpy >=2'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import rattler
from rattler.networking import (
    AuthenticationMiddleware,
    Client,
    MirrorMiddleware,
    RetryMiddleware,
    S3Middleware,
)
from rattler.networking.middleware import S3Config

from envyard.builder.errors import ChannelError

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True, slots=True)
class S3Options:
    """Where ``s3://`` channels live (MinIO: path-style addressing)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing_style: str = "path"


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """How channel names become URLs, and which mirrors stand in for them."""

    channel_alias: str = "https://conda.anaconda.org/"
    mirrors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    s3: S3Options | None = None


def channel_url(channel: str, options: ChannelOptions) -> str:
    """The base URL (no trailing slash) of a channel as written in a spec."""
    text = channel.strip()
    if not text:
        raise ChannelError("empty channel name", hint="remove the empty entry from 'channels'")
    if _SCHEME.match(text):
        return text.rstrip("/")
    if text.startswith(("/", "./", "../", "~")):
        return Path(text).expanduser().resolve().as_uri()
    if not _NAME.match(text):
        raise ChannelError(
            f"'{channel}' is neither a channel name nor a URL",
            field="channels",
            hint="write a name such as conda-forge, a URL such as https://host/channel, or an absolute path",
        )
    return options.channel_alias.rstrip("/") + "/" + text


def channel_name(url: str) -> str:
    """A short display name for a channel URL (its last path component).

    >>> channel_name("https://conda.anaconda.org/conda-forge")
    'conda-forge'
    """
    return PurePosixPath(url.rstrip("/")).name or url


def qualify_spec(spec: str, options: ChannelOptions) -> str:
    """Resolve the channel of a ``channel::name`` spec against the alias; other specs pass unchanged."""
    if "::" not in spec:
        return spec
    channel, rest = spec.rsplit("::", 1)
    if channel.startswith(("pkgs/", "defaults")) and "/" not in channel.replace("pkgs/", "", 1):
        return spec
    return f"{channel_url(channel, options)}::{rest}"


def s3_buckets(channel_urls: Sequence[str]) -> tuple[str, ...]:
    """The buckets named by ``s3://bucket/...`` channel URLs.

    >>> s3_buckets(["s3://envs/conda-forge", "https://x.org/c", "s3://envs/extra"])
    ('envs',)
    """
    found = {url[5:].split("/", 1)[0] for url in channel_urls if url.startswith("s3://")}
    return tuple(sorted(found))


def make_gateway(
    cache_dir: Path,
    options: ChannelOptions,
    *,
    channel_urls: Sequence[str] = (),
    max_concurrent_requests: int = 50,
) -> rattler.Gateway:
    """One gateway with an on-disk repodata cache, mirrors, retries, auth and S3 support.

    ``channel_urls`` names the ``s3://`` buckets to route to ``options.s3``'s endpoint;
    credentials come from rattler's authentication storage or the AWS variables.
    """
    middlewares: list[object] = []
    if options.mirrors:
        middlewares.append(MirrorMiddleware({k.rstrip("/"): list(v) for k, v in options.mirrors.items()}))
    middlewares += [AuthenticationMiddleware(), RetryMiddleware(max_retries=3)]
    buckets = s3_buckets(channel_urls)
    if buckets:
        s3 = options.s3 or S3Options()
        config = S3Config(s3.endpoint_url, s3.region, s3.addressing_style)  # type: ignore[arg-type]
        middlewares.append(S3Middleware({bucket: config for bucket in buckets}))
    client = Client(middlewares=middlewares)  # type: ignore[arg-type]
    cache_dir.mkdir(parents=True, exist_ok=True)
    return rattler.Gateway(cache_dir=cache_dir, client=client, max_concurrent_requests=max_concurrent_requests)
