"""OCI descriptors, media types and the canonical JSON every manifest is written in.

A manifest's digest is the sha256 of its exact bytes, so those bytes are made
once (:func:`canonical_json`) and carried around unchanged: written to an image
layout, pushed to a registry, referenced by a referrer's ``subject``.

>>> d = Descriptor(MEDIA_TYPE_CONFIG, "sha256:" + "0" * 64, 2)
>>> d.to_json()["mediaType"]
'application/vnd.oci.image.config.v1+json'
>>> canonical_json({"b": 1, "a": [1, 2]})
b'{"a":[1,2],"b":1}'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_MEDIA_TYPES = (MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (MEDIA_TYPE_INDEX, DOCKER_MANIFEST_LIST)

#: The empty JSON object ``{}`` used as config of artifacts (SBOM referrers).
EMPTY_JSON = b"{}"

#: conda platform -> OCI platform (``architecture``, ``variant``).
OCI_PLATFORMS: Mapping[str, dict[str, str]] = {
    "linux-64": {"os": "linux", "architecture": "amd64"},
    "linux-aarch64": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    "linux-ppc64le": {"os": "linux", "architecture": "ppc64le"},
}


def canonical_json(value: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the one serialization of every manifest, index and config."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Mapping[str, str] | None = None
    artifact_type: str | None = None

    @classmethod
    def of(cls, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), **extra)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=value["mediaType"],
            digest=value["digest"],
            size=int(value["size"]),
            annotations=value.get("annotations"),
            platform=value.get("platform"),
            artifact_type=value.get("artifactType"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class ManifestBlob:
    """A manifest or index: its descriptor and the exact bytes that were digested."""

    descriptor: Descriptor
    data: bytes

    @classmethod
    def of(cls, media_type: str, value: Mapping[str, Any], **extra: Any) -> ManifestBlob:
        data = canonical_json(value)
        return cls(Descriptor.of(media_type, data, **extra), data)

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed

    @property
    def is_index(self) -> bool:
        return self.descriptor.media_type in INDEX_MEDIA_TYPES

    def children(self) -> list[Descriptor]:
        """Manifests of an index; config and layers of a manifest; the subject is not a child."""
        value = self.json()
        if self.is_index:
            return [Descriptor.from_json(m) for m in value.get("manifests", [])]
        return [Descriptor.from_json(value["config"])] + [Descriptor.from_json(x) for x in value.get("layers", [])]


@dataclass(frozen=True, slots=True)
class OciImage:
    """A built image: the root (an index, or one manifest), the manifests under it, and referrers.

    Blobs (configs, layers, referrer payloads) live in a :class:`builder.oci.store.BlobStore`;
    manifests are carried here as exact bytes. ``manifests`` lists every manifest under the
    root (the root itself when it is a single manifest); ``referrers`` are artifact
    manifests (SBOM) whose ``subject`` is the root.
    """

    root: ManifestBlob
    manifests: tuple[ManifestBlob, ...]
    referrers: tuple[ManifestBlob, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.root.descriptor.digest

    def all_manifests(self) -> list[ManifestBlob]:
        """Children before parents: the order a registry must receive them in."""
        ordered = [m for m in self.manifests if m.descriptor.digest != self.root.descriptor.digest]
        return ordered + [self.root]
