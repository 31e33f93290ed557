"""The /v2/ referrers API on real builds (their SBOMs are referrers of the image), the manifest checks at build
completion that fill it, and blob GETs redirected to presigned S3 URLs (skopeo follows them)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from envyard.builder.oci.sbom import MEDIA_TYPE_CYCLONEDX, MEDIA_TYPE_SPDX
from tests.service.conftest import Service, create_environment
from tests.service.oci_content import (
    MT_EMPTY_JSON,
    MT_IMAGE,
    MT_INDEX,
    Blob,
    TestData,
    complete_build,
    digest_of,
    go_json,
    publish_build,
)

S3_ENV = {"ENVYARD_S3_ACCESS_KEY": "testing", "ENVYARD_S3_SECRET_KEY": "testing"}


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)


def test_a_real_build_lists_its_sboms_as_referrers(start: Any, database: str) -> None:
    if database:
        pytest.skip("the referrers query is the same on PostgreSQL; one database is enough here")
    service: Service = start("--workers", "1")
    with service.client() as http:
        submitted = create_environment(http, "lab", "sbom", ["e2e-env"])
    build = service.wait_for(submitted["id"])
    assert build["status"] == "completed" and build["image_digest"]
    subject = build["image_digest"]
    with service.client() as http:
        listed = http.get(f"/v2/lab/sbom/referrers/{subject}")
        assert listed.status_code == 200 and listed.headers["content-type"] == MT_INDEX
        assert "oci-filters-applied" not in listed.headers
        index = listed.json()
        assert index["schemaVersion"] == 2 and index["mediaType"] == MT_INDEX
        assert len(index["manifests"]) == len(build["platforms"]) >= 1  # one SBOM per platform
        stored = {a["digest"]: a for a in http.get(f"/api/v1/builds/{build['id']}/artifacts").json()}
        for found in index["manifests"]:
            assert found["mediaType"] == MT_IMAGE and found["artifactType"] == MEDIA_TYPE_SPDX
            assert stored[found["digest"]]["size"] == found["size"]
            manifest = http.get(f"/v2/lab/sbom/manifests/{found['digest']}")
            assert manifest.status_code == 200 and len(manifest.content) == found["size"]
            referrer = json.loads(manifest.content)
            assert referrer["subject"]["digest"] == subject
            assert found.get("annotations") == referrer.get("annotations")
            assert found["annotations"]["org.opencontainers.image.created"]
        unfiltered = http.get(f"/v2/lab/sbom/referrers/{subject}", params={"artifactType": ""})
        assert unfiltered.json() == index and "oci-filters-applied" not in unfiltered.headers
        spdx = http.get(f"/v2/lab/sbom/referrers/{subject}", params={"artifactType": MEDIA_TYPE_SPDX})
        assert spdx.headers["oci-filters-applied"] == "artifactType" and spdx.json() == index
        other = http.get(f"/v2/lab/sbom/referrers/{subject}", params={"artifactType": MEDIA_TYPE_CYCLONEDX})
        assert other.status_code == 200 and other.headers["oci-filters-applied"] == "artifactType"
        assert other.json()["manifests"] == []
        nothing = http.get(f"/v2/lab/sbom/referrers/{index['manifests'][0]['digest']}")
        assert nothing.status_code == 200 and nothing.json()["manifests"] == []
        for malformed in ("sha256:xyz", "notadigest", "sha256:" + "A" * 64):
            refused = http.get(f"/v2/lab/sbom/referrers/{malformed}")
            assert refused.status_code == 400 and code(refused) == "DIGEST_INVALID", malformed
        unsupported = http.get(f"/v2/lab/sbom/referrers/{digest_of(b'x', 'sha512')}")
        assert unsupported.status_code == 400 and code(unsupported) == "UNSUPPORTED"
        unknown = http.get(f"/v2/lab/elsewhere/referrers/{subject}")
        assert unknown.status_code == 404 and code(unknown) == "NAME_UNKNOWN"


def _image() -> TestData:
    data = TestData("subject")
    data.gen_manifest_full(tag="image", layer_count=1)
    return data


def _manifest(**fields: Any) -> bytes:
    empty = {"mediaType": MT_EMPTY_JSON, "digest": digest_of(b"{}"), "size": 2}
    return go_json({"schemaVersion": 2, "mediaType": MT_IMAGE, "config": empty, "layers": [], **fields})


BROKEN: dict[str, tuple[Blob, str]] = {
    "invalid JSON": (Blob(MT_IMAGE, b'{"schemaVersion": 2,'), "is not valid JSON"),
    "not an object": (Blob(MT_IMAGE, b"[]"), "not an object"),
    "media type differs": (Blob(MT_IMAGE, go_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []})),
                           "mediaType field says"),
    "index without manifests": (Blob(MT_INDEX, go_json({"schemaVersion": 2, "mediaType": MT_INDEX})),
                                "no manifests list"),
    "image without config": (Blob(MT_IMAGE, go_json({"schemaVersion": 2, "mediaType": MT_IMAGE, "layers": []})),
                             "no config"),
    "artifactType not a string": (Blob(MT_IMAGE, _manifest(artifactType=7)), "artifactType must be"),
    "sha512 subject": (Blob(MT_IMAGE, _manifest(subject={"mediaType": MT_IMAGE, "size": 1,
                                                         "digest": digest_of(b"s", "sha512")})), "sha256"),
    "subject not a descriptor": (Blob(MT_IMAGE, _manifest(subject=digest_of(b"s"))), "not a descriptor"),
    "over 4 MiB": (Blob(MT_IMAGE, _manifest(annotations={"big": "A" * (4 * 1024 * 1024)})),
                   "envyard serves manifests up to 4194304 bytes"),
}


def test_completion_refuses_manifests_it_cannot_serve(start: Any, database: str) -> None:
    """A manifest-typed artifact that is not the JSON its media type promises (or too big, or with a subject
    envyard cannot index) fails the completion with a 409 naming the artifact; nothing is published."""
    if database:
        pytest.skip("the checks read the store, not the database")
    service: Service = start("--workers", "0")
    image = _image()
    root, blobs = image.content()
    with service.client() as http:
        for case, (broken, message) in BROKEN.items():
            refused = complete_build(http, "lab", "broken", root, [*blobs, broken], relock=True)
            assert refused.status_code == 409, (case, refused.text)
            problem = refused.json()
            name = f"blobs/sha256/{broken.sha256()}"
            assert problem["type"].endswith("/conflict") and problem["field"] == name, case
            assert name in problem["detail"] and message in problem["detail"], (case, problem["detail"])
        root_refused = complete_build(http, "lab", "broken", Blob(MT_IMAGE, b"not json"), blobs, relock=True)
        assert root_refused.status_code == 409 and root_refused.json()["field"] == "image-manifest.json"
        assert http.get("/v2/lab/broken/tags/list").json()["tags"] == []
        builds = http.get("/api/v1/builds", params={"environment": "lab/broken"}).json()
        assert {b["status"] for b in builds["items"]} == {"failed"}
        # the same content without the broken manifest completes, and a valid referrer is listed
        referrer = Blob(MT_IMAGE, _manifest(artifactType="application/vnd.example.note",
                                            subject=image.desc[image.root], annotations={"note": "fine"}))
        expected = [{"mediaType": MT_IMAGE, "digest": digest_of(referrer.data or b""), "size": referrer.size,
                     "artifactType": "application/vnd.example.note", "annotations": {"note": "fine"}}]
        for _ in range(2):  # a referrer stored by two builds is listed once
            publish_build(http, "lab", "broken", root, [*blobs, referrer], relock=True)
            assert http.get(f"/v2/lab/broken/referrers/{image.root}").json()["manifests"] == expected


def test_blob_redirect_is_only_for_stores_with_presigned_urls(start: Any, database: str) -> None:
    """ENVYARD_REGISTRY_BLOB_REDIRECT on a local store: nothing to redirect to, blobs are streamed."""
    if database:
        pytest.skip("the database is irrelevant to blob serving")
    service: Service = start("--workers", "0", env={"ENVYARD_REGISTRY_BLOB_REDIRECT": "true"})
    image = _image()
    with service.client() as http:
        publish_build(http, "lab", "local", *image.content())
        for digest, body in image.blobs.items():
            response = http.get(f"/v2/lab/local/blobs/{digest}", follow_redirects=False)
            assert response.status_code == 200 and response.content == body


def test_blob_get_redirects_to_s3(start: Any, database: str, s3_endpoint: str, tmp_path: Path) -> None:
    """With the setting on an S3 store, blob GETs answer 307 to a presigned URL of the S3 endpoint (Range too),
    HEAD and manifests are answered directly, and skopeo copies the image through the redirects."""
    if database:
        pytest.skip("the database is irrelevant to blob serving")
    service: Service = start("--workers", "1", "--storage", f"s3://envyard-{time.monotonic_ns()}/artifacts",
                             env={**S3_ENV, "ENVYARD_S3_ENDPOINT_URL": s3_endpoint,
                                  "ENVYARD_REGISTRY_BLOB_REDIRECT": "true"})
    with service.client() as http:
        submitted = create_environment(http, "lab", "s3reg", ["e2e-env"])
    build = service.wait_for(submitted["id"])
    assert build["status"] == "completed", build
    with service.client() as http:
        layer = next(a for a in http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
                     if a["kind"] == "oci-blob" and "layer" in a["media_type"])
        url = f"/v2/lab/s3reg/blobs/{layer['digest']}"
        redirect = http.get(url, follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(s3_endpoint)
        assert redirect.headers["docker-content-digest"] == layer["digest"]
        fetched = httpx.get(redirect.headers["location"], timeout=60)
        assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == layer["digest"][7:]
        ranged = http.get(url, headers={"Range": "bytes=0-9"}, follow_redirects=False)
        assert ranged.status_code == 307
        part = httpx.get(ranged.headers["location"], headers={"Range": "bytes=0-9"}, timeout=60)
        assert part.status_code == 206 and part.content == fetched.content[:10]
        head = http.head(url, follow_redirects=False)
        assert head.status_code == 200 and head.headers["content-length"] == str(layer["size"])
        assert "location" not in head.headers
        manifest = http.get(f"/v2/lab/s3reg/manifests/{build['image_digest']}", follow_redirects=False)
        assert manifest.status_code == 200 and f"sha256:{hashlib.sha256(manifest.content).hexdigest()}" \
            == build["image_digest"]
        assert http.get(f"/v2/lab/s3reg/blobs/{digest_of(b'absent')}", follow_redirects=False).status_code == 404
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    host = service.url.removeprefix("http://")
    copied = skopeo("copy", "--src-tls-verify=false", "--src-creds", f"anyone:{service.token}",
                    f"docker://{host}/lab/s3reg:latest", f"oci:{tmp_path / 'layout'}:s3reg")
    assert copied.returncode == 0, copied.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == build["image_digest"]
    copied_layer = tmp_path / "layout" / "blobs" / "sha256" / layer["digest"][7:]
    assert hashlib.sha256(copied_layer.read_bytes()).hexdigest() == layer["digest"][7:]
