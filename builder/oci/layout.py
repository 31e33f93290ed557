"""OCI image layout directories (``oci:DIR``): what skopeo, umoci and crane read.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> read_layout_index(out)
[]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envyard.builder.errors import ImageError
from envyard.builder.oci.model import Descriptor, ManifestBlob, OciImage, canonical_json
from envyard.builder.oci.store import BlobStore

REF_NAME = "org.opencontainers.image.ref.name"


def read_layout_index(out_dir: Path) -> list[dict[str, Any]]:
    """The manifests listed in a layout's ``index.json`` (empty when there is no layout yet)."""
    index = out_dir / "index.json"
    if not index.is_file():
        return []
    try:
        return list(json.loads(index.read_text()).get("manifests", []))
    except ValueError as exc:
        raise ImageError(f"index.json is not valid JSON: {exc}", file=index,
                         hint="point --output at an empty directory or a valid OCI layout") from None


def write_layout(image: OciImage, store: BlobStore, out_dir: Path, tag: str) -> Path:
    """Add ``image`` (blobs, manifests, referrers) to the layout at ``out_dir`` under ``tag``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    target = BlobStore(out_dir)
    manifests = [*image.all_manifests(), *image.referrers]
    for manifest in manifests:
        for child in manifest.children():
            if child.media_type.endswith("manifest.v1+json") or child.media_type.endswith("index.v1+json"):
                continue
            _copy_blob(store, target, child)
        if not target.has(manifest.descriptor.digest):
            target.put_bytes(manifest.data, manifest.descriptor.media_type)
    root = image.root.descriptor
    entries = [m for m in read_layout_index(out_dir) if (m.get("annotations") or {}).get(REF_NAME) != tag]
    known = {m["digest"] for m in entries}
    root_entry = Descriptor(root.media_type, root.digest, root.size,
                            annotations={REF_NAME: tag}, platform=root.platform).to_json()
    entries.append(root_entry)
    entries += [_referrer_entry(r) for r in image.referrers if r.descriptor.digest not in known]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    tmp = out_dir / "index.json.tmp"
    tmp.write_bytes(canonical_json(index))
    tmp.replace(out_dir / "index.json")
    return out_dir


def _referrer_entry(referrer: ManifestBlob) -> dict[str, Any]:
    d = referrer.descriptor
    return Descriptor(d.media_type, d.digest, d.size, artifact_type=d.artifact_type).to_json()


def _copy_blob(store: BlobStore, target: BlobStore, descriptor: Descriptor) -> None:
    if target.has(descriptor.digest):
        return
    if not store.has(descriptor.digest):
        raise ImageError(f"blob {descriptor.digest} ({descriptor.media_type}) is missing from the build store",
                         file=store.root, hint="the build cache was changed during the build; build again")
    store.link_into(target, descriptor.digest)
