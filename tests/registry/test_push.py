"""push_image / pull_image against a real distribution registry, checked with skopeo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from envyard.builder.errors import RegistryError
from envyard.builder.oci.model import DOCKER_MANIFEST, MEDIA_TYPE_MANIFEST, OciImage
from envyard.builder.oci.store import BlobStore
from envyard.registry.client import RegistryClient, referrers_tag
from envyard.registry.push import pull_image, push_image
from envyard.registry.reference import parse_reference
from tests.registry.images import AMD64, ARM64, SPDX, sbom_referrer, single_image, two_platform_image

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


def blob_count(image: OciImage) -> int:
    return len({d.digest for m in image.all_manifests() if not m.is_index for d in m.children()})


def skopeo(*args: str) -> bytes:
    result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@needs_skopeo
def test_pushed_bytes_are_what_skopeo_reads(registry_host: str, store: BlobStore, tmp_path: Path) -> None:
    image = two_platform_image(store, "skopeo")
    with RegistryClient(registry_host) as client:
        report = push_image(image, store, parse_reference(f"{registry_host}/team/env:1.0"), client)
    assert report.digest == image.digest
    assert report.reference == f"{registry_host}/team/env:1.0@{image.digest}"
    assert (report.uploaded_blobs, report.existing_blobs, report.mounted_blobs) == (blob_count(image), 0, 0)
    source = f"docker://{registry_host}/team/env"
    assert skopeo("inspect", "--raw", "--tls-verify=false", f"{source}:1.0") == image.root.data
    arm = image.manifests[1]
    assert skopeo("inspect", "--raw", "--tls-verify=false", f"{source}@{arm.descriptor.digest}") == arm.data
    skopeo("copy", "--all", "--src-tls-verify=false", f"{source}:1.0", f"oci:{tmp_path / 'layout'}:1.0")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]


def test_second_push_uploads_nothing_and_mount_replaces_upload(registry_host: str, store: BlobStore) -> None:
    image = two_platform_image(store, "again")
    with RegistryClient(registry_host) as client:
        first = push_image(image, store, parse_reference(f"{registry_host}/again/one:v1"), client)
        again = push_image(image, store, parse_reference(f"{registry_host}/again/one:v1"), client)
        mounted = push_image(image, store, parse_reference(f"{registry_host}/again/two:v1"), client,
                             mount_from=["again/one"])
    count = blob_count(image)
    assert (first.uploaded_blobs, first.uploaded_bytes > 0) == (count, True)
    assert (again.uploaded_blobs, again.uploaded_bytes, again.existing_blobs) == (0, 0, count)
    assert (mounted.uploaded_blobs, mounted.uploaded_bytes, mounted.mounted_blobs) == (0, 0, count)
    assert mounted.digest == first.digest


def test_mount_from_several_repositories_picks_the_one_holding_the_blob(registry_host: str, store: BlobStore) -> None:
    image = single_image(store, [{"a": b"several sources"}])
    with RegistryClient(registry_host) as client:
        push_image(image, store, parse_reference(f"{registry_host}/mnt/holder:v1"), client)
        report = push_image(image, store, parse_reference(f"{registry_host}/mnt/target:v1"), client,
                            mount_from=["mnt/empty", "mnt/holder"])
    assert (report.mounted_blobs, report.uploaded_blobs) == (2, 0)


def test_changing_one_layer_uploads_that_layer_and_the_config(registry_host: str, store: BlobStore) -> None:
    base_layers = [{"etc/os": b"base\n"}, {"opt/env/lib": b"x" * 4096}, {"opt/app": b"v1\n"}]
    before = single_image(store, base_layers)
    after = single_image(store, [*base_layers[:2], {"opt/app": b"v2\n"}])
    ref = parse_reference(f"{registry_host}/delta/app:latest")
    with RegistryClient(registry_host) as client:
        push_image(before, store, ref, client)
        report = push_image(after, store, ref, client)
        assert client.get_manifest("delta/app", "latest").data == after.root.data
    changed_layer, config = after.root.children()[-1], after.root.children()[0]
    assert (report.uploaded_blobs, report.existing_blobs) == (2, 2)
    assert report.uploaded_bytes == changed_layer.size + config.size


def test_referrers_are_listed_through_the_fallback_tag(registry_host: str, store: BlobStore) -> None:
    image = two_platform_image(store, "sbom")
    first = sbom_referrer(store, image.root, '{"spdxVersion":"SPDX-2.3","name":"one"}')
    second = sbom_referrer(store, image.root, '{"spdxVersion":"SPDX-2.3","name":"two"}')
    with_first = OciImage(image.root, image.manifests, referrers=(first,))
    with_both = OciImage(image.root, image.manifests, referrers=(first, second))
    ref = parse_reference(f"{registry_host}/sbom/env:1")
    with RegistryClient(registry_host) as client:
        push_image(with_first, store, ref, client)
        assert [d.digest for d in client.referrers("sbom/env", image.digest)] == [first.descriptor.digest]
        push_image(with_both, store, ref, client)
        found = client.referrers("sbom/env", image.digest)
        assert client.find_manifest("sbom/env", referrers_tag(image.digest)) is not None
        assert client.referrers("sbom/env", image.digest, artifact_type="application/vnd.other") == []
        assert client.get_manifest("sbom/env", first.descriptor.digest).data == first.data
    assert [d.digest for d in found] == [first.descriptor.digest, second.descriptor.digest]
    assert {d.artifact_type for d in found} == {SPDX}
    assert found[0].annotations == {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}


def test_a_referrer_of_another_image_is_refused(registry_host: str, store: BlobStore) -> None:
    image = single_image(store, [{"a": b"subject"}])
    other = single_image(store, [{"a": b"other subject"}])
    wrong = OciImage(image.root, image.manifests, referrers=(sbom_referrer(store, other.root),))
    with RegistryClient(registry_host) as client, pytest.raises(RegistryError, match="subject"):
        push_image(wrong, store, parse_reference(f"{registry_host}/sbom/wrong:1"), client)


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker-schema2"])
def test_pull_picks_the_platform_and_verifies_blobs(registry_host: str, store: BlobStore, tmp_path: Path,
                                                     docker: bool) -> None:
    image = two_platform_image(store, f"pull-{docker}", docker=docker)
    ref = parse_reference(f"{registry_host}/pull/base:{'docker' if docker else 'oci'}")
    local = BlobStore(tmp_path / "pulled")
    with RegistryClient(registry_host) as client:
        push_image(image, store, ref, client)
        manifest, config = pull_image(ref, client, local, ARM64)
        again, _ = pull_image(parse_reference(f"{registry_host}/pull/base@{image.digest}"), client, local, AMD64)
        with pytest.raises(RegistryError, match=r"no manifest for linux/ppc64le \(it has: linux/amd64, linux/arm64/v8"):
            pull_image(ref, client, local, {"os": "linux", "architecture": "ppc64le"})
    assert manifest.data == image.manifests[1].data
    assert manifest.descriptor.media_type == (DOCKER_MANIFEST if docker else MEDIA_TYPE_MANIFEST)
    assert (config["architecture"], len(config["rootfs"]["diff_ids"])) == ("arm64", 2)
    assert again.descriptor.digest == image.manifests[0].descriptor.digest
    for blob in manifest.children() + again.children():
        assert local.read(blob.digest) == store.read(blob.digest)


def test_pull_of_a_single_manifest_checks_its_platform(registry_host: str, store: BlobStore, tmp_path: Path) -> None:
    image = single_image(store, [{"a": b"amd64 only"}])
    ref = parse_reference(f"{registry_host}/pull/single:1")
    with RegistryClient(registry_host) as client:
        push_image(image, store, ref, client)
        manifest, _ = pull_image(ref, client, BlobStore(tmp_path / "ok"), AMD64)
        with pytest.raises(RegistryError, match="built for linux/amd64, not linux/arm64/v8"):
            pull_image(ref, client, BlobStore(tmp_path / "wrong"), ARM64)
    assert manifest.data == image.root.data


def test_push_by_digest_reference(registry_host: str, store: BlobStore) -> None:
    image = single_image(store, [{"a": b"by digest"}])
    with RegistryClient(registry_host) as client:
        report = push_image(image, store, parse_reference(f"{registry_host}/bydigest/x@{image.digest}"), client)
        with pytest.raises(RegistryError, match="names another digest"):
            push_image(image, store, parse_reference(f"{registry_host}/bydigest/x@sha256:{'0' * 64}"), client)
    assert report.reference == f"{registry_host}/bydigest/x@{image.digest}"
