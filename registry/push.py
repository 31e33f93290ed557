"""Push a built image to a registry, and pull a base image from one.

A push sends what a registry must already hold before each manifest: blobs, then
the platform manifests by digest, then the root under its tag, then the referrers
(SBOM artifacts whose ``subject`` is the root). A registry without the referrers
API (no ``OCI-Subject`` in its answer) gets the OCI 1.1 fallback: an index under
the tag ``sha256-<hex of the subject>`` listing the referrers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from envyard.builder.errors import RegistryError
from envyard.builder.oci.model import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_INDEX,
    Descriptor,
    ManifestBlob,
    OciImage,
)
from envyard.builder.oci.store import BlobStore
from envyard.registry.client import RegistryClient, referrers_tag
from envyard.registry.reference import ImageReference


class BlobSource(Protocol):
    """Where a push reads blobs: a :class:`BlobStore`, or an adapter over another store. ``path`` is only
    called for blobs the registry neither holds nor can mount."""

    def path(self, digest: str) -> Path: ...


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a push did: the root digest, where it went, and how each blob got there."""

    digest: str
    reference: str
    uploaded_blobs: int
    uploaded_bytes: int
    existing_blobs: int
    mounted_blobs: int


def _blobs(manifests: Sequence[ManifestBlob]) -> list[Descriptor]:
    """Configs and layers of the (non-index) manifests, each digest once, in order."""
    seen: dict[str, Descriptor] = {}
    for manifest in manifests:
        if not manifest.is_index:
            for child in manifest.children():
                seen.setdefault(child.digest, child)
    return list(seen.values())


def _mount_source(client: RegistryClient, repo: str, digest: str, mount_from: Sequence[str]) -> str | None:
    """The repository to mount ``digest`` from: the only candidate, or the first that holds it."""
    candidates = [r for r in mount_from if r != repo]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if client.blob_exists(repo, digest):
        return None
    return next((r for r in candidates if client.blob_exists(r, digest)), None)


def _referrer_descriptor(manifest: ManifestBlob, subject: str) -> Descriptor:
    value = manifest.json()
    if (value.get("subject") or {}).get("digest") != subject:
        raise RegistryError(f"referrer {manifest.descriptor.digest} does not name the image {subject} as its subject",
                            hint="referrers are artifact manifests whose 'subject' is the image's root")
    artifact_type = value.get("artifactType") or (value.get("config") or {}).get("mediaType")
    return Descriptor(manifest.descriptor.media_type, manifest.descriptor.digest, manifest.descriptor.size,
                      annotations=value.get("annotations") or None, artifact_type=artifact_type)


def _update_referrers_tag(client: RegistryClient, repo: str, subject: str, added: Sequence[Descriptor]) -> None:
    """Add descriptors to the fallback referrers index (tag ``sha256-<hex>``), keeping what it listed."""
    tag = referrers_tag(subject)
    existing = client.find_manifest(repo, tag, accept=(MEDIA_TYPE_INDEX,))
    entries = existing.json().get("manifests", []) if existing else []
    known = {entry.get("digest") for entry in entries}
    fresh = [d.to_json() for d in added if d.digest not in known]
    if not fresh:
        return
    index = ManifestBlob.of(MEDIA_TYPE_INDEX, {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                                               "manifests": entries + fresh})
    client.push_manifest(repo, tag, index)


