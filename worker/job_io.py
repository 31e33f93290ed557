"""What crosses the boundary between a build worker and its child (:mod:`envyard.worker.job`).

* ``JOB_DIR/job.json``: a :class:`JobSpec`, written by the runner (:meth:`JobSpec.from_job`: the claimed
  :class:`~envyard.worker.protocol.Job` and the worker's settings).
* ``JOB_DIR/out/manifest.json``: a :class:`JobManifest` listing every artifact, written by the child.
* Events: one JSON object per line on the child's ``--events-fd``, written by :class:`JsonLinesEvents`::

    {"event": "stage", "stage": "solving" | "installing" | "imaging"}
    {"event": "progress", "stage": ..., "detail": ..., "step": "solve" | "install" | ..., "state": ..., **counts}
    {"event": "result", "manifest": "out/manifest.json"}
    {"event": "error", "code": ..., "stage": ..., "message": ..., "hint": ..., "file": ..., "line": ..., "field": ...}

>>> JobSpec(build_id=7, spec_text="dependencies: [zlib]").spec_filename
'environment.yml'
>>> spec = JobSpec.from_job(Job.example(), Settings(env_prefix="/srv/env", _env_file=None))
>>> spec.build_id, spec.image, spec.sbom, spec.env_prefix
(7, True, 'spdx', '/srv/env')
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from envyard.builder.policy import Policy
from envyard.builder.progress import Stage
from envyard.builder.settings import Settings
from envyard.worker.protocol import ArtifactEntry, BuildOptions, Completion, Job, PackageEntry

__all__ = ["MANIFEST_PATH", "ArtifactFile", "ArtifactKind", "EventSink", "EventsReporter", "JobManifest", "JobSpec",
           "JsonLinesEvents", "LockedPackageRow"]

ArtifactKind = Literal[
    "conda-lock", "pixi-lock", "explicit", "environment", "archive", "sbom", "oci-index", "oci-blob"
]
MANIFEST_PATH = "out/manifest.json"
DEFAULT_OPTIONS = BuildOptions()  # the defaults of a build's options, stated once (envyard.worker.protocol)


class JobSpec(BaseModel):
    """``JOB_DIR/job.json``: what to build."""

    model_config = ConfigDict(extra="forbid")

    build_id: int
    spec_text: str
    spec_filename: str = "environment.yml"
    platforms: list[str] = []
    channel_alias: str | None = DEFAULT_OPTIONS.channel_alias
    env_prefix: str = Settings.model_fields["env_prefix"].default
    image: bool = DEFAULT_OPTIONS.image
    archive: bool = DEFAULT_OPTIONS.archive
    sbom: Literal["spdx", "cyclonedx"] | None = DEFAULT_OPTIONS.sbom
    image_name: str = ""
    source_date_epoch: int | None = None
    allow_sdists: bool = False  # the namespace lets pip build source distributions (runs their code)
    policy: Policy = Policy()  # the admins' policy the build runs under (builder.policy): checked after solving

    @field_validator("spec_filename")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(f"spec_filename must be a plain file name, not {value!r}")
        return value

    @classmethod
    def from_job(cls, job: Job, settings: Settings) -> JobSpec:
        """The child's spec of a claimed build: the job's spec and options, the worker's ``env_prefix``."""
        return cls(build_id=job.build_id, spec_text=job.spec_text, spec_filename=job.spec_filename,
                   platforms=job.platforms, channel_alias=job.options.channel_alias, image=job.options.image,
                   archive=job.options.archive, sbom=job.options.sbom, image_name=job.image_name,
                   env_prefix=settings.env_prefix, allow_sdists=job.allow_sdists, policy=job.policy)


class ArtifactFile(BaseModel):
    """One file to upload: ``path`` is relative to JOB_DIR; ``name`` is the file name a downloader gets."""

    kind: ArtifactKind
    name: str
    path: str
    sha256: str  # hex, no "sha256:" prefix
    size: int
    media_type: str
    platform: str | None = None  # None: for every platform (lock files, the image index, shared blobs)

    def entry(self) -> ArtifactEntry:
        """The artifact as the worker protocol declares it (no local path)."""
        return ArtifactEntry(kind=self.kind, name=self.name, platform=self.platform, sha256=self.sha256,
                             size=self.size, media_type=self.media_type)


