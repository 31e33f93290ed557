"""Small real images for registry tests: gzip'd tar layers, a config with diff_ids, manifests and an index."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping, Sequence

from envyard.builder.oci.model import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    EMPTY_JSON,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ManifestBlob,
    OciImage,
    canonical_json,
    sha256_digest,
)
from envyard.builder.oci.store import BlobStore

SPDX = "application/spdx+json"
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def layer(store: BlobStore, files: Mapping[str, bytes], *, docker: bool = False) -> tuple[Descriptor, str]:
    """A gzip'd tar of ``files`` in ``store``: its descriptor and its diff_id (sha256 of the plain tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    media_type = DOCKER_LAYER_GZIP if docker else MEDIA_TYPE_LAYER_GZIP
    return store.put_bytes(gzip.compress(plain, mtime=0), media_type), sha256_digest(plain)


def image_manifest(
    store: BlobStore,
    platform: Mapping[str, str],
    layers: Sequence[Mapping[str, bytes]],
    *,
    docker: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> ManifestBlob:
    """An image manifest (OCI, or Docker schema 2) over ``layers``, its config and blobs in ``store``."""
    built = [layer(store, files, docker=docker) for files in layers]
    config = {**platform, "config": {"Env": ["PATH=/usr/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in built]}}
    config_descriptor = store.put_bytes(canonical_json(config), DOCKER_CONFIG if docker else MEDIA_TYPE_CONFIG)
    media_type = DOCKER_MANIFEST if docker else MEDIA_TYPE_MANIFEST
    value = {"schemaVersion": 2, "mediaType": media_type, "config": config_descriptor.to_json(),
             "layers": [d.to_json() for d, _ in built]}
    if annotations:
        value["annotations"] = dict(annotations)
    return ManifestBlob.of(media_type, value, platform=dict(platform))


def index_of(manifests: Sequence[ManifestBlob], *, docker: bool = False) -> ManifestBlob:
    """An index (or Docker manifest list) over platform manifests."""
    media_type = DOCKER_MANIFEST_LIST if docker else MEDIA_TYPE_INDEX
    return ManifestBlob.of(media_type, {"schemaVersion": 2, "mediaType": media_type,
                                        "manifests": [m.descriptor.to_json() for m in manifests]})


def two_platform_image(store: BlobStore, tag: str, *, docker: bool = False) -> OciImage:
    """An index over linux/amd64 and linux/arm64/v8, each with two layers; ``tag`` makes its blobs unique."""
    manifests = [
        image_manifest(store, platform, [{"etc/base": f"base {tag}\n".encode()},
                                         {f"opt/env/{arch}": f"{arch} {tag}\n".encode() * 50}], docker=docker)
        for arch, platform in (("amd64", AMD64), ("arm64", ARM64))
    ]
    return OciImage(root=index_of(manifests, docker=docker), manifests=tuple(manifests))


def single_image(store: BlobStore, layers: Sequence[Mapping[str, bytes]], **extra: object) -> OciImage:
    """A one-platform image (linux/amd64) whose root is its manifest."""
    manifest = image_manifest(store, AMD64, layers, **extra)  # type: ignore[arg-type]
    return OciImage(root=manifest, manifests=(manifest,))


def sbom_referrer(store: BlobStore, subject: ManifestBlob, text: str = "{}") -> ManifestBlob:
    """An SPDX artifact manifest whose subject is ``subject`` (the empty-JSON config, one SPDX layer)."""
    payload = store.put_bytes(text.encode(), SPDX)
    empty = store.put_bytes(EMPTY_JSON, MEDIA_TYPE_EMPTY)
    subject_descriptor = Descriptor(subject.descriptor.media_type, subject.descriptor.digest, subject.descriptor.size)
    return ManifestBlob.of(MEDIA_TYPE_MANIFEST, {
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST, "artifactType": SPDX,
        "config": empty.to_json(), "layers": [payload.to_json()], "subject": subject_descriptor.to_json(),
        "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
    })
