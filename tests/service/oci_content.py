"""Put arbitrary OCI content into envyard as a completed build, through the worker protocol a real worker uses.

envyard accepts no pushes: its repositories hold what builds produced. The conformance workflows and the
registry benchmark need content a conda build would not make (nested indexes, artifacts with a subject,
empty blobs, a 500 MB image), so a test plays the worker: it claims the queued build, uploads the blobs
over HTTP and completes the build with one artifact per blob.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.service.conftest import create_environment

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Blob:
    """Content to store: its bytes (or a file holding them) and the media type the build records for it."""

    media_type: str
    data: bytes | None = None
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else (self.path.stat().st_size if self.path else 0)

    def sha256(self) -> str:
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        digest = hashlib.sha256()
        assert self.path is not None
        with self.path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def chunks(self) -> Any:
        if self.data is not None:
            return self.data
        assert self.path is not None

        def read() -> Any:
            with self.path.open("rb") as handle:  # type: ignore[union-attr]
                while chunk := handle.read(1 << 20):
                    yield chunk

        return read()


def json_blob(value: Mapping[str, Any], media_type: str) -> Blob:
    return Blob(media_type, json.dumps(value, separators=(",", ":")).encode())


def publish_build(http: httpx.Client, namespace: str, environment: str, root: Blob, blobs: list[Blob],
                  *, deps: tuple[str, ...] = ("e2e-env",)) -> dict[str, Any]:
    """A completed build of ``namespace/environment`` whose image root is ``root`` and whose other content is
    ``blobs`` (configs, layers, child manifests, referrers). No worker may be running against the server:
    this client claims the build itself. Returns the build as the API shows it."""
    submitted = create_environment(http, namespace, environment, list(deps))
    claimed = http.post("/api/v1/jobs/claim", json={"worker": "oci-content", "wait_seconds": 5})
    assert claimed.status_code == 200, claimed.text
    job = claimed.json()
    assert job["build_id"] == submitted["id"], "another queued build was claimed; run without workers"
    lease = job["lease_id"]
    artifacts = []
    root_hex = root.sha256()
    for index, blob in enumerate([root, *blobs]):
        hexdigest = root_hex if index == 0 else blob.sha256()
        response = http.put(f"/api/v1/jobs/{job['build_id']}/blobs/sha256:{hexdigest}",
                            params={"lease_id": lease, "size": blob.size}, content=blob.chunks())
        assert response.status_code == 201, response.text
        kind, name = ("oci-index", "image-index.json" if root.media_type in INDEX_TYPES else "image-manifest.json") \
            if index == 0 else ("oci-blob", f"blobs/sha256/{hexdigest}")
        if any(a["name"] == name for a in artifacts):
            continue
        artifacts.append({"kind": kind, "name": name, "sha256": hexdigest, "size": blob.size,
                          "media_type": blob.media_type})
    done = http.post(f"/api/v1/jobs/{job['build_id']}/complete",
                     json={"lease_id": lease, "artifacts": artifacts, "packages": [],
                           "image_digest": f"sha256:{root_hex}"})
    assert done.status_code == 200, done.text
    return dict(done.json())
