"""envyard's settings: one pydantic-settings object, read from ``ENVYARD_*`` variables.

Library code never reads the environment itself: the CLI (or the service)
builds one :class:`Settings` and passes the values it needs down.

>>> s = Settings(channel_alias="file:///srv/mirror/", _env_file=None)
>>> s.channel_alias
'file:///srv/mirror/'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "envyard"


class Settings(BaseSettings):
    """All of envyard's configuration."""

    model_config = SettingsConfigDict(env_prefix="ENVYARD_", env_nested_delimiter="__", extra="ignore")

    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Root of envyard's caches: repodata (repodata/), packages (pkgs/), pip (pip/).",
    )
    channel_alias: str = Field(
        default="https://conda.anaconda.org/",
        description="Base URL that bare channel names (conda-forge) resolve against.",
    )
    mirrors: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Channel URL prefix -> mirror URLs tried instead (JSON in ENVYARD_MIRRORS).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3/MinIO endpoint for s3:// channels; credentials come from the standard AWS variables "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or rattler's authentication storage.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region for s3:// channels.")
    s3_addressing_style: str = Field(default="path", description="'path' (MinIO) or 'virtual-host'.")
    pip_index_url: str | None = Field(default=None, description="Default pip index when a spec names none.")
    max_concurrent_requests: int = Field(default=50, description="Parallel repodata downloads.")
    shared_package_caches: list[Path] = Field(
        default_factory=list,
        description="Read-only package caches looked up after the writable one (JSON list in "
        "ENVYARD_SHARED_PACKAGE_CACHES), e.g. a cache baked into a worker image or on a shared volume.",
    )
    allowed_url_prefixes: list[str] = Field(
        default_factory=list,
        description="Service builds: channel, channel_alias, pip index and find-links URL prefixes a spec may name "
        "besides public https:// hosts (JSON list in ENVYARD_ALLOWED_URL_PREFIXES), e.g. an internal mirror on a "
        "private address. The server's own channel_alias, mirrors and pip_index_url are always allowed.",
    )
    allowed_file_roots: list[Path] = Field(
        default_factory=list,
        description="Service builds: directories whose file:// channels and find-links a spec may name (JSON list "
        "in ENVYARD_ALLOWED_FILE_ROOTS); no other path of the server is readable by a build.",
    )
    allow_public_https: bool = Field(
        default=True,
        description="Service builds: also allow https:// URLs whose host resolves only to public addresses.",
    )
    env_prefix: str = Field(default="/opt/env", description="Where environments live inside images.")
    docker_config: Path = Field(
        default_factory=lambda: Path.home() / ".docker" / "config.json",
        description="Registry credentials file (as written by docker/podman login).",
    )

    @property
    def repodata_cache_dir(self) -> Path:
        return self.cache_dir / "repodata"

    @property
    def package_cache_dir(self) -> Path:
        return self.cache_dir / "pkgs"

    @property
    def pip_cache_dir(self) -> Path:
        return self.cache_dir / "pip"

    @property
    def oci_store_dir(self) -> Path:
        return self.cache_dir / "oci"

    @property
    def package_cache_layers(self) -> list[Path]:
        """The writable package cache first, then the shared read-only ones."""
        return [self.package_cache_dir, *self.shared_package_caches]
