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


class Namespace(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True, index=True)
    description: str = Field(default="", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Spec(SQLModel, table=True):
    """An environment spec as submitted, stored once per sha256 of (filename, text)."""

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True, index=True)
    filename: str = Field(max_length=200)
    content: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Environment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_environment_namespace_name"),)

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
    __table_args__ = (Index("ix_build_claim", "status", "not_before"),)

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


class BuildArtifact(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("build_id", "name", name="uq_build_artifact_name"),)

    id: int | None = Field(default=None, primary_key=True)
    build_id: int = Field(sa_column=Column(Integer, ForeignKey("build.id"), nullable=False, index=True))
    kind: str = Field(max_length=40)
    name: str = Field(max_length=300)
    platform: str | None = Field(default=None, max_length=40)
    sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    media_type: str = Field(max_length=200)


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
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    token_sha256: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(default=Role.USER, max_length=20)
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
