"""The image orchestrator: lock -> install (for the in-image prefix) -> layers -> manifest(s) -> SBOM.

A short sequence of stage calls shared by ``envyard image`` and the worker.
Registry access (base image pulls, pushes) stays outside: base images arrive
as :class:`BaseImage` already in the blob store.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from envyard.builder.errors import ImageError
from envyard.builder.install import InstallOptions, install_lock
from envyard.builder.model import EnvironmentLock, PlatformLock
from envyard.builder.oci.image import BaseImage, BuiltLayer, ImageOptions, build_platform_image, image_index
from envyard.builder.oci.model import ManifestBlob, OciImage, canonical_json
from envyard.builder.oci.store import BlobStore
from envyard.builder.progress import NullReporter, Reporter, Stage

if TYPE_CHECKING:
    from envyard.builder.oci.sbom import SbomFormat


@dataclass(frozen=True, slots=True)
class ImageRequest:
    lock: EnvironmentLock
    platforms: Sequence[str]
    options: ImageOptions
    install: InstallOptions
    bases: Mapping[str, BaseImage] = field(default_factory=dict)
    sbom: SbomFormat | None = "spdx"  # None: no SBOM
    name: str = "environment"


@dataclass(frozen=True, slots=True)
class ImageResult:
    image: OciImage
    layers: Mapping[str, Sequence[BuiltLayer]]


def platform_lock_digest(lock: PlatformLock) -> str:
    """A digest of exactly what is installed (same whichever lockfile format carried it).

    >>> platform_lock_digest(PlatformLock("linux-64"))[:7]
    'sha256:'
    """
    value = {
        "platform": lock.platform,
        "conda": [[p.name, p.version, p.build, p.url, p.sha256] for p in lock.conda],
        "pip": [[p.normalized_name, p.version, p.url, p.sha256] for p in lock.pip],
    }
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def _labels(request: ImageRequest, platform: str) -> dict[str, str]:
    lock = request.lock.platforms[platform]
    labels = {
        "dev.envyard.lock-digest": platform_lock_digest(lock),
        "dev.envyard.platform": platform,
        "dev.envyard.env-prefix": request.options.env_prefix,
        "org.opencontainers.image.title": request.name,
    }
    if request.lock.content_hash.get(platform):
        labels["dev.envyard.spec-hash"] = request.lock.content_hash[platform]
    return {**labels, **request.options.labels}


def build_image(request: ImageRequest, store: BlobStore, reporter: Reporter | None = None) -> ImageResult:
    """Build the image (an index when several platforms are asked for) into ``store``."""
    reporter = reporter or NullReporter()
    missing = [p for p in request.platforms if p not in request.lock.platforms]
    if missing or not request.platforms:
        raise ImageError(f"the lock has no {', '.join(missing) or 'platform'} "
                         f"(it has {', '.join(request.lock.platform_names)})",
                         field="platform", hint="lock the spec for that platform first")
    manifests: list[ManifestBlob] = []
    layers: dict[str, Sequence[BuiltLayer]] = {}
    with tempfile.TemporaryDirectory(prefix="envyard-image-") as tmp:
        work = Path(tmp)
        for platform in request.platforms:
            prefix = work / platform / "env"
            install = replace(request.install, target_prefix=request.options.env_prefix, replace=False)
            install_lock(request.lock.platforms[platform], prefix, install, reporter)
            reporter.stage_started(Stage.IMAGE, platform)
            options = replace(request.options, labels=_labels(request, platform))
            manifest, built = build_platform_image(prefix, platform, options, store, work / platform,
                                                   request.bases.get(platform))
            reporter.stage_finished(Stage.IMAGE, platform, layers=len(built),
                                    reused=sum(1 for b in built if b.reused))
            manifests.append(manifest)
            layers[platform] = built
    root = manifests[0] if len(manifests) == 1 else image_index(manifests, request.options)
    referrers = tuple(_sbom(request, request.sbom, store, root)) if request.sbom else ()
    return ImageResult(OciImage(root, tuple(manifests), referrers), layers)


def _sbom(request: ImageRequest, fmt: SbomFormat, store: BlobStore, root: ManifestBlob) -> list[ManifestBlob]:
    from envyard.builder.oci.sbom import cyclonedx_document, sbom_referrer, spdx_document

    created = datetime.fromtimestamp(request.options.source_date_epoch, UTC)
    referrers = []
    for platform in request.platforms:
        lock = request.lock.platforms[platform]
        seed = platform_lock_digest(lock)
        name = f"{request.name}-{platform}"
        if fmt == "spdx":
            document = spdx_document(lock, name=name, namespace_seed=seed, created=created)
        else:
            document = cyclonedx_document(lock, name=name, namespace_seed=seed, created=created)
        referrers.append(sbom_referrer(store, root.descriptor, document, fmt))
    return referrers
