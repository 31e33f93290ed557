"""Request and response bodies of /api/v1 (the OpenAPI schema is generated from these).

The worker protocol's bodies (/api/v1/jobs) are in :mod:`envyard.worker.protocol`, shared with the worker; a build's
:class:`~envyard.worker.protocol.BuildOptions` are submitted here and handed to its worker from there.

Request bodies are :class:`RequestModel`: strict, so a JSON value of the wrong type (``"public": 0``,
``"relock": "yes"``, ``"build_id": "7"``) is a 422 rather than coerced.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from envyard.api.ids import Id
from envyard.worker.protocol import BuildOptions

__all__ = [
    "AccessVerdict",
    "ArtifactRead",
    "AuditRead",
    "BindingCreate",
    "BindingRead",
    "BuildDiff",
    "DevicePoll",
    "BuildError",
    "BuildRead",
    "BuildSubmit",
    "EnvironmentCreate",
    "EnvironmentRead",
    "EnvironmentUpdate",
    "GcReport",
    "GcRequest",
    "GrantRead",
    "GrantSet",
    "IdTokenExchange",
    "MAX_GRACE_SECONDS",
    "NAME_PATTERN",
    "NamespaceCreate",
    "NamespaceRead",
    "NamespaceUpdate",
    "PackageChange",
    "Page",
    "PublicationRead",
    "PublishRequest",
    "RegistryTargetCreate",
    "RegistryTargetRead",
    "RegistryToken",
    "RequestModel",
    "SetCurrent",
    "TokenCreate",
    "TokenCreated",
    "TokenRead",
    "UserCreate",
    "UserRead",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_GRACE_SECONDS = 10 * 366 * 86400  # ten years: a bound, so that no date arithmetic overflows


class RequestModel(BaseModel):
    """A request body: JSON types are not coerced (a boolean field takes true and false only)."""

    model_config = ConfigDict(strict=True)


class NamespaceCreate(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description="Letters, digits, '.', '_' and '-'.")
    description: str = Field(default="", max_length=1000)


class NamespaceRead(BaseModel):
    name: str
    description: str
    created_at: datetime
    environments: int = 0
    public: bool = False
    allow_sdists: bool = False


class BuildSubmit(RequestModel):
    spec: str = Field(min_length=1, max_length=1_000_000, description="environment.yml (or lockfile) text.")
    filename: str = Field(default="environment.yml", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    platforms: list[str] = Field(default_factory=list, description="Empty: the spec's platforms, else the host's.")
    options: BuildOptions = Field(default_factory=BuildOptions)
    relock: bool = Field(default=False, description="Solve again even when an identical spec was built.")


class EnvironmentCreate(BuildSubmit):
    namespace: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=1000)


class BuildError(BaseModel):
    code: str
    stage: str | None
    message: str
    hint: str | None


class BuildRead(BaseModel):
    id: int
    environment: str
    status: str
    platforms: list[str]
    options: dict[str, Any]
    attempt: int
    spec_sha256: str
    current: bool = False
    reused: bool = False
    cancel_requested: bool = False
    error: BuildError | None = None
    timestamps: dict[str, datetime | None]
    image_digest: str | None = None
    image_reference: str | None = None
    lock_sha256: str | None = None
    package_count: int = 0
    log_lines: int = 0
    worker: str | None = None
    pinned: bool = False
    collected_at: datetime | None = None


class EnvironmentRead(BaseModel):
    namespace: str
    name: str
    description: str
    current_build: BuildRead | None
    created_at: datetime
    updated_at: datetime
    deprecated: DeprecationRead | None = None


class EnvironmentUpdate(RequestModel):
    description: str | None = Field(default=None, max_length=1000)


class SetCurrent(RequestModel):
    build_id: Id


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ArtifactRead(BaseModel):
    kind: str
    name: str
    platform: str | None
    digest: str
    size: int
    media_type: str
    url: str
    partial: bool = Field(default=False, description="Kept from a build that failed after producing it.")


class PackageChange(BaseModel):
    platform: str
    manager: str
    name: str
    old: str | None
    new: str | None


class BuildDiff(BaseModel):
    old_build: int
    new_build: int
    added: list[PackageChange]
    removed: list[PackageChange]
    changed: list[PackageChange]


class TokenCreate(RequestModel):
    """A new API token. Admins may give any global role and any owner; a user makes tokens for themself only,
    with their own bindings at most."""

    name: str = Field(min_length=1, max_length=100)
    role: Literal["admin", "user", "worker", "reader"] = "user"
    user: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN,
                             description="The owner (a user or service account; admins only; default: the caller's "
                             "user, none for an admin token without one).")
    max_role: Literal["viewer", "editor", "admin"] | None = Field(
        default=None, description="The highest role the token has on any namespace, whatever its bindings.")
    read_only: bool = Field(default=False, description="Read and pull only.")
    namespaces: list[str] | None = Field(default=None, max_length=50,
                                         description="Namespace globs the token is limited to (default: all).")
    expires_in_seconds: int | None = Field(default=None, gt=0, le=MAX_GRACE_SECONDS,
                                           description="The token stops working this many seconds from now.")


class TokenCreated(BaseModel):
    id: int
    name: str
    role: str
    token: str
    user: str | None = None
    expires_at: datetime | None = None


class TokenRead(BaseModel):
    """A token as listed (never its secret)."""

    id: int
    name: str
    role: str
    user: str | None
    revoked: bool
    created_at: datetime
    expires_at: datetime | None
    max_role: str | None
    read_only: bool
    namespaces: list[str] | None


class UserCreate(RequestModel):
    name: str = Field(max_length=100, pattern=NAME_PATTERN)
    kind: Literal["user", "service"] = Field(default="user", description="service: an account for CI")
    groups: list[str] = Field(default_factory=list, max_length=200)


class UserRead(BaseModel):
    id: int
    name: str
    kind: str
    provider: str
    email: str | None
    namespace: str | None
    groups: list[str]
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


class BindingCreate(RequestModel):
    role: Literal["viewer", "editor", "admin"]
    pattern: str = Field(min_length=1, max_length=201, description="namespace/environment globs: */*, team-*/*, "
                         "global/python-*; a bare namespace glob means NAMESPACE/*")
    subject_kind: Literal["user", "group", "token"]
    subject: str = Field(min_length=1, max_length=200, description="a user name, a group name, a token id")


class BindingRead(BaseModel):
    id: int
    role: str
    pattern: str
    subject_kind: str
    subject: str
    created_at: datetime
    created_by: str | None


class AccessVerdict(BaseModel):
    """``envyard access check``: the verdict and why."""

    subject: str
    action: str
    resource: str
    allowed: bool
    role: str | None = Field(description="the role the subject has on the resource (capped by the token's limits)")
    binding: str | None = Field(description="the binding that decided (allowed, or the strongest that applied)")
    reasons: list[str]
    bindings: list[str] = Field(description="every binding of the subject")


class GcRequest(RequestModel):
    dry_run: bool = Field(default=False, description="Report what would be deleted; delete nothing.")
    grace_seconds: float | None = Field(
        default=None, ge=0, le=MAX_GRACE_SECONDS, allow_inf_nan=False,
        description="Keep unreferenced blobs written more recently than this (at most ten years) "
        "[default: the server's ENVYARD_GC_GRACE_SECONDS].",
    )


class GcReport(BaseModel):
    """What one garbage collection found and did (a dry run deletes nothing and removes nothing)."""

    dry_run: bool
    grace_seconds: float
    blobs: int = Field(description="Blobs in the store when it was listed.")
    bytes: int = Field(description="Their size.")
    referenced: int = Field(description="Blobs an artifact of a retained build references.")
    unreferenced: int = Field(description="Blobs no build references: the candidates.")
    kept_held: int = Field(description="Candidates kept: a running build uploaded or found them.")
    kept_recent: int = Field(description="Candidates kept: written within the grace period.")
    kept_racing: int = Field(description="Candidates kept: a build took them while this collection ran.")
    deletable: int = Field(description="Candidates old enough and not held: what a collection deletes.")
    deletable_bytes: int
    deleted: int
    deleted_bytes: int
    holds_released: int = Field(description="Holds of finished builds removed.")
    stale_tombstones: int = Field(description="Tombstones a crashed collection left, removed.")
    stale_uploads: int = Field(description="Abandoned spool files and presigned staging objects removed.")
    stale_upload_bytes: int
    seconds: float


# --- namespace access and registry tokens ---------------------------------------------------------------------


class NamespaceUpdate(RequestModel):
    public: bool | None = Field(default=None, description="Anyone (no token needed) may read and pull.")
    description: str | None = Field(default=None, max_length=1000)
    allow_sdists: bool | None = Field(
        default=None, description="Builds may resolve and install pip source distributions, which runs their "
        "build code on the worker (in its sandbox); off by default: wheels only.",
    )


class GrantSet(RequestModel):
    role: Literal["viewer", "editor"] = Field(description="viewer: read and pull; editor: also build.")


class GrantRead(BaseModel):
    namespace: str
    token_id: int
    token_name: str
    token_role: str
    role: str
    created_at: datetime


class RegistryToken(BaseModel):
    """Docker token auth's reply: the same token under both names clients look for."""

    token: str
    access_token: str
    expires_in: int
    issued_at: str


