"""The service's settings: builder's :class:`~builder.settings.Settings` plus what the server and workers need.

One object per process, read from ``ENVYARD_*`` variables (and command-line options on top).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field

from envyard.builder.settings import Settings


class ServiceSettings(Settings):
    """Settings of ``envyard serve`` and ``envyard worker``."""

    data_dir: Path = Field(default=Path("envyard-data"), description="Database, artifacts and admin token.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/envyard.db (WAL)."
    )
    storage_url: str | None = Field(
        default=None, description="Artifact store: file:///path or s3://bucket/prefix; default <data_dir>/artifacts."
    )
    s3_access_key: str | None = Field(default=None, description="Access key for an s3:// artifact store.")
    s3_secret_key: str | None = Field(default=None, description="Secret key for an s3:// artifact store.")
    registry_blob_redirect: bool = Field(
        default=False, description="/v2/ blob GETs answer 307 to a presigned store URL when the store has one (S3)."
    )
    lease_seconds: float = Field(
        default=30.0, description="How long a claimed build stays a worker's without a heartbeat."
    )
    heartbeat_seconds: float = Field(default=2.0, description="How often workers heartbeat (and learn of cancels).")
    build_time_limit_seconds: float = Field(default=3600.0, description="Running builds past this are failed.")
    max_attempts: int = Field(default=3, description="Times a build is tried before a lost lease fails it.")
    retry_backoff_seconds: float = Field(default=2.0, description="First requeue delay; doubles each attempt.")
    publish_max_attempts: int = Field(
        default=5, ge=1, description="Times a push to a registry target is tried when the registry is unreachable or "
        "fails (5xx); rejected credentials and other refusals fail at once.",
    )
    publish_backoff_seconds: float = Field(
        default=10.0, ge=0, description="Delay before the second push attempt to a registry target; doubles each time.",
    )
    gc_grace_seconds: float = Field(
        default=3600.0, ge=0, description="Garbage collection keeps unreferenced blobs written more recently than "
        "this (uploads not yet referenced by their build, writers that take no hold).",
    )
    gc_interval_seconds: float = Field(
        default=0.0, ge=0, description="Run garbage collection this often in the server (0: only on request).",
    )
    max_log_streams_per_token: int = Field(
        default=20, ge=1, description="Log streams (GET /builds/{id}/logs?follow=true) one token may hold open at "
        "once; more are answered 429 with Retry-After. Like the two limits below, it binds user, reader and "
        "anonymous callers (by address), not admin and worker tokens.",
    )
    max_submissions_per_token: int = Field(
        default=4, ge=1, description="Submissions of one token being checked (their specs parsed) at once; more are "
        "answered 429 with Retry-After.",
    )
    max_waiting_builds_per_token: int = Field(
        default=200, ge=1, description="Queued and running builds one token (by name) may have; a submission that "
        "would queue one more is answered 429 with Retry-After.",
    )
    spec_check_processes: int = Field(
        default=2, ge=1, description="Processes that parse submitted specs, apart from the server's threads: slow "
        "specs hold no database connection and never starve the worker protocol and /healthz.",
    )
    api_url: str | None = Field(default=None, description="The server the CLI and workers talk to.")
    token: str | None = Field(default=None, description="API token for the CLI and workers (ENVYARD_TOKEN).")
    secret_key: str | None = Field(
        default=None, description="Signs registry tokens and encrypts registry credentials; default "
        "<data_dir>/secret-key (created once). Every replica of one deployment needs the same key.",
    )
    public_docs: bool | None = Field(
        default=None, description="Serve /docs, /redoc and /openapi.json without a token (false: any valid token "
        "needed); default: open only for an embedded server (SQLite and a local artifact store, on loopback).",
    )

    work_root: Path | None = Field(
        default=None, description="Where workers build (one directory per build attempt, removed after it, swept "
        "at start); default <cache_dir>/work. Keep it outside the data directory: builds may read it.",
    )
    build_sandbox: Literal["bwrap", "uid", "none"] | None = Field(
        default=None, description="How build processes are isolated from the server's files: 'bwrap' (a "
        "bubblewrap sandbox that sees only the build's directory, the caches and the Python installation), "
        "'uid' (run as build_uid; the worker must be root) or 'none'; default bwrap when it works, else uid when "
        "the worker runs as root, else none. The network is shared (builds fetch their channels and indexes).",
    )
    build_uid: int = Field(default=65534, ge=1, description="The user (and group) builds run as in 'uid' mode.")
    build_read_only_paths: list[Path] = Field(
        default_factory=list, description="More paths a sandboxed build may read (JSON list), e.g. a local "
        "channel's directory; file:// channel aliases, mirrors and pip indexes of the settings are added.",
    )

    @property
    def resolved_work_root(self) -> Path:
        return (self.work_root or self.cache_dir / "work").absolute()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'envyard.db').absolute()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "artifacts").absolute().as_uri()

    def embedded(self, host: str) -> bool:
        """Whether ``envyard serve`` on ``host`` is the one-machine setup: SQLite, a local artifact store, and
        listening on a loopback address only."""
        if host == "localhost":
            loopback = True
        else:
            try:
                loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
            except ValueError:
                loopback = False
        return (loopback and self.resolved_database_url.startswith("sqlite")
                and self.resolved_storage_url.startswith("file:"))

    def docs_are_public(self, host: str | None) -> bool:
        """:attr:`public_docs`, or when unset whether the server is :meth:`embedded` (None: the host is not
        known, e.g. an app served by another ASGI server: closed)."""
        if self.public_docs is not None:
            return self.public_docs
        return host is not None and self.embedded(host)

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret-key"
