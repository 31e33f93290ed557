"""Pull one platform of an image by digest into an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``), for
runtimes that read layouts (``envyard run --runtime runc|bwrap`` unpacks it with :mod:`envyard.builder.oci.unpack`).

Every blob is checked against its digest as it is fetched (:meth:`envyard.registry.client.RegistryClient.get_blob`);
the manifest is pulled by digest, so the layout holds exactly the image the digest names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envyard.builder.oci.model import OCI_PLATFORMS, canonical_json
from envyard.builder.oci.store import BlobStore
from envyard.registry.client import RegistryClient
from envyard.registry.push import pull_image
from envyard.registry.reference import ImageReference

__all__ = ["pull_to_layout"]


def pull_to_layout(ref: ImageReference, client: RegistryClient, layout: Path, platform: str,
                   annotations: Mapping[str, str] | None = None) -> str:
    """Fetch ``ref``'s manifest for conda ``platform`` (e.g. ``linux-64``), its config and layers into the OCI
    layout at ``layout`` (created or added to); the digest of the platform's image manifest."""
    store = BlobStore(layout)
    manifest, _ = pull_image(ref, client, store, OCI_PLATFORMS[platform])
    if not store.has(manifest.descriptor.digest):
        store.put_bytes(manifest.data, manifest.descriptor.media_type)
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index_path = layout / "index.json"
    index: dict[str, Any] = (json.loads(index_path.read_text()) if index_path.is_file()
                             else {"schemaVersion": 2, "manifests": []})
    entry: dict[str, Any] = {"mediaType": manifest.descriptor.media_type, "digest": manifest.descriptor.digest,
             "size": manifest.descriptor.size, "platform": dict(OCI_PLATFORMS[platform]),
             "annotations": dict(annotations or {})}
    index["manifests"] = [m for m in index.get("manifests", []) if m.get("digest") != entry["digest"]] + [entry]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return str(manifest.descriptor.digest)
