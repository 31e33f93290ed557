"""Referrers (OCI distribution-spec 1.1): which stored manifests name another manifest as their ``subject``.

When a build completes, every manifest-typed artifact (an image manifest or index, OCI or Docker) is read
from the store once: its ``subject`` digest and artifact type are recorded on the artifact row, so the
registry answers ``GET /v2/<name>/referrers/<digest>`` with one indexed query. Manifests are small; one
larger than :data:`MAX_MANIFEST_BYTES` (the size the distribution spec asks registries to accept) or one
that is not the JSON object its media type promises fails the completion with a ConflictError naming it.

The artifact type of a referrer is its ``artifactType`` field, else (image manifests only) its config's
``mediaType``; an index without ``artifactType`` has none. Annotations are not copied: the registry
reads them from the referrer manifest itself when it lists referrers (:func:`descriptor`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from envyard.api.models import Build, BuildArtifact, BuildStatus
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import ConflictError
from envyard.builder.oci.model import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES
from envyard.worker.protocol import ArtifactEntry

MANIFEST_KINDS = ("oci-index", "oci-blob")
MANIFEST_TYPES = (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
SHA256_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class ReferrerFields:
    """What a manifest-typed artifact contributes to the referrers API."""

    subject: str | None
    artifact_type: str | None


def is_manifest(kind: str, media_type: str) -> bool:
    return kind in MANIFEST_KINDS and media_type in MANIFEST_TYPES


def read_manifest(store: ArtifactStore, sha256: str, size: int, name: str) -> dict[str, Any]:
    """The manifest's JSON object, read whole (it is at most MAX_MANIFEST_BYTES); ConflictError otherwise."""
    if size > MAX_MANIFEST_BYTES:
        raise ConflictError(
            f"artifact {name!r} is a manifest of {size} bytes; envyard serves manifests up to "
            f"{MAX_MANIFEST_BYTES} bytes", field=name, hint="move large content into blobs (layers) it references",
        )
    data = b"".join(store.read(sha256))
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConflictError(f"artifact {name!r} is recorded as a manifest but is not valid JSON: {exc}", field=name,
                            hint="upload the manifest's exact JSON bytes, or record it with a non-manifest media type"
                            ) from None
    if not isinstance(value, dict):
        raise ConflictError(f"artifact {name!r} is recorded as a manifest but its JSON is a "
                            f"{type(value).__name__}, not an object", field=name,
                            hint="a manifest or index is one JSON object")
    return value


def _string(value: Any, what: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConflictError(f"artifact {name!r}: {what} must be a non-empty string, not {value!r}", field=name,
                            hint="see the OCI image spec for the manifest and index fields")
    return value


def referrer_fields(value: dict[str, Any], media_type: str, name: str) -> ReferrerFields:
    """Subject digest and artifact type of one parsed manifest recorded with ``media_type``."""
    declared = _string(value.get("mediaType"), "mediaType", name)
    if declared is not None and declared != media_type:
        raise ConflictError(f"artifact {name!r} is recorded as {media_type} but its mediaType field says {declared}",
                            field=name, hint="record the manifest with the media type its JSON declares")
    is_index = media_type in INDEX_MEDIA_TYPES
    if is_index and not isinstance(value.get("manifests"), list):
        raise ConflictError(f"artifact {name!r} is recorded as an index ({media_type}) but has no manifests list",
                            field=name, hint="an index lists its manifests under 'manifests'")
    config = value.get("config")
    if not is_index and not (isinstance(config, dict) and isinstance(config.get("mediaType"), str)):
        raise ConflictError(f"artifact {name!r} is recorded as an image manifest ({media_type}) but has no config "
                            "descriptor with a mediaType", field=name,
                            hint="an image manifest names its config under 'config' (artifacts use the empty config)")
    artifact_type = _string(value.get("artifactType"), "artifactType", name)
    subject = value.get("subject")
    if subject is None:
        return ReferrerFields(None, artifact_type)
    digest = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digest, str) or not SHA256_DIGEST.fullmatch(digest):
        raise ConflictError(f"artifact {name!r}: subject {subject!r} is not a descriptor with a sha256 digest",
                            field=name, hint="envyard addresses content by sha256 only; a subject is a descriptor "
                            "of the manifest referred to")
    if artifact_type is None and not is_index:
        artifact_type = config["mediaType"] if isinstance(config, dict) else None
    return ReferrerFields(digest, artifact_type)


def describe(store: ArtifactStore, artifacts: Sequence[ArtifactEntry]) -> dict[str, ReferrerFields]:
    """Referrer fields of every manifest-typed artifact, by artifact name (read from ``store``)."""
    found: dict[str, ReferrerFields] = {}
    for artifact in artifacts:
        if is_manifest(artifact.kind, artifact.media_type):
            value = read_manifest(store, artifact.sha256, artifact.size, artifact.name)
            found[artifact.name] = referrer_fields(value, artifact.media_type, artifact.name)
    return found


def fields_of(found: dict[str, ReferrerFields], name: str) -> dict[str, Any]:
    """Column values for the artifact named ``name`` (none for artifacts that are not manifests)."""
    fields = found.get(name)
    return {} if fields is None else {"subject": fields.subject, "artifact_type": fields.artifact_type}


def descriptor(store: ArtifactStore, sha256: str, size: int, media_type: str,
               artifact_type: str | None) -> dict[str, Any]:
    """The referrers-list descriptor of a stored referrer manifest, annotations read from the manifest."""
    out: dict[str, Any] = {"mediaType": media_type, "digest": f"sha256:{sha256}", "size": size}
    if artifact_type:
        out["artifactType"] = artifact_type
    annotations = read_manifest(store, sha256, size, f"sha256:{sha256}").get("annotations")
    if isinstance(annotations, dict) and annotations:
        out["annotations"] = annotations
    return out


def list_referrers(session: Session, store: ArtifactStore, environment_id: int, subject: str,
                   artifact_type: str | None = None) -> list[dict[str, Any]]:
    """Descriptors of the manifests of the environment's completed builds whose subject is ``subject``
    (only those of ``artifact_type`` when given), each once, in the order they were stored."""
    query = (select(BuildArtifact).join(Build, col(Build.id) == BuildArtifact.build_id)
             .where(Build.environment_id == environment_id, Build.status == BuildStatus.COMPLETED,
                    BuildArtifact.subject == subject, col(BuildArtifact.kind).in_(MANIFEST_KINDS),
                    col(BuildArtifact.media_type).in_(MANIFEST_TYPES))
             .order_by(col(BuildArtifact.id)))
    if artifact_type is not None:
        query = query.where(BuildArtifact.artifact_type == artifact_type)
    unique: dict[str, BuildArtifact] = {}
    for artifact in session.exec(query).all():
        unique.setdefault(artifact.sha256, artifact)
    return [descriptor(store, a.sha256, a.size, a.media_type, a.artifact_type) for a in unique.values()]


def index(descriptors: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The OCI image index a referrers request answers."""
    return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPES[0], "manifests": list(descriptors)}