class LockedPackageRow(BaseModel):
    """One package of the lock; ``build`` is None for pypi packages."""

    platform: str
    manager: Literal["conda", "pypi"]
    name: str
    version: str
    build: str | None = None

    def entry(self) -> PackageEntry:
        """The package as the worker protocol declares it (``build`` empty for pypi packages)."""
        return PackageEntry(platform=self.platform, manager=self.manager, name=self.name, version=self.version,
                            build=self.build or "")


class JobManifest(BaseModel):
    """``JOB_DIR/out/manifest.json``. ``image_digest``: the image root ("sha256:..."); ``lock_sha256``: hex."""

    artifacts: list[ArtifactFile]
    packages: list[LockedPackageRow]
    platforms: list[str]
    image_digest: str | None
    lock_sha256: str

    def completion(self) -> Completion:
        """What the worker publishes for this manifest (its artifacts uploaded first)."""
        return Completion(artifacts=[a.entry() for a in self.artifacts], packages=[p.entry() for p in self.packages],
                          image_digest=self.image_digest, lock_sha256=self.lock_sha256)


class EventSink(Protocol):
    def stage(self, name: str) -> None: ...

    def progress(self, stage: str, detail: str, **fields: Any) -> None: ...

    def log(self, line: str) -> None: ...


class JsonLinesEvents:
    """Events as JSON lines on ``fd`` (none when ``fd`` is None); log lines on ``log_stream`` (stderr)."""

    def __init__(self, fd: int | None, log_stream: IO[str] | None = None) -> None:
        self.out = os.fdopen(fd, "w", encoding="utf-8") if fd is not None else None
        self.log_stream = log_stream
        self.current: str | None = None

    def emit(self, event: str, **fields: Any) -> None:
        if self.out is None:
            return
        try:
            self.out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            self.out.flush()
        except OSError as exc:  # the reader is gone: keep building, keep logging
            self.out = None
            self.log(f"warning: events can no longer be written ({exc.strerror or exc})")

    def stage(self, name: str) -> None:
        self.current = name
        self.emit("stage", stage=name)
        self.log(f"==> {name}")

    def progress(self, stage: str, detail: str, **fields: Any) -> None:
        self.emit("progress", stage=stage, detail=detail, **fields)

    def log(self, line: str) -> None:
        stream = self.log_stream or sys.stderr
        print(line, file=stream, flush=True)

    def result(self, manifest: str) -> None:
        self.emit("result", manifest=manifest)

    def error(self, code: str, message: str, hint: str | None = None, **fields: Any) -> None:
        self.emit("error", code=code, stage=self.current, message=message, hint=hint, **fields)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


class EventsReporter:
    """builder's :class:`~builder.progress.Reporter` as progress events plus readable log lines.

    Paths under ``root`` (the job directory) are shown relative to it: users see ``work/linux-64/env``.
    """

    def __init__(self, events: EventSink, root: str | None = None) -> None:
        self.events = events
        self.root = root.rstrip("/") + "/" if root else None
        self.job_stage = ""

    def enter(self, name: str) -> None:
        self.job_stage = name
        self.events.stage(name)

    def _relative(self, detail: str) -> str:
        return detail.replace(self.root, "") if self.root else detail

    def stage_started(self, stage: Stage, detail: str = "") -> None:
        detail = self._relative(detail)
        self.events.progress(self.job_stage, detail, step=stage.value, state="started")
        self.events.log(f"  {stage.value}: {detail}".rstrip())

    def stage_finished(self, stage: Stage, detail: str = "", **fields: Any) -> None:
        detail = self._relative(detail)
        self.events.progress(self.job_stage, detail, step=stage.value, state="finished", **fields)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        self.events.log(f"  {stage.value} done {detail} {extra}".rstrip())
