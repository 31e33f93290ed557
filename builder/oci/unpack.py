"""Read an image from an OCI image layout and unpack its root filesystem, verifying every digest on the way.

:func:`find_platform_manifest` walks ``index.json`` (and an image index under it) to the manifest of one platform;
each manifest's bytes are hashed and compared with the digest that names them. :func:`unpack_rootfs` extracts the
layers in order (gzip, zstd or plain tar), hashing each blob while it is read, applying OCI whiteouts, and refusing
members that would land outside the root filesystem.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from envyard.builder.errors import ImageError, RunIntegrityError
from envyard.builder.oci.layout import read_layout_index
from envyard.builder.oci.model import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_LAYER_ZSTD,
    OCI_PLATFORMS,
    Descriptor,
    ManifestBlob,
)
from envyard.builder.oci.store import BlobStore

__all__ = ["LayoutImage", "find_platform_manifest", "unpack_rootfs"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, slots=True)
class LayoutImage:
    """One platform's manifest in a layout, with its parsed config (both verified against their digests)."""

    layout: Path
    manifest: ManifestBlob
    config: dict[str, Any]

    @property
    def digest(self) -> str:
        return self.manifest.descriptor.digest

    def layers(self) -> list[Descriptor]:
        return self.manifest.children()[1:]


def _verified_blob(store: BlobStore, digest: str, what: str) -> bytes:
    if not store.has(digest):
        raise ImageError(f"{what} {digest} is missing from the image layout", file=store.root,
                         hint="copy the whole image into the layout again (skopeo copy / envyard image --output)")
    data = store.read(digest)
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise RunIntegrityError(f"{what} {digest} in the layout hashes to {actual}", file=store.path(digest),
                                field="environment.images",
                                hint="the layout was changed after it was written; fetch the image again")
    return data


def _matches(descriptor: Descriptor, platform: str) -> bool:
    wanted = OCI_PLATFORMS.get(platform, {})
    given = descriptor.platform or {}
    return all(given.get(key) == value for key, value in wanted.items() if key in ("os", "architecture"))


def find_platform_manifest(layout: Path, platform: str) -> LayoutImage:
    """The image manifest for ``platform`` in the OCI layout at ``layout`` (a tagged root or an index under it)."""
    store = BlobStore(layout)
    entries = [Descriptor.from_json(entry) for entry in read_layout_index(layout)]
    roots = [entry for entry in entries if entry.artifact_type is None]
    if not roots:
        raise ImageError("the image layout lists no image", file=layout / "index.json",
                         hint="write the image with `envyard image --output oci:DIR` or `skopeo copy ... oci:DIR`")
    candidates: list[Descriptor] = []
    for root in roots:
        if root.media_type in INDEX_MEDIA_TYPES:
            index = ManifestBlob(root, _verified_blob(store, root.digest, "image index"))
            candidates += [child for child in index.children() if child.media_type in MANIFEST_MEDIA_TYPES]
        elif root.media_type in MANIFEST_MEDIA_TYPES:
            candidates.append(root)
    chosen = [c for c in candidates if c.platform is None or _matches(c, platform)]
    if not chosen:
        raise ImageError(f"the image layout has no manifest for {platform}", file=layout / "index.json",
                         hint="build the image for that platform (envyard image -p ...)")
    descriptor = chosen[0]
    manifest = ManifestBlob(descriptor, _verified_blob(store, descriptor.digest, "image manifest"))
    config_descriptor = manifest.children()[0]
    config = json.loads(_verified_blob(store, config_descriptor.digest, "image config"))
    return LayoutImage(layout, manifest, config)


def _decompressed(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        return gzip.decompress(data)
    if media_type == MEDIA_TYPE_LAYER_ZSTD or media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def _inside(rootfs: Path, name: str) -> Path:
    parts = [part for part in PurePosixPath(name).parts if part not in ("/", ".")]
    if ".." in parts:
        raise ImageError(f"layer member {name!r} points outside the root filesystem",
                         hint="the image is malformed or hostile; rebuild it")
    return rootfs.joinpath(*parts)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def unpack_rootfs(image: LayoutImage, rootfs: Path) -> Path:
    """Extract every layer of ``image`` into ``rootfs`` (created empty), each blob verified against its digest."""
    store = BlobStore(image.layout)
    rootfs.mkdir(parents=True, exist_ok=False)
    for layer in image.layers():
        data = _decompressed(_verified_blob(store, layer.digest, "image layer"), layer.media_type)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            members = []
            for member in archive.getmembers():
                path = _inside(rootfs, member.name)
                base = path.name
                if base == OPAQUE:
                    for child in list(path.parent.iterdir()) if path.parent.is_dir() else []:
                        _remove(child)
                elif base.startswith(WHITEOUT):
                    _remove(path.with_name(base[len(WHITEOUT):]))
                else:
                    if (path.exists() or path.is_symlink()) and not (member.isdir() and path.is_dir()):
                        _remove(path)
                    members.append(member)
            archive.extractall(rootfs, members=members, filter="tar")
    return rootfs
