"""Request and response bodies of /api/v1 (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class NamespaceCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Letters, digits, '.', '_' and '-'.")
    description: str = Field(default="", max_length=1000)


class NamespaceRead(BaseModel):
    name: str
    description: str
    created_at: datetime
    environments: int = 0


class BuildOptions(BaseModel):
    """What a build produces besides its locks."""

    image: bool = True
    archive: bool = True
    sbom: Literal["spdx", "cyclonedx"] | None = "spdx"
    channel_alias: str | None = None


class BuildSubmit(BaseModel):
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


class EnvironmentRead(BaseModel):
    namespace: str
    name: str
    description: str
    current_build: BuildRead | None
    created_at: datetime
    updated_at: datetime


class EnvironmentUpdate(BaseModel):
    description: str | None = Field(default=None, max_length=1000)


class SetCurrent(BaseModel):
    build_id: int


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


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["admin", "user", "worker", "reader"] = "user"


class TokenCreated(BaseModel):
    id: int
    name: str
    role: str
    token: str


# --- the worker protocol --------------------------------------------------------------------------------


class ClaimRequest(BaseModel):
    worker: str = Field(min_length=1, max_length=200)
    platforms: list[str] | None = Field(default=None, description="Only builds whose platforms are all in here.")
    wait_seconds: float = Field(default=0.0, ge=0, le=60, description="Long-poll this long for a build.")


class Job(BaseModel):
    build_id: int
    lease_id: str
    lease_seconds: float
    heartbeat_seconds: float
    attempt: int
    spec_text: str
    spec_filename: str
    platforms: list[str]
    options: BuildOptions
    image_name: str
    deadline: datetime


class LeaseRef(BaseModel):
    lease_id: str = Field(min_length=1, max_length=64)


class HeartbeatReply(BaseModel):
    cancel_requested: bool
    lease_expires_at: datetime


class StageUpdate(LeaseRef):
    stage: Literal["solving", "installing", "imaging", "pushing"]


class UploadRequest(LeaseRef):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class UploadTicket(BaseModel):
    present: bool
    upload_id: str | None = None
    url: str | None = None


class UploadFinish(LeaseRef):
    upload_id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ArtifactEntry(BaseModel):
    kind: str = Field(max_length=40)
    name: str = Field(max_length=300)
    platform: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    media_type: str = Field(max_length=200)


class PackageEntry(BaseModel):
    platform: str
    manager: Literal["conda", "pypi"]
    name: str
    version: str
    build: str = ""


class CompleteRequest(LeaseRef):
    artifacts: list[ArtifactEntry]
    packages: list[PackageEntry]
    image_digest: str | None = None
    lock_sha256: str | None = None


class FailRequest(LeaseRef):
    code: str = Field(max_length=100)
    stage: str | None = None
    message: str
    hint: str | None = None
