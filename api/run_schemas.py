"""Request and response bodies of the reproducible-run routes: namespace secrets, data snapshots, run manifests
(:mod:`envyard.api.routers.runs`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from envyard.api.ids import Id
from envyard.api.schemas import RequestModel

__all__ = ["DataMountRequest", "DataSnapshotCreate", "DataSnapshotRead", "ManifestCreate", "ManifestRead",
           "SecretRead", "SecretSet"]

MANIFEST_MEDIA_TYPE = "application/vnd.envyard.run-manifest.v1+json"


class SecretSet(RequestModel):
    value: str = Field(min_length=1, max_length=64 * 1024, description="The value, stored encrypted; never shown.")


class SecretRead(BaseModel):
    """A secret's name and dates: its value is never returned."""

    namespace: str
    name: str
    created_at: datetime
    updated_at: datetime


class DataSnapshotCreate(RequestModel):
    repo: str = Field(min_length=1, max_length=1000, description="Git URL of the DVC project (policy-checked).")
    rev: str = Field(min_length=1, max_length=255, description="Branch, tag or commit; pinned to its commit.")
    paths: list[str] = Field(min_length=1, max_length=100, description="DVC-tracked paths in the project.")
    remote: str | None = Field(default=None, max_length=200, description="DVC remote name (default: the project's).")
    remote_secret: str | None = Field(
        default=None, max_length=100, description="Namespace secret holding the remote's options as a JSON object "
        "(access_key_id, secret_access_key, endpointurl, ...); default: the server's AWS variables.")


class DataSnapshotRead(BaseModel):
    id: int
    namespace: str
    repo: str
    rev: str
    commit: str
    remote: str | None
    snapshot: dict[str, Any] = Field(description="The resolved snapshot: commit, per-path DVC hash, size, files.")
    created_by: str | None
    created_at: datetime


class DataMountRequest(RequestModel):
    snapshot_id: Id
    mount: str = Field(min_length=1, max_length=1000, description="Absolute path the data appears at in the run.")


class ManifestCreate(RequestModel):
    """Either the parts of a new manifest (``build`` and the rest), or a complete ``manifest`` document."""

    build: Id | str | None = Field(default=None, description="A build id of this namespace, or NS/NAME[@BUILD].")
    data: list[DataMountRequest] = Field(default_factory=list, max_length=100)
    code: dict[str, Any] | None = Field(default=None, description="{repo, commit, subdir?}")
    command: list[str] = Field(default_factory=list, max_length=1000)
    workdir: str | None = Field(default=None, max_length=1000)
    env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    manifest: dict[str, Any] | None = Field(default=None, description="A complete run manifest document (e.g. a "
                                            "run's result with outputs), checked and stored as it is.")
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$",
                               description="With manifest: the digest it must have.")


class ManifestRead(BaseModel):
    namespace: str
    digest: str
    build_id: int
    size: int
    referrer: str | None = Field(description="Digest of the OCI referrer attached to the build's image.")
    created_by: str | None
    created_at: datetime
