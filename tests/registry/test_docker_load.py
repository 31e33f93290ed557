"""``--load``: a small real image written as a ``docker save`` archive and loaded into Podman's Docker API."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from envyard.builder.errors import ImageError, RegistryError
from envyard.builder.oci.model import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    ManifestBlob,
    canonical_json,
    sha256_digest,
)
from envyard.builder.oci.store import BlobStore
from envyard.registry.docker_load import load_into_daemon, normalize_tag, write_docker_archive
from tests.podman import podman_available, podman_service

LABELS = {"org.opencontainers.image.title": "envyard test", "dev.envyard.lock": "abc123"}


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(store: BlobStore, labels: dict[str, str] = LABELS) -> ManifestBlob:
    """Two gzip'd layers, a config whose diff_ids are the sha256 of the uncompressed tars, and a manifest."""
    tars = [layer_tar({"opt/env/a.txt": b"alpha\n"}), layer_tar({"opt/env/bin/tool": b"#!/bin/sh\necho hi\n"})]
    layers = [store.put_bytes(gzip.compress(t, mtime=0), MEDIA_TYPE_LAYER_GZIP) for t in tars]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/opt/env/bin:/usr/bin:/bin"], "Labels": labels, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(t) for t in tars]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "envyard test"} for _ in tars],
    }
    config_descriptor = store.put_bytes(canonical_json(config), MEDIA_TYPE_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    return ManifestBlob.of(MEDIA_TYPE_MANIFEST, manifest)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def archive_bytes(manifest: ManifestBlob, store: BlobStore, tags: list[str]) -> bytes:
    out = io.BytesIO()
    write_docker_archive(manifest, store, tags, out)
    return out.getvalue()


# --- the archive --------------------------------------------------------------------------------------------------


def test_archive_layout(store: BlobStore) -> None:
    manifest = build_image(store)
    data = archive_bytes(manifest, store, ["envyard-test:1", "envyard-test"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {m.mtime for m in members} == {0} and {(m.uid, m.gid) for m in members} == {(0, 0)}
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        value = manifest.json()
        assert entry["RepoTags"] == ["envyard-test:1", "envyard-test:latest"]
        assert entry["Config"] == "blobs/sha256/" + value["config"]["digest"].split(":")[1]
        assert entry["Layers"] == ["blobs/sha256/" + d["digest"].split(":")[1] for d in value["layers"]]
        for path in [entry["Config"], *entry["Layers"]]:
            blob = tar.extractfile(path).read()  # type: ignore[union-attr]
            assert sha256_digest(blob) == "sha256:" + path.rsplit("/", 1)[1]
        assert "index.json" not in names  # podman load would take the OCI path and keep one tag only


def test_archive_is_reproducible(store: BlobStore, tmp_path: Path) -> None:
    manifest = build_image(store)
    other = BlobStore(tmp_path / "other")
    assert archive_bytes(manifest, store, ["a:1", "b:2"]) == archive_bytes(build_image(other), other, ["b:2", "a:1"])


def test_archive_refuses_an_index(store: BlobStore) -> None:
    manifest = build_image(store)
    index = ManifestBlob.of(MEDIA_TYPE_INDEX, {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                                               "manifests": [manifest.descriptor.to_json()]})
    with pytest.raises(ImageError, match="needs one image manifest") as info:
        archive_bytes(index, store, ["x:1"])
    assert info.value.hint and "single platform" in info.value.hint


def test_archive_refuses_missing_blobs_and_mismatched_diff_ids(store: BlobStore, tmp_path: Path) -> None:
    manifest = build_image(store)
    with pytest.raises(ImageError, match="not in the store"):
        archive_bytes(manifest, BlobStore(tmp_path / "empty"), ["x:1"])
    value = manifest.json()
    value["layers"] = value["layers"][:1]
    with pytest.raises(ImageError, match="2 diff_ids for 1 layers"):
        archive_bytes(ManifestBlob.of(MEDIA_TYPE_MANIFEST, value), store, ["x:1"])


def test_tags_are_checked_and_completed() -> None:
    assert normalize_tag("envyard-test") == "envyard-test:latest"
    assert normalize_tag("localhost:5000/team/env") == "localhost:5000/team/env:latest"
    assert normalize_tag("ghcr.io/org/env:2024.05-1") == "ghcr.io/org/env:2024.05-1"
    for bad in ("Upper/case:1", "env:bad tag", "env@sha256:" + "0" * 64, "", "env:"):
        with pytest.raises(ImageError):
            normalize_tag(bad)


# --- a real daemon ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    if not podman_available():
        pytest.skip("podman is not installed")
    with podman_service() as host:
        yield host


def _short(tag: str) -> str:
    """Podman stores a short name under ``localhost/``, Docker under ``docker.io/library/`` (shown without it)."""
    for prefix in ("localhost/", "docker.io/library/"):
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return tag


def test_load_into_daemon(docker_host: str, store: BlobStore) -> None:
    import docker

    manifest = build_image(store)
    loaded = load_into_daemon(manifest, store, ["envyard-test:1", "envyard-test:latest"], docker_host=docker_host)
    assert sorted(_short(n) for n in loaded) == ["envyard-test:1", "envyard-test:latest"]

    client = docker.DockerClient(base_url=docker_host)
    try:
        image = client.images.get("envyard-test:1")
        assert sorted(_short(t) for t in image.attrs["RepoTags"]) == ["envyard-test:1", "envyard-test:latest"]
        assert image.labels == LABELS
        assert image.attrs["Config"]["Env"] == ["PATH=/opt/env/bin:/usr/bin:/bin"]
        assert image.id == manifest.json()["config"]["digest"]  # the image ID is the config digest
        assert image.attrs["RootFS"]["Layers"] == json.loads(store.read(image.id))["rootfs"]["diff_ids"]
    finally:
        client.close()


def test_loading_again_moves_a_tag(docker_host: str, store: BlobStore) -> None:
    import docker

    first = build_image(store, labels={"version": "1"})
    second = build_image(store, labels={"version": "2"})
    load_into_daemon(first, store, ["envyard-retag:1"], docker_host=docker_host)
    load_into_daemon(second, store, ["envyard-retag:1"], docker_host=docker_host)
    client = docker.DockerClient(base_url=docker_host)
    try:
        assert client.images.get("envyard-retag:1").labels == {"version": "2"}
    finally:
        client.close()


def test_unreachable_daemon_is_a_registry_error(store: BlobStore, tmp_path: Path) -> None:
    manifest = build_image(store)
    with pytest.raises(RegistryError) as info:
        load_into_daemon(manifest, store, ["envyard-test:1"], docker_host=f"unix://{tmp_path}/nothing.sock")
    assert info.value.hint == "set DOCKER_HOST or start Docker/Podman"
    assert "nothing.sock" in info.value.message


def test_daemon_refusing_the_archive_is_a_registry_error(docker_host: str, store: BlobStore) -> None:
    value = build_image(store).json()
    config = json.loads(store.read(value["config"]["digest"]))
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64, "sha256:" + "1" * 64]  # right count, wrong digests
    value["config"] = store.put_bytes(canonical_json(config), MEDIA_TYPE_CONFIG).to_json()
    with pytest.raises(RegistryError, match="refused the image|could not load the image") as info:
        load_into_daemon(ManifestBlob.of(MEDIA_TYPE_MANIFEST, value), store, ["envyard-bad:1"], docker_host=docker_host)
    assert info.value.hint and "rejected" in info.value.hint
