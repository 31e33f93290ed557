"""The service's settings: a worker's :class:`~envyard.worker.settings.WorkerSettings` (builder's settings plus
what workers need) plus what the server needs.

One object per process, read from ``ENVYARD_*`` variables (and command-line options on top).
"""

from __future__ import annotations

import ipaddress

from pydantic import Field

from envyard.worker.settings import WorkerSettings

__all__ = ["ServiceSettings"]


class ServiceSettings(WorkerSettings):
    """Settings of ``envyard serve``: the API, its artifact store and its in-process workers."""

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
    secret_key: str | None = Field(
        default=None, description="Signs registry tokens and encrypts registry credentials; default "
        "<data_dir>/secret-key (created once). Every replica of one deployment needs the same key.",
    )
    public_docs: bool | None = Field(
        default=None, description="Serve /docs, /redoc and /openapi.json without a token (false: any valid token "
        "needed); default: open only for an embedded server (SQLite and a local artifact store, on loopback).",
    )
    # --- admins: quotas and metrics (docs/admin.md) ---
    default_storage_quota_bytes: int | None = Field(
        default=None, ge=0, description="Storage quota of namespaces that set none (none: unlimited).")
    default_concurrent_builds: int | None = Field(
        default=None, ge=0, description="Builds queued or running per namespace that sets none (none: unlimited).")
    default_submissions_per_minute: int | None = Field(
        default=None, ge=0, description="Builds one user may submit per minute where the namespace sets no rate.")
    metrics_token: str | None = Field(
        default=None, description="Bearer token that may read /metrics (besides admin tokens).")
    metrics_allowed_networks: list[str] = Field(
        default_factory=list, description="Client networks (CIDR) that may read /metrics without a token.")

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