def push_image(
    image: OciImage,
    store: BlobSource,
    ref: ImageReference,
    client: RegistryClient,
    *,
    mount_from: Sequence[str] = (),
) -> PushReport:
    """Push blobs, child manifests, the root (by tag, else digest) and referrers of ``image`` to ``ref``."""
    repo, digest = ref.repository, image.digest
    if ref.digest and ref.digest != digest:
        raise RegistryError(f"cannot push image {digest} as {ref}: the reference names another digest",
                            hint="push by tag, or by the image's own digest")
    manifests = image.all_manifests()
    counts = {"exists": 0, "mounted": 0, "uploaded": 0}
    uploaded_bytes = 0
    for blob in _blobs([*manifests, *image.referrers]):
        source = _mount_source(client, repo, blob.digest, mount_from)
        outcome = client.push_blob(repo, blob, functools.partial(store.path, blob.digest), mount_from=source)
        counts[outcome] += 1
        uploaded_bytes += blob.size if outcome == "uploaded" else 0
    for manifest in manifests[:-1]:
        client.push_manifest(repo, manifest.descriptor.digest, manifest)
    client.push_manifest(repo, ref.tag or digest, image.root)
    fallback = []
    for referrer in image.referrers:
        descriptor = _referrer_descriptor(referrer, digest)
        put = client.put_manifest(repo, referrer.descriptor.digest, referrer)
        if put.oci_subject is None:
            fallback.append(descriptor)
    if fallback:
        _update_referrers_tag(client, repo, digest, fallback)
    shown = f"{ref.registry}/{repo}" + (f":{ref.tag}" if ref.tag else "") + f"@{digest}"
    return PushReport(digest=digest, reference=shown, uploaded_blobs=counts["uploaded"],
                      uploaded_bytes=uploaded_bytes, existing_blobs=counts["exists"],
                      mounted_blobs=counts["mounted"])


def _platform_text(platform: Mapping[str, Any]) -> str:
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    return "/".join(parts + ([str(platform["variant"])] if platform.get("variant") else []))


def select_platform(index: ManifestBlob, platform: Mapping[str, str]) -> Descriptor:
    """The manifest of an index for ``platform`` (os, architecture, variant); a missing variant matches any."""
    entries = [d for d in index.children() if d.media_type in MANIFEST_MEDIA_TYPES and d.platform]
    same = [d for d in entries if d.platform is not None and d.platform.get("os") == platform.get("os")
            and d.platform.get("architecture") == platform.get("architecture")]
    wanted = platform.get("variant")
    for candidate in ([d for d in same if d.platform and d.platform.get("variant") == wanted],
                      [d for d in same if d.platform and not d.platform.get("variant")], same if not wanted else []):
        if candidate:
            return candidate[0]
    available = ", ".join(_platform_text(d.platform or {}) for d in entries) or "none"
    raise RegistryError(f"image index {index.descriptor.digest} has no manifest for {_platform_text(platform)} "
                        f"(it has: {available})", hint="choose a base image built for this platform")


def pull_image(
    ref: ImageReference,
    client: RegistryClient,
    store: BlobStore,
    platform: Mapping[str, str],
) -> tuple[ManifestBlob, dict[str, Any]]:
    """Fetch the ``platform`` manifest of ``ref``, its config and layers into ``store``; return it and the config."""
    repo = ref.repository
    manifest = client.get_manifest(repo, ref.reference)
    if manifest.descriptor.media_type in INDEX_MEDIA_TYPES:
        chosen = select_platform(manifest, platform)
        manifest = client.get_manifest(repo, chosen.digest, accept=MANIFEST_MEDIA_TYPES)
    if manifest.descriptor.media_type not in MANIFEST_MEDIA_TYPES:
        raise RegistryError(f"{ref} is a {manifest.descriptor.media_type}, not an image manifest")
    children = manifest.children()
    for blob in children:
        if not store.has(blob.digest):
            client.get_blob(repo, blob, store)
    try:
        config: dict[str, Any] = json.loads(store.read(children[0].digest))
    except ValueError as exc:
        raise RegistryError(f"the config {children[0].digest} of {ref} is not JSON") from exc
    found = {"os": config.get("os"), "architecture": config.get("architecture")}
    if any(found[key] and platform.get(key) and found[key] != platform[key] for key in found):
        raise RegistryError(f"{ref} is built for {_platform_text(found)}, not {_platform_text(platform)}",
                            hint="choose a base image (or an index) that has this platform")
    return manifest, config
