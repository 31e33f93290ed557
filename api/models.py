"""The database: namespaces hold environments, environments have immutable builds.

A spec is stored once by content hash. A build records every state transition with a
timestamp, the lease of the worker that runs it, its typed error, its artifacts (by
digest) and the packages of its lock (for "which environments contain numpy 2.1?").
Logs are appended as chunks, never rewritten.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC (SQLite has no time zones) and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NEVER_REUSED_IDS: dict[str, Any] = {"sqlite_autoincrement": True}
"""Table args of tables whose ids users see (build tags, cursors, token ids): SQLite's AUTOINCREMENT never gives a
deleted row's id to a new row (PostgreSQL sequences never do); migration 0005 converts existing SQLite tables."""


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class BuildStatus(enum.StrEnum):
    QUEUED = "queued"
    SOLVING = "solving"
    INSTALLING = "installing"
    IMAGING = "imaging"
    PUSHING = "pushing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({BuildStatus.COMPLETED, BuildStatus.FAILED, BuildStatus.CANCELED})
RUNNING = (BuildStatus.SOLVING, BuildStatus.INSTALLING, BuildStatus.IMAGING, BuildStatus.PUSHING)
STAGE_ORDER = (BuildStatus.QUEUED, *RUNNING)


class Role(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"
    WORKER = "worker"
    READER = "reader"


class NamespaceRole(enum.StrEnum):
    """A role on a namespace (a grant) or on ``namespace/environment`` globs (a role binding): viewers read (and
    pull), editors also build, admins also change the namespace and who may use it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


class PublicationStatus(enum.StrEnum):
    PENDING = "pending"
    PUSHING = "pushing"
    PUSHED = "pushed"
    FAILED = "failed"


class Namespace(SQLModel, table=True):
    __table_args__ = (NEVER_REUSED_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    description: str = Field(default="", max_length=1000)
    public: bool = False
    allow_sdists: bool = False  # pip may build source distributions (runs their code on the worker); admin-set
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Spec(SQLModel, table=True):
    """An environment spec as submitted, stored once per sha256 of (filename, text)."""

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True, index=True)
    filename: str = Field(max_length=200)
    content: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Environment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_environment_namespace_name"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    name: str = Field(max_length=100, index=True)
    description: str = Field(default="", max_length=1000)
    current_build_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("build.id", use_alter=True, name="fk_environment_current_build")),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Build(SQLModel, table=True):
    __table_args__ = (Index("ix_build_claim", "status", "not_before"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    environment_id: int = Field(sa_column=Column(Integer, ForeignKey("environment.id"), nullable=False, index=True))
    spec_id: int = Field(sa_column=Column(Integer, ForeignKey("spec.id"), nullable=False, index=True))
    status: str = Field(default=BuildStatus.QUEUED, max_length=20)
    platforms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempt: int = 0
    not_before: datetime | None = _ts()
    lease_id: str | None = Field(default=None, max_length=64)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _ts()
    cancel_requested: bool = False
    error_code: str | None = Field(default=None, max_length=100)
    error_stage: str | None = Field(default=None, max_length=20)
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    error_hint: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    queued_at: datetime | None = _ts()
    solving_at: datetime | None = _ts()
    installing_at: datetime | None = _ts()
    imaging_at: datetime | None = _ts()
    pushing_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    image_digest: str | None = Field(default=None, max_length=80)
    lock_sha256: str | None = Field(default=None, max_length=64)
    package_count: int = 0
    log_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    log_lines: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    requested_by: str | None = Field(default=None, max_length=100)
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict))
    pinned: bool = False  # kept by retention (envyard build pin)
    collected_at: datetime | None = _ts()  # retention removed its artifacts (envyard retention apply)


class BuildArtifact(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("build_id", "name", name="uq_build_artifact_name"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    kind: str = Field(max_length=40)
    name: str = Field(max_length=300)
    platform: str | None = Field(default=None, max_length=40)
    sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    media_type: str = Field(max_length=200)
    subject: str | None = Field(default=None, max_length=80, index=True)
    artifact_type: str | None = Field(default=None, max_length=200)
    partial: bool = False  # kept from a build that failed after producing it (its lock files, for inspection)


class BuildPackage(SQLModel, table=True):
    __table_args__ = (Index("ix_build_package_name_version", "name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    platform: str = Field(max_length=40)
    manager: str = Field(max_length=10)
    name: str = Field(max_length=200)
    version: str = Field(max_length=100)
    build: str = Field(default="", max_length=200)


class LogChunk(SQLModel, table=True):
    """A batch of log lines as a worker sent it; a build's log is its chunks in id order."""

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    text: str = Field(sa_column=Column(Text, nullable=False))


class ApiToken(SQLModel, table=True):
    """An API token: its hash (``hash_scheme`` ``hmac-sha256``: keyed with the server's secret key; ``sha256``:
    a token made before migration 0007, rehashed at its next use), its global role, its owner (a user or a service
    account; none: an admin-made token) and its limits (expiry, namespaces, highest role, read-only)."""

    __table_args__ = (NEVER_REUSED_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    token_sha256: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(default=Role.USER, max_length=20)
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    hash_scheme: str = Field(default="sha256", max_length=20)
    user_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("useraccount.id"), index=True))
    expires_at: datetime | None = _ts()
    max_role: str | None = Field(default=None, max_length=20)  # viewer, editor or admin on any namespace
    read_only: bool = False
    namespaces: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # globs; None: all


