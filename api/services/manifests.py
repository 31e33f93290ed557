"""Run manifests of a namespace: stored by digest, bound to a build, attached to its image as an OCI referrer.

``POST /api/v1/namespaces/{ns}/manifests`` either names a build (an id of the namespace, or ``NS/NAME[@BUILD]``)
with data snapshots of the namespace, code, command, working directory, variables and resources, and the server
fills in the environment from the build: the lock's sha256 (of the build's lock artifact bytes), the image
manifest digest per platform, the prefix (the image config's ``CONDA_PREFIX``) and the image reference on this
server's ``/v2/``; or it carries a complete manifest document (a run's result with its outputs), which is checked
(schema, canonical digest, its build exists in the namespace) and stored as it is.

The canonical bytes are a blob of the artifact store, recorded by a :class:`~api.models.RunManifestRecord`. For a
build with an image, three more artifacts of the build make the manifest an OCI referrer of the image (distribution
spec 1.1): the referrer (an image manifest with ``subject`` = the build's image, ``artifactType``
:data:`MANIFEST_MEDIA_TYPE`, the empty config and one layer = the manifest bytes), the manifest bytes as that
layer, and the empty config. ``/v2/<ns>/<name>/referrers/<digest>`` then lists it next to the SBOMs.

Safety against garbage collection follows the store-then-load pattern of :mod:`api.services.gc`: the rows are
committed first (the mark counts them: :func:`api.services.gc.referenced_blobs`), then the store waits for
tombstones of those digests to clear and writes the blobs; if writing fails the rows are removed again. A build
that a manifest names keeps its environment from being deleted (:func:`api.services.catalog.delete_environment`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from envyard.api.auth.principals import Principal
from envyard.api.db import session_scope
from envyard.api.models import Build, BuildArtifact, BuildStatus, Environment, Namespace, RunManifestRecord
from envyard.api.run_schemas import MANIFEST_MEDIA_TYPE, ManifestCreate
from envyard.api.services import gc
from envyard.api.services.snapshots import get_snapshots
from envyard.api.storage import ArtifactStore
from envyard.builder.canonical import canonical_json
from envyard.builder.errors import ConflictError, EnvyardError, ManifestError, NotFoundError
from envyard.builder.oci.model import (
    EMPTY_JSON,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_MANIFEST,
    OCI_PLATFORMS,
)
from envyard.builder.run_manifest import RunManifest

__all__ = ["MANIFEST_MEDIA_TYPE", "create_manifest", "list_manifests", "manifests_of_builds", "read_manifest",
           "referrer_document"]

log = logging.getLogger(__name__)

LOCK_KINDS = ("conda-lock", "pixi-lock")
ARCHITECTURES = {(v["architecture"], v.get("variant")): k for k, v in OCI_PLATFORMS.items()}
PREFIX = "run-manifests/"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class _Blob:
    name: str
    data: bytes
    media_type: str
    subject: str | None = None
    artifact_type: str | None = None

    @property
    def sha256(self) -> str:
        return _sha(self.data)


# --- resolving the build ---------------------------------------------------------------------------------------------


def _build_of(session: Session, namespace: Namespace, reference: int | str) -> tuple[Build, Environment]:
    """The build a request names in ``namespace``: an id, ``NS/NAME`` (the current build) or ``NS/NAME@BUILD``."""
    hint = "name a completed build of this namespace: its id, or NS/NAME[@BUILD] (envyard build list NS/NAME)"
    if isinstance(reference, int):
        row = session.exec(select(Build, Environment).join(Environment, col(Environment.id) == Build.environment_id)
                           .where(col(Build.id) == reference, Environment.namespace_id == namespace.id)).first()
        if row is None:
            raise NotFoundError(f"build {reference} does not exist in namespace '{namespace.name}'", field="build",
                                hint=hint)
        build, environment = row
    else:
        name, _, tag = reference.partition("@")
        ns, _, env_name = name.partition("/")
        if not env_name or ns != namespace.name:
            raise ManifestError(f"build {reference!r} is not NS/NAME[@BUILD] in namespace '{namespace.name}'",
                                field="build", hint=hint)
        environment = session.exec(select(Environment).where(Environment.namespace_id == namespace.id,
                                                             Environment.name == env_name)).first()
        if environment is None:
            raise NotFoundError(f"environment '{name}' does not exist", field="build", hint=hint)
        if tag:
            if not tag.isascii() or not tag.isdigit():
                raise ManifestError(f"build {tag!r} in {reference!r} is not a build id", field="build", hint=hint)
            found = session.get(Build, int(tag))
        else:
            found = session.get(Build, environment.current_build_id) if environment.current_build_id else None
        if found is None or found.environment_id != environment.id:
            raise NotFoundError(f"build {reference!r} does not exist", field="build", hint=hint)
        build = found
    if build.status != BuildStatus.COMPLETED:
        raise ConflictError(f"build {build.id} is {build.status}, not completed", field="build",
                            hint="wait for the build to complete, or name a completed one")
    return build, environment


def _artifacts(session: Session, build_id: int) -> list[BuildArtifact]:
    return list(session.exec(select(BuildArtifact).where(BuildArtifact.build_id == build_id)
                             .order_by(col(BuildArtifact.id))).all())


def _json_blob(store: ArtifactStore, sha256: str) -> dict[str, Any]:
    value = json.loads(b"".join(store.read(sha256)))
    return value if isinstance(value, dict) else {}


def _environment_fields(store: ArtifactStore, build: Build, environment: Environment, namespace: str,
                        artifacts: list[BuildArtifact], registry_host: str) -> dict[str, Any]:
    lock = next((a for kind in LOCK_KINDS for a in artifacts if a.kind == kind and not a.partial), None)
    if lock is None:
        raise ConflictError(f"build {build.id} has no lock artifact", field="build",
                            hint="name a completed build (it stores conda-lock.yml)")
    fields: dict[str, Any] = {"namespace": namespace, "name": environment.name, "build_id": build.id,
                              "lock": {"sha256": lock.sha256, "filename": lock.name, "format": lock.kind}}
    root = next((a for a in artifacts if a.kind == "oci-index"), None)
    if build.image_digest and root is not None:
        manifests: list[tuple[str | None, str]] = []
        if root.media_type in INDEX_MEDIA_TYPES:
            for entry in _json_blob(store, root.sha256).get("manifests", []):
                platform = entry.get("platform") or {}
                key = (platform.get("architecture"), platform.get("variant"))
                conda = ARCHITECTURES.get(key) or ARCHITECTURES.get((key[0], None))
                manifests.append((conda, entry["digest"]))
        else:
            manifests.append((root.platform, f"sha256:{root.sha256}"))
        fields["images"] = {platform: digest for platform, digest in manifests if platform}
        fields["image_refs"] = [f"{registry_host}/{namespace}/{environment.name}@{build.image_digest}"]
        if manifests:
            manifest = _json_blob(store, manifests[0][1].removeprefix("sha256:"))
            config = _json_blob(store, str(manifest.get("config", {}).get("digest", "")).removeprefix("sha256:"))
            env = (config.get("config") or {}).get("Env") or []
            fields["prefix"] = next((e.split("=", 1)[1] for e in env if e.startswith("CONDA_PREFIX=")), None)
    return fields


def _parse(document: dict[str, Any]) -> RunManifest:
    try:
        return RunManifest.parse(canonical_json(document), source="request")
    except ValidationError as exc:  # (parse raises ManifestError; this is a guard for a model-level failure)
        raise ManifestError(f"the run manifest is invalid: {exc.errors()[0]['msg']}", field="manifest") from None


def _new_manifest(session: Session, store: ArtifactStore, namespace: Namespace, body: ManifestCreate,
                  registry_host: str) -> tuple[RunManifest, Build, list[BuildArtifact]]:
    if body.build is None:
        raise ManifestError("a manifest needs a build (or a complete manifest document)", field="build",
                            hint="give build: a build id or NS/NAME[@BUILD]; or manifest: a whole document")
    build, environment = _build_of(session, namespace, body.build)
    artifacts = _artifacts(session, build.id or 0)
    wanted = [m.snapshot_id for m in body.data]
    found = get_snapshots(session, namespace.id or 0, wanted)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise NotFoundError(f"data snapshot {missing[0]} does not exist in namespace '{namespace.name}'",
                            field="data.snapshot_id", hint=f"list them: GET /api/v1/namespaces/{namespace.name}/"
                            "data-snapshots, or create one with envyard data snapshot --api")
    document: dict[str, Any] = {
        "apiVersion": "envyard.dev/run-manifest/v1", "kind": "RunManifest",
        "environment": _environment_fields(store, build, environment, namespace.name, artifacts, registry_host),
        "data": [{"snapshot": found[m.snapshot_id].document, "snapshot_id": str(m.snapshot_id), "mount": m.mount}
                 for m in body.data],
        "command": body.command, "env": body.env, "resources": body.resources,
    }
    if body.workdir is not None:
        document["workdir"] = body.workdir
    if body.code is not None:
        code = dict(body.code)
        document["code"] = {"repository": code.pop("repo", code.pop("repository", None)),
                            "commit": code.pop("commit", None),
                            **({"subdirectory": code.pop("subdir")} if "subdir" in code else code)}
    return _parse(document), build, artifacts


def _given_manifest(session: Session, namespace: Namespace, document: dict[str, Any],
                    digest: str | None) -> tuple[RunManifest, Build, list[BuildArtifact]]:
    manifest = _parse(document)
    if manifest.canonical_bytes() != canonical_json(document):
        raise ManifestError("the manifest document is not in its canonical form (unknown fields or defaults that "
                            "differ)", field="manifest", hint="send the document exactly as envyard wrote it")
    if digest is not None and digest != manifest.digest:
        raise ManifestError(f"the manifest's digest is {manifest.digest}, not {digest}", field="digest",
                            hint="the document changed after its digest was taken")
    build_id = manifest.environment.build_id
    if build_id is None:
        raise ManifestError("the manifest names no build (environment.build_id)", field="manifest.environment",
                            hint="the service stores manifests of its own builds")
    build, _ = _build_of(session, namespace, build_id)
    artifacts = _artifacts(session, build.id or 0)
    lock = {a.sha256 for a in artifacts if a.kind in LOCK_KINDS}
    if manifest.environment.lock.sha256 not in lock:
        raise ManifestError(f"the manifest's lock sha256 {manifest.environment.lock.sha256} is not build "
                            f"{build_id}'s", field="manifest.environment.lock.sha256",
                            hint="a manifest must name the lock its build stored")
    return manifest, build, artifacts


# --- the referrer ----------------------------------------------------------------------------------------------------


def referrer_document(manifest_bytes: bytes, subject: BuildArtifact) -> bytes:
    """The OCI image manifest that attaches ``manifest_bytes`` to the image manifest ``subject``."""
    value = {
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST, "artifactType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": MEDIA_TYPE_EMPTY, "digest": f"sha256:{_sha(EMPTY_JSON)}", "size": len(EMPTY_JSON)},
        "layers": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": f"sha256:{_sha(manifest_bytes)}",
                    "size": len(manifest_bytes),
                    "annotations": {"org.opencontainers.image.title": "run-manifest.json"}}],
        "subject": {"mediaType": subject.media_type, "digest": f"sha256:{subject.sha256}", "size": subject.size},
        "annotations": {"dev.envyard.run-manifest.digest": f"sha256:{_sha(manifest_bytes)}"},
    }
    return canonical_json(value)


def _blobs(data: bytes, artifacts: list[BuildArtifact], build: Build) -> list[_Blob]:
    root = next((a for a in artifacts if a.kind == "oci-index"), None)
    if not build.image_digest or root is None:
        return []
    sha = _sha(data)
    referrer = referrer_document(data, root)
    return [_Blob(f"{PREFIX}{sha}.json", data, MANIFEST_MEDIA_TYPE),
            _Blob(f"{PREFIX}empty-config.json", EMPTY_JSON, MEDIA_TYPE_EMPTY),
            _Blob(f"{PREFIX}{sha}.referrer.json", referrer, MEDIA_TYPE_MANIFEST, f"sha256:{root.sha256}",
                  MANIFEST_MEDIA_TYPE)]


# --- storing ---------------------------------------------------------------------------------------------------------


def create_manifest(engine: Engine, store: ArtifactStore, principal: Principal, namespace: Namespace,
                    body: ManifestCreate, *, registry_host: str) -> RunManifestRecord:
    """Make (or check) the manifest, record it and its referrer, then store their blobs (see the module
    docstring). Storing the same manifest again returns the existing record."""
    with session_scope(engine) as session:
        if body.manifest is not None:
            manifest, build, artifacts = _given_manifest(session, namespace, body.manifest, body.digest)
        else:
            manifest, build, artifacts = _new_manifest(session, store, namespace, body, registry_host)
        data = manifest.canonical_bytes()
        sha = _sha(data)
        existing = session.exec(select(RunManifestRecord).where(RunManifestRecord.namespace_id == namespace.id,
                                                                RunManifestRecord.sha256 == sha)).first()
        if existing is not None:
            return existing
        blobs = _blobs(data, artifacts, build)
        names = {a.name for a in artifacts}
        added = [BuildArtifact(build_id=build.id or 0, kind="oci-blob", name=b.name, sha256=b.sha256,
                               size=len(b.data), media_type=b.media_type, subject=b.subject,
                               artifact_type=b.artifact_type) for b in blobs if b.name not in names]
        record = RunManifestRecord(namespace_id=namespace.id or 0, build_id=build.id or 0, sha256=sha,
                                   size=len(data), referrer_sha256=blobs[-1].sha256 if blobs else None,
                                   created_by=principal.name)
        session.add_all([record, *added])
        session.flush()
    contents = {sha: data, **{b.sha256: b.data for b in blobs}}
    try:
        gc.wait_for_tombstones(engine, sorted(contents), gc.TOMBSTONE_WAIT_SECONDS)
        for digest, content in contents.items():
            if not store.exists(digest):
                store.put_bytes(content)
    except (EnvyardError, OSError):
        with session_scope(engine) as session:
            session.delete(session.get(RunManifestRecord, record.id))
            for artifact in added:
                session.delete(session.get(BuildArtifact, artifact.id))
        raise
    log.info("run manifest sha256:%s of build %s stored in namespace %s", sha, build.id, namespace.name)
    return record


def list_manifests(session: Session, namespace: str) -> list[RunManifestRecord]:
    return list(session.exec(select(RunManifestRecord).join(
        Namespace, col(Namespace.id) == RunManifestRecord.namespace_id).where(Namespace.name == namespace)
        .order_by(col(RunManifestRecord.id))).all())


def read_manifest(store: ArtifactStore, record: RunManifestRecord) -> bytes:
    """The manifest's canonical bytes, checked against its digest."""
    data: bytes = b"".join(store.read(record.sha256))
    if _sha(data) != record.sha256:
        raise ConflictError(f"the stored bytes of run manifest sha256:{record.sha256} do not match its digest",
                            hint="the artifact store was modified; restore it from a backup")
    return data


def manifests_of_builds(session: Session, build_ids: list[int | None]) -> list[RunManifestRecord]:
    """The manifests naming any of ``build_ids`` (those builds must be kept)."""
    return list(session.exec(select(RunManifestRecord).where(
        col(RunManifestRecord.build_id).in_([i for i in build_ids if i is not None]))).all())