# --- registry targets and publications ------------------------------------------------------------------------


class RegistryTargetCreate(RequestModel):
    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(min_length=1, max_length=500, description="http(s)://host[:port] of the registry.")
    repository: str = Field(default="{namespace}/{environment}", min_length=1, max_length=300,
                            description="Repository template: {namespace} and {environment} (in lower case).")
    username: str | None = Field(default=None, min_length=1, max_length=200)
    password: str | None = Field(default=None, min_length=1, max_length=10_000, repr=False,
                                 description="Password or token; stored encrypted, never returned.")
    tls_verify: bool = Field(default=True, description="Check the registry's TLS certificate (https).")
    enabled: bool = Field(default=True, description="Publish every completed build of the namespace here.")


class RegistryTargetRead(BaseModel):
    namespace: str
    name: str
    url: str
    repository: str
    username: str | None
    has_password: bool
    tls_verify: bool
    enabled: bool
    created_at: datetime


class PublishRequest(RequestModel):
    target: str | None = Field(default=None, pattern=NAME_PATTERN,
                               description="Only this target [default: every enabled target of the namespace].")


class PublicationRead(BaseModel):
    id: int
    build_id: int
    namespace: str
    target: str
    status: str
    attempt: int
    not_before: datetime | None
    reference: str | None
    digest: str | None
    uploaded_blobs: int
    uploaded_bytes: int
    mounted_blobs: int
    existing_blobs: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class AuditRead(BaseModel):
    """One audit event: who did what to which target when, and the state before and after."""

    id: int
    at: datetime
    actor_kind: str
    actor_name: str
    actor_id: int | None
    action: str
    target: str
    before: Any
    after: Any
    request_id: str | None