class NamespaceGrant(SQLModel, table=True):
    """A token's role on a namespace (tokens with the admin or worker role need none)."""

    __table_args__ = (UniqueConstraint("namespace_id", "token_id", name="uq_namespace_grant"),)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    token_id: int = Field(sa_column=Column(Integer, ForeignKey("apitoken.id"), nullable=False, index=True))
    role: str = Field(default=NamespaceRole.VIEWER, max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class RegistryTarget(SQLModel, table=True):
    """An external registry a namespace's completed builds are pushed to; the secret is stored encrypted."""

    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_registry_target_name"),)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    name: str = Field(max_length=100)
    url: str = Field(max_length=500)
    repository: str = Field(default="{namespace}/{environment}", max_length=300)
    username: str | None = Field(default=None, max_length=200)
    secret_ciphertext: str | None = Field(default=None, sa_column=Column(Text))
    tls_verify: bool = True
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Publication(SQLModel, table=True):
    """One completed build pushed (or being pushed) to one registry target."""

    __table_args__ = (
        UniqueConstraint("build_id", "target_id", name="uq_publication_build_target"),
        Index("ix_publication_claim", "status", "not_before"),
    )

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    target_id: int = Field(sa_column=Column(Integer, ForeignKey("registrytarget.id"), nullable=False, index=True))
    status: str = Field(default=PublicationStatus.PENDING, max_length=20)
    attempt: int = 0
    not_before: datetime | None = _ts()
    lease_expires_at: datetime | None = _ts()
    reference: str | None = Field(default=None, max_length=600)
    digest: str | None = Field(default=None, max_length=80)
    uploaded_blobs: int = 0
    uploaded_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    mounted_blobs: int = 0
    existing_blobs: int = 0
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = _ts()


class BlobHold(SQLModel, table=True):
    """A blob a running build uploaded or found already stored: garbage collection keeps it while the build runs."""

    __table_args__ = (UniqueConstraint("sha256", "build_id", name="uq_blob_hold"),)

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, index=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class BlobTombstone(SQLModel, table=True):
    """A blob garbage collection is deleting right now: uploads wait for it to be gone before storing it again."""

    sha256: str = Field(max_length=64, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class EnvironmentSource(SQLModel, table=True):
    """Where an environment's spec lives in a git repository: push hooks rebuild it from the pushed commit."""

    __table_args__ = (UniqueConstraint("environment_id", name="uq_environment_source"),)

    id: int | None = Field(default=None, primary_key=True)
    environment_id: int = Field(sa_column=Column(Integer, ForeignKey("environment.id"), nullable=False))
    repo_url: str = Field(max_length=500, index=True)
    branch: str | None = Field(default=None, max_length=200)  # None: any branch (the repository's default)
    spec_path: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class RelockSchedule(SQLModel, table=True):
    """An environment's scheduled relock: a cron expression, when it is next due, and who to tell of a change."""

    __table_args__ = (UniqueConstraint("environment_id", name="uq_relock_schedule"),)

    id: int | None = Field(default=None, primary_key=True)
    environment_id: int = Field(sa_column=Column(Integer, ForeignKey("environment.id"), nullable=False))
    cron: str = Field(max_length=100)
    notify_url: str | None = Field(default=None, max_length=500)
    next_run_at: datetime | None = _ts(index=True)
    last_run_at: datetime | None = _ts()
    last_result: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class HookDelivery(SQLModel, table=True):
    """A webhook delivery already handled (GitHub X-GitHub-Delivery, GitLab X-Gitlab-Event-UUID): a replay of it
    is ignored. The unique constraint decides between concurrent copies of one delivery."""

    __table_args__ = (UniqueConstraint("provider", "delivery_id", name="uq_hook_delivery"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    delivery_id: str = Field(max_length=200)
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class BuildLockDiff(SQLModel, table=True):
    """Why a scheduled relock queued a build: the lock diff against the build that was current."""

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, unique=True))
    previous_build_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("build.id")))
    diff: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ServiceLease(SQLModel, table=True):
    """A named lease on periodic work (the relock scheduler): only the replica holding it runs that work."""

    name: str = Field(max_length=50, primary_key=True)
    holder: str = Field(max_length=100)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class NamespaceSecret(SQLModel, table=True):
    """A named secret of a namespace (e.g. DVC remote credentials), encrypted like registry target passwords."""

    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_namespace_secret_name"),)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    name: str = Field(max_length=100)
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class DataSnapshotRecord(SQLModel, table=True):
    """A DVC data snapshot resolved by the server: immutable once stored (``document`` is the builder's snapshot)."""

    __table_args__ = (NEVER_REUSED_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    repo: str = Field(max_length=1000)
    rev: str = Field(max_length=255)
    commit: str = Field(max_length=64)
    remote: str | None = Field(default=None, max_length=200)
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class RunManifestRecord(SQLModel, table=True):
    """A run manifest stored by digest (its canonical bytes are a blob of the store) for a build it names; the
    build is kept (its environment cannot be deleted) and its blobs are never garbage-collected."""

    __table_args__ = (UniqueConstraint("namespace_id", "sha256", name="uq_run_manifest_digest"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=False, index=True))
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    referrer_sha256: str | None = Field(default=None, max_length=64)
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AuditEvent(SQLModel, table=True):
    """One change of access, policy, quota, token, promotion or deletion: who (the principal), what (an action such
    as ``token.create``, ``binding.delete``, ``policy.update`` and its target), when, and the state before and
    after (JSON; None where there was none). Rows are only ever added."""

    __table_args__ = (Index("ix_auditevent_action", "action"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))
    actor_kind: str = Field(max_length=20)  # token, user, service, anonymous, system
    actor_name: str = Field(max_length=200, index=True)
    actor_id: int | None = None  # the token's id
    action: str = Field(max_length=100)
    target: str = Field(max_length=500)
    before: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    request_id: str | None = Field(default=None, max_length=100)


class User(SQLModel, table=True):
    """A person (signed in through OpenID Connect or JupyterHub) or a service account (CI), with a personal
    namespace they administer."""

    __tablename__ = "useraccount"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_useraccount_subject"), NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    kind: str = Field(default="user", max_length=20)  # user, service
    provider: str = Field(default="local", max_length=40)  # local, oidc, jupyterhub
    subject: str | None = Field(default=None, max_length=300)  # the provider's id of the user
    email: str | None = Field(default=None, max_length=300)
    namespace: str | None = Field(default=None, max_length=100)  # the personal namespace
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_login_at: datetime | None = _ts()


class GroupMembership(SQLModel, table=True):
    """A user's group, as the identity provider's claims last said (replaced at each sign-in)."""

    __table_args__ = (UniqueConstraint("user_id", "group", name="uq_groupmembership"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("useraccount.id"), nullable=False, index=True))
    group: str = Field(max_length=200, index=True)


class RoleBinding(SQLModel, table=True):
    """``role`` (viewer, editor, admin) on the environments matching ``pattern`` (``namespace/environment`` globs:
    ``*/*``, ``team-*/*``, ``global/python-*``) for a subject: a user, a group, a token (``subject`` its id)."""

    __table_args__ = (UniqueConstraint("subject_kind", "subject", "pattern", name="uq_rolebinding"),
                      NEVER_REUSED_IDS)

    id: int | None = Field(default=None, primary_key=True)
    subject_kind: str = Field(max_length=20)  # user, group, token
    subject: str = Field(max_length=200, index=True)
    pattern: str = Field(max_length=201)
    role: str = Field(max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    created_by: str | None = Field(default=None, max_length=200)


# --- curation, policy, quotas, usage and retention (docs/admin.md) ----------------------------------------------


class PolicyScope(enum.StrEnum):
    GLOBAL = "global"
    NAMESPACE = "namespace"
    ENVIRONMENT = "environment"


class PolicyDocument(SQLModel, table=True):
    """One level's policy (:class:`envyard.builder.policy.Policy` as JSON); ``key``: ``global``, ``ns:ID``,
    ``env:ID`` (unique, where a NULL-bearing unique constraint would not be)."""

    key: str = Field(max_length=40, primary_key=True)
    scope: str = Field(max_length=20)
    namespace_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("namespace.id"), nullable=True, index=True))
    environment_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("environment.id"), nullable=True, index=True))
    document: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_by: str | None = Field(default=None, max_length=100)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class NamespaceQuota(SQLModel, table=True):
    """A namespace's quotas and retention policy (None: no limit, keep)."""

    namespace_id: int = Field(sa_column=Column(Integer, ForeignKey("namespace.id"), primary_key=True))
    storage_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    concurrent_builds: int | None = None
    submissions_per_minute: int | None = None
    keep_last: int | None = None
    keep_days: int | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class SubmissionCounter(SQLModel, table=True):
    """Builds one user submitted in one minute (``window``: minutes since the epoch), counted by a conditional
    UPDATE so that concurrent submissions never pass the rate together."""

    key: str = Field(max_length=120, primary_key=True)
    window: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    count: int = 0


class UsageEvent(SQLModel, table=True):
    """One pull or download, appended (never updated): ``kind`` is manifest, blob or artifact."""

    __table_args__ = (Index("ix_usageevent_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(max_length=20)
    environment_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True, index=True))
    principal: str | None = Field(default=None, max_length=100)
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class Promotion(SQLModel, table=True):
    """A build promoted into a curated environment by reference: ``build_id`` is the curated environment's
    build row, which shares the source build's artifacts (same digests, nothing rebuilt)."""

    __table_args__ = (NEVER_REUSED_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    source_build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    environment_id: int = Field(sa_column=Column(Integer, ForeignKey("environment.id"), nullable=False, index=True))
    promoted_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Deprecation(SQLModel, table=True):
    """A curated environment that should no longer be used, and the one that replaces it."""

    environment_id: int = Field(sa_column=Column(Integer, ForeignKey("environment.id"), primary_key=True))
    successor: str | None = Field(default=None, max_length=201)
    message: str = Field(default="", max_length=1000)
    deprecated_by: str | None = Field(default=None, max_length=100)
    deprecated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
