"""The service's settings: a worker's :class:`~envyard.worker.settings.WorkerSettings` (builder's settings plus
what workers need) plus what the server needs.

One object per process, read from ``ENVYARD_*`` variables (and command-line options on top).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

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
    kubernetes_tools_image: str = Field(
        default="envyard/envyard:0.1.0", description="envyard's own image, run by the init containers of "
        "generated Pods and Jobs (`envyard data fetch`, `envyard k8s unpack`); pin it by digest in production.",
    )
    kubernetes_base_image: str = Field(
        default="quay.io/jupyter/minimal-notebook:latest", description="The session image of the image-volume and "
        "archive variants of generated Pods and Jobs when the request names none (?base_image=).",
    )

    # --- where builds run (docs/kubernetes-builds.md) ---------------------------------------------------------------
    build_backend: Literal["inprocess", "external", "kubernetes"] = Field(
        default="inprocess", description="Where builds run: 'inprocess' (worker threads of envyard serve, "
        "--workers), 'external' (only `envyard worker` processes started elsewhere), 'kubernetes' (one Job per "
        "build attempt, running `envyard worker --once` with a build-scoped token).",
    )
    kubernetes_namespace: str | None = Field(
        default=None, description="Namespace of build Jobs; default the server pod's own namespace, else 'default'.",
    )
    kubernetes_worker_image: str = Field(
        default="envyard/envyard:0.1.0", description="Image of build Jobs (envyard's own image, deploy/image/).",
    )
    kubernetes_max_jobs: int = Field(default=4, ge=1, description="Build Jobs running or pending at once.")
    kubernetes_build_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"*": {"cpu": "1", "memory": "2Gi"}},
        description="Resource requests of build pods per envyard namespace (JSON), '*' for the rest, e.g. "
        '{"*": {"cpu": "1", "memory": "2Gi"}, "ml": {"cpu": "4", "memory": "16Gi"}}.',
    )
    kubernetes_cache_pvc: str | None = Field(
        default=None, description="PersistentVolumeClaim (ReadWriteMany) shared by build pods as their package "
        "cache; default an emptyDir per pod.",
    )
    kubernetes_cache_path: str = Field(default="/var/cache/envyard", description="Where build pods mount the cache.")
    kubernetes_work_path: str = Field(default="/var/lib/envyard/work", description="Build pods' scratch (emptyDir).")
    kubernetes_job_ttl_seconds: int = Field(
        default=3600, ge=0, description="ttlSecondsAfterFinished of build Jobs (the cluster deletes them after).",
    )
    kubernetes_job_start_seconds: int = Field(
        default=900, ge=10, description="How long a build Job may take to start and claim its build; its token "
        "lives this plus build_time_limit_seconds.",
    )
    kubernetes_service_account: str | None = Field(
        default=None, description="ServiceAccount of build pods (they need no Kubernetes API access).",
    )
    kubernetes_worker_env: dict[str, str] = Field(
        default_factory=dict, description="More environment of build pods (JSON), e.g. "
        '{"ENVYARD_CHANNEL_ALIAS": "https://conda.example/"}.',
    )
    kubernetes_poll_seconds: float = Field(default=2.0, gt=0, description="How often the Job launcher looks.")

    github_hook_secret: str | None = Field(
        default=None, description="Secret of GitHub push webhooks (POST /api/v1/hooks/github, checked against "
        "X-Hub-Signature-256); unset: that hook answers 401 to everything.",
    )
    gitlab_hook_token: str | None = Field(
        default=None, description="Token of GitLab push webhooks (POST /api/v1/hooks/gitlab, compared with "
        "X-Gitlab-Token); unset: that hook answers 401 to everything.",
    )
    hook_git_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long fetching a spec from an environment's git repository may take.",
    )
    relock_interval_seconds: float = Field(
        default=60.0, ge=0, description="How often the server looks for due scheduled relocks (0: only on request, "
        "POST /api/v1/admin/relocks/run).",
    )
    relock_notify_secret: str | None = Field(
        default=None, description="Key of the HMAC-SHA256 signature (X-Envyard-Signature-256) of relock "
        "notifications; unset: notifications are sent unsigned.",
    )
    relock_notify_attempts: int = Field(default=5, ge=1, description="Tries of one relock notification.")
    relock_notify_backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the second try of a notification; doubled for each further one.",
    )
    snapshot_timeout_seconds: float = Field(
        default=300.0, gt=0, description="How long POST /namespaces/{ns}/data-snapshots may take to resolve a DVC "
        "project (clone, read its .dvc files) before it answers 503.",
    )

    # --- identity (docs/identity.md) ---
    global_namespace: str = Field(
        default="global", description="The curated namespace every signed-in user (any valid token) may read.")
    login_token_hours: float = Field(
        default=12.0, gt=0, description="Lifetime of the API token a sign-in (OpenID Connect, JupyterHub) issues.")
    public_url: str | None = Field(
        default=None, description="The URL users reach this server at (the sign-in callbacks are under it); "
        "default: the URL of the request.")
    oidc_issuer: str | None = Field(
        default=None, description="OpenID Connect issuer URL (discovery at <issuer>/.well-known/openid-configuration);"
        " unset: no OpenID Connect sign-in.")
    oidc_client_id: str | None = Field(default=None, description="This server's client id at the OpenID provider.")
    oidc_client_secret: str | None = Field(default=None, description="This server's client secret (if confidential).")
    oidc_scopes: str = Field(default="openid profile email groups", description="Scopes asked for at sign-in.")
    oidc_username_claim: str = Field(default="preferred_username", description="The claim naming the user.")
    oidc_groups_claim: str = Field(default="groups", description="The claim listing the user's groups.")
    oidc_audience: str | None = Field(
        default=None, description="The audience ID tokens must name (default: the client id).")
    oidc_leeway_seconds: int = Field(
        default=30, ge=0, le=600, description="Clock skew allowed when checking ID token times (exp, iat).")
    jupyterhub_url: str | None = Field(
        default=None, description="A JupyterHub whose users may sign in (its OAuth2 provider, /hub/api/oauth2/...); "
        "unset: no JupyterHub sign-in.")
    jupyterhub_client_id: str | None = Field(default=None, description="This server's OAuth client id at the hub.")
    jupyterhub_client_secret: str | None = Field(default=None, description="This server's OAuth client secret.")

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
