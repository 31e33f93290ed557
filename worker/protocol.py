"""The worker protocol (/api/v1/jobs): every body that crosses between the API and a build worker.

The API's job routes (``/api/v1/jobs``) and the worker's client (:mod:`envyard.worker.client`) import these
same models: the API answers a claim with a :class:`Job`, the worker parses that answer as a
:class:`Job`. A worker holds a token, never database credentials, and imports nothing of the API.

================================  =================================  =========================
call                              body                               answer
================================  =================================  =========================
``POST /claim``                   :class:`ClaimRequest`              :class:`Job` (204: none)
``POST /{id}/heartbeat``          :class:`LeaseRef`                  :class:`HeartbeatReply`
``POST /{id}/stage``              :class:`StageUpdate`               the build (public schema)
``POST /{id}/logs?lease_id=``     UTF-8 log lines (text/plain)       204
``POST /{id}/uploads``            :class:`UploadRequest`             :class:`UploadTicket`
``POST /{id}/uploads/finish``     :class:`UploadFinish`              :class:`BlobReceipt`
``PUT /{id}/blobs/sha256:...``    the blob's bytes                   :class:`UploadedBlob`
``POST /{id}/complete``           :class:`CompleteRequest`           the build (public schema)
``POST /{id}/fail``               :class:`FailRequest`               the build (public schema)
``POST /{id}/canceled``           :class:`LeaseRef`                  the build (public schema)
================================  =================================  =========================

Request bodies are strict (:class:`ProtocolRequest`): a JSON value of the wrong type is a 422, not coerced.

>>> Job.model_validate_json(Job.example().model_dump_json()) == Job.example()
True
>>> Completion(artifacts=[], packages=[]).request("lease-1").lease_id
'lease-1'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from envyard.builder.policy import Policy

__all__ = [
    "MAX_SIZE",
    "ArtifactEntry",
    "BuildOptions",
    "ClaimRequest",
    "CompleteRequest",
    "Completion",
    "FailRequest",
    "HeartbeatReply",
    "Job",
    "LeaseRef",
    "PackageEntry",
    "ProtocolRequest",
    "StageName",
    "StageUpdate",
    "BlobReceipt",
    "UploadFinish",
    "UploadRequest",
    "UploadTicket",
    "UploadedBlob",
]

MAX_SIZE = 2**63 - 1  # sizes are BIGINT (the API's ids.MAX_SIZE, equal)
SHA256_HEX = r"^[0-9a-f]{64}$"
StageName = Literal["solving", "installing", "imaging", "pushing"]


class ProtocolRequest(BaseModel):
    """A request body: JSON types are not coerced (a boolean field takes true and false only)."""

    model_config = ConfigDict(strict=True)


class BuildOptions(ProtocolRequest):
    """What a build produces besides its locks (submitted with the build, handed to its worker in the job)."""

    image: bool = True
    archive: bool = True
    sbom: Literal["spdx", "cyclonedx"] | None = "spdx"
    channel_alias: str | None = None


# --- claim -----------------------------------------------------------------------------------------------------


class ClaimRequest(ProtocolRequest):
    worker: str = Field(min_length=1, max_length=200)
    platforms: list[str] | None = Field(default=None, description="Only builds whose platforms are all in here.")
    wait_seconds: float = Field(default=0.0, ge=0, le=60, description="Long-poll this long for a build.")


class Job(BaseModel):
    """A claimed build: what to build, and the lease its worker holds while building it."""

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
    allow_sdists: bool = False
    policy: Policy = Field(default_factory=Policy, description="The merged policy the build was submitted under.")

    @classmethod
    def example(cls) -> Job:
        """A job as the API hands one out (for documentation and tests)."""
        return cls(build_id=7, lease_id="0" * 32, lease_seconds=30.0, heartbeat_seconds=2.0, attempt=1,
                   spec_text="dependencies: [zlib]\n", spec_filename="environment.yml", platforms=["linux-64"],
                   options=BuildOptions(), image_name="team/env:build-7",
                   deadline=datetime(2030, 1, 1, tzinfo=UTC))


# --- the lease -------------------------------------------------------------------------------------------------


class LeaseRef(ProtocolRequest):
    lease_id: str = Field(min_length=1, max_length=64)


class HeartbeatReply(BaseModel):
    cancel_requested: bool
    lease_expires_at: datetime


class StageUpdate(LeaseRef):
    stage: StageName


# --- uploads ---------------------------------------------------------------------------------------------------


class UploadRequest(LeaseRef):
    sha256: str = Field(pattern=SHA256_HEX)
    size: int = Field(ge=0, le=MAX_SIZE)


class UploadTicket(BaseModel):
    """``present``: stored already (send nothing); else ``url`` to PUT the bytes to (presigned, S3 stores), or
    none: stream them through the API (``PUT /{id}/blobs/sha256:...``)."""

    present: bool
    upload_id: str | None = None
    url: str | None = None


class UploadFinish(LeaseRef):
    upload_id: str
    sha256: str = Field(pattern=SHA256_HEX)
    size: int = Field(ge=0, le=MAX_SIZE)


class BlobReceipt(BaseModel):
    """A blob in the store: ``digest`` is ``sha256:<hex>``."""

    digest: str
    size: int


class UploadedBlob(BlobReceipt):
    present: bool = Field(description="It was stored already; the bytes sent were not kept.")


# --- the end of a build ----------------------------------------------------------------------------------------


class ArtifactEntry(ProtocolRequest):
    kind: str = Field(max_length=40)
    name: str = Field(max_length=300)
    platform: str | None = None
    sha256: str = Field(pattern=SHA256_HEX)
    size: int = Field(ge=0, le=MAX_SIZE)
    media_type: str = Field(max_length=200)


class PackageEntry(ProtocolRequest):
    """One locked package; ``build`` is empty for pypi packages."""

    platform: str
    manager: Literal["conda", "pypi"]
    name: str
    version: str
    build: str = ""


class Completion(ProtocolRequest):
    """What a completed build publishes: its artifacts (uploaded first) and the packages of its lock."""

    artifacts: list[ArtifactEntry]
    packages: list[PackageEntry]
    image_digest: str | None = None
    lock_sha256: str | None = None

    def request(self, lease_id: str) -> CompleteRequest:
        """The body of ``POST /{id}/complete``."""
        return CompleteRequest(lease_id=lease_id, **dict(self))


class CompleteRequest(Completion, LeaseRef):
    """:class:`Completion` under the worker's lease."""


class FailRequest(LeaseRef):
    code: str = Field(max_length=100)
    stage: str | None = None
    message: str
    hint: str | None = None
    artifacts: list[ArtifactEntry] = Field(
        default_factory=list, description="Uploaded files the failed build keeps as partial artifacts (its lock "
        "files, to inspect what was solved).")
