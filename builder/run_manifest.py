"""Run manifests: one content-addressed document binding an environment build, data snapshots, code and a command.

A manifest is canonical JSON (:mod:`envyard.builder.canonical`: sorted keys, compact, UTF-8, no timestamps), and
its identity is ``sha256:<hex>`` of those bytes (:attr:`RunManifest.digest`). The schema,
``specs/run-manifest.schema.json``, is generated from :class:`RunManifest` (:func:`manifest_schema`); a test keeps the
committed file equal to it.

A run writes a *new* manifest: the input's fields, the hashed ``outputs`` and ``parent`` = the input's digest.

>>> m = RunManifest(environment=EnvironmentRef(lock=LockRef(sha256="0" * 64)), command=["python", "train.py"])
>>> m.api_version, m.kind, m.digest.startswith("sha256:")
('envyard.dev/run-manifest/v1', 'RunManifest', True)
>>> RunManifest.parse(m.canonical_bytes()) == m
True
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import Field, field_validator

from envyard.builder.canonical import CanonicalModel
from envyard.builder.data import COMMIT_PATTERN, DataSnapshot
from envyard.builder.errors import ManifestError

__all__ = [
    "API_VERSION",
    "KIND",
    "CodeRef",
    "DataMount",
    "EnvironmentRef",
    "LockRef",
    "OutputFile",
    "Resources",
    "RunManifest",
    "check_env_name",
    "load_manifest",
    "lock_ref",
    "manifest_schema",
    "schema_text",
]

API_VERSION: Final = "envyard.dev/run-manifest/v1"
KIND: Final = "RunManifest"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Variable names that look like they carry a secret; a manifest is published, so they are refused.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_KEY|API_KEY|APIKEY|ACCESS_KEY|AUTH|SESSION_KEY)"
    r"|^(AWS|AZURE|GCP|GOOGLE_APPLICATION|ENVYARD_TOKEN|DVC_REMOTE)_?", re.IGNORECASE)


def check_env_name(name: str) -> str:
    """``name`` if a manifest may carry it; ManifestError for a name that looks like a secret.

    >>> check_env_name("OMP_NUM_THREADS")
    'OMP_NUM_THREADS'
    >>> check_env_name("AWS_SECRET_ACCESS_KEY")
    Traceback (most recent call last):
    ...
    envyard.builder.errors.ManifestError: env.AWS_SECRET_ACCESS_KEY: ...
    """
    if SECRET_NAME.search(name):
        raise ManifestError(f"{name} looks like a secret; a run manifest is published and must not carry it",
                            field=f"env.{name}",
                            hint="pass secrets at run time through the runner's environment or a namespace secret, "
                            "not in the manifest")
    return name


def _absolute(value: str) -> str:
    posix = PurePosixPath(value)
    if not posix.is_absolute() or ".." in posix.parts:
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    return str(posix)


class LockRef(CanonicalModel):
    """The lock an environment was installed from: its bytes' sha256 (and how to read them)."""

    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the lockfile's bytes (hex).")
    filename: str | None = Field(default=None, description="The lockfile's name, e.g. envyard.lock.")
    format: str | None = Field(default=None, description="The lock format (envyard, conda-lock, explicit ...).")


class EnvironmentRef(CanonicalModel):
    """The environment build a run uses."""

    namespace: str | None = None
    name: str | None = None
    build_id: int | None = Field(default=None, ge=1)
    lock: LockRef
    images: dict[str, str] = Field(default_factory=dict,
                                   description="Image manifest digest per platform (linux-64: sha256:...).")
    image_refs: list[str] = Field(default_factory=list, description="Where the image can be pulled, if known.")
    prefix: str | None = Field(default=None, description="The environment's prefix inside the image.")

    @field_validator("images")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        for platform, digest in value.items():
            if not re.match(DIGEST_PATTERN, digest):
                raise ValueError(f"images.{platform}: {digest!r} is not sha256:<64 hex>")
        return value