class IdTokenExchange(RequestModel):
    id_token: str = Field(min_length=1, max_length=20_000, description="an ID token of the configured provider")


class DevicePoll(RequestModel):
    device_code: str = Field(min_length=1, max_length=2000)


# --- admins: quotas, retention, promotion, deprecation (docs/admin.md) -------------------------------------------


class QuotaSet(RequestModel):
    """A namespace's quotas and retention; a field given as null removes that limit, one left out is kept."""

    storage_bytes: int | None = Field(default=None, ge=0)
    concurrent_builds: int | None = Field(default=None, ge=0)
    submissions_per_minute: int | None = Field(default=None, ge=0)
    keep_last: int | None = Field(default=None, ge=0, description="Retention: builds kept per environment.")
    keep_days: int | None = Field(default=None, ge=0, description="Retention: builds younger than this are kept.")


class QuotaRead(BaseModel):
    namespace: str
    storage_bytes: int | None
    concurrent_builds: int | None
    submissions_per_minute: int | None
    keep_last: int | None
    keep_days: int | None
    storage_used: int


class RetentionRequest(RequestModel):
    namespace: str | None = Field(default=None, pattern=NAME_PATTERN,
                                  description="Only this namespace (default: every one).")
    dry_run: bool = True


class RetainedBuild(BaseModel):
    id: int
    environment: str
    status: str
    created_at: datetime


class RetentionReport(BaseModel):
    """Builds retention removes (or would, on a dry run), and the blobs and bytes that frees."""

    dry_run: bool
    builds: list[RetainedBuild]
    blobs: list[str]
    bytes: int
    freed_blobs: int = 0
    freed_bytes: int = 0


class PromotionRequest(RequestModel):
    namespace: str = Field(pattern=NAME_PATTERN, description="The curated namespace (created if needed).")
    name: str | None = Field(default=None, pattern=NAME_PATTERN,
                             description="The curated environment (default: the build's environment's name).")


class DeprecationSet(RequestModel):
    successor: str | None = Field(default=None, max_length=201,
                                  description="NAMESPACE/NAME of the environment to use instead.")
    message: str = Field(default="", max_length=1000)


class DeprecationRead(BaseModel):
    environment: str
    successor: str | None
    message: str
    deprecated_at: datetime