class DataMount(CanonicalModel):
    """A data snapshot and where its paths appear in the run (``<mount>/<path in the repository>``)."""

    snapshot: DataSnapshot
    snapshot_id: str | None = Field(default=None, description="The snapshot's id in an envyard service, if any.")
    mount: str = Field(description="Absolute path the snapshot's paths appear under.")

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        return _absolute(value)


class CodeRef(CanonicalModel):
    """The code a run executes: a git repository at a commit."""

    repository: str
    commit: str = Field(pattern=COMMIT_PATTERN)
    subdirectory: str | None = None


class Resources(CanonicalModel):
    """Resource requests (Kubernetes quantity strings: cpu "2" or "500m", memory "4Gi")."""

    cpu: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMk]i?)?$")
    gpus: int = Field(default=0, ge=0)


class OutputFile(CanonicalModel):
    """One output file of a run (a declared directory lists each of its files)."""

    path: str = Field(description="Relative to the run's working directory (POSIX).")
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0)


class RunManifest(CanonicalModel):
    """Environment + data + code + command: what a run needs to be repeated and verified."""

    api_version: Literal["envyard.dev/run-manifest/v1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["RunManifest"] = KIND
    environment: EnvironmentRef
    data: list[DataMount] = Field(default_factory=list)
    code: CodeRef | None = None
    command: list[str] = Field(min_length=1, description="argv of the command.")
    workdir: str = Field(default="/work", description="Absolute working directory of the command.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables (never secrets).")
    resources: Resources = Field(default_factory=Resources)
    outputs: list[OutputFile] = Field(default_factory=list, description="Hashed outputs, once run.")
    parent: str | None = Field(default=None, pattern=DIGEST_PATTERN,
                               description="The digest of the manifest this run's result came from.")

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _absolute(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.match(ENV_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if SECRET_NAME.search(name):
                raise ValueError(f"{name} looks like a secret; a run manifest must not carry it "
                                 "(pass it at run time instead)")
        return value

    @classmethod
    def parse(cls, data: bytes | str, *, source: str | None = None,  # type: ignore[override]
              error: type[ManifestError] = ManifestError) -> RunManifest:
        """Validate a manifest document; ManifestError names the source and the first bad field."""
        return super().parse(data, source=source, error=error)

    def result(self, outputs: list[OutputFile]) -> RunManifest:
        """The manifest of this run's result: same inputs, ``outputs``, ``parent`` = this digest."""
        return self.model_copy(update={"outputs": outputs, "parent": self.digest})


def load_manifest(path: str | Path) -> RunManifest:
    """Read a manifest file; ManifestError when it is missing or invalid."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read the run manifest: {exc.strerror}", file=path,
                            hint="give the path of a manifest written by `envyard manifest create`") from None
    return RunManifest.parse(data, source=str(path))


def lock_ref(path: Path, relative_to: Path | None = None) -> LockRef:
    """The :class:`LockRef` of the lockfile at ``path``: sha256 of its bytes, its format, and its name (relative to
    ``relative_to``, the manifest's folder, when it lies below it)."""
    import hashlib

    from envyard.builder.lockfiles import detect_format

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read the lockfile: {exc.strerror}", file=path,
                            hint="give the lock the environment was installed or built from") from None
    try:
        kind: str | None = detect_format(data.decode("utf-8"))[0]
    except Exception:  # a lock envyard cannot read is still pinned by its bytes
        kind = None
    name = path.name
    if relative_to is not None:
        try:
            name = path.absolute().relative_to(relative_to.absolute()).as_posix()
        except ValueError:
            name = path.name
    return LockRef(sha256=hashlib.sha256(data).hexdigest(), filename=name, format=kind)


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`RunManifest` (what specs/run-manifest.schema.json holds)."""
    schema = RunManifest.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://envyard.dev/schemas/run-manifest.schema.json", **schema}


def schema_text() -> str:
    """specs/run-manifest.schema.json as it must be on disk."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"
