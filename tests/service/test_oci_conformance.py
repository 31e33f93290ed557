"""The distribution-spec conformance suite's pull and content discovery workflows, ported to pytest.

Two generations of the upstream suite (github.com/opencontainers/distribution-spec, ``conformance/``) are
followed request for request:

* v1.1.1 (``01_pull_test.go``, ``03_discovery_test.go``, content from ``setup.go``): the ``test_legacy_*`` tests;
* the current suite (``run.go``: TestPing, TestEmpty, TestHead, TestPull, TestList, TestReferrers,
  TestManifestErrors; content from ``testdata.go``): one data set per test parameter.

envyard accepts no pushes, so the content is preloaded the way the suite's read-only mode expects: each data
set is published as a completed build (tests/service/oci_content.py plays the worker). Tags are build ids, so
a data set's first tag is its build's id; the suite's other tag names cannot exist in envyard and the manifests
they name are checked by digest. Push-only data (bad digests, tag parameters) is left out; sha512 content cannot
be stored (the store is sha256-only) and every endpoint answers 400 UNSUPPORTED for sha512 digests.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, create_environment, start_service
from tests.service.oci_content import (
    LEGACY_ANNOTATION,
    LEGACY_LAYER,
    LEGACY_TYPE_A,
    MT_CONFIG,
    MT_EMPTY_JSON,
    MT_IMAGE,
    MT_INDEX,
    MT_LAYER_GZIP,
    Blob,
    LegacyData,
    TestData,
    conformance_data,
    digest_of,
    legacy_data,
    publish_build,
    sha512_data,
)

REPO = "conformance/repo1"
LEGACY = "conformance/legacy"
EMPTY = "conformance/empty"
DATA_SETS = ("image", "image-uncompressed", "large-manifest", "index", "nested-index", "empty-index", "artifact",
             "artifact-index", "artifact-without-layers", "artifacts-with-subject", "index-with-subject",
             "missing-subject", "data-field", "non-distributable-layers", "custom-fields", "no-layers",
             "blobs-sha256")
WITH_REFERRERS = ("artifacts-with-subject", "index-with-subject", "missing-subject")
WITH_ABSENT = ("missing-subject", "non-distributable-layers")
#: errorCodes of the v1.1.1 suite (setup.go)
ERROR_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
               "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED", "NAME_INVALID", "NAME_UNKNOWN",
               "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED"}
#: api.go ManifestGetReq / ManifestHeadReq send both
ACCEPT = {"Accept": f"{MT_INDEX}, {MT_IMAGE}"}
DUMMY_DIGEST = digest_of(b"hello world")  # setup.go dummyDigest


@dataclass
class Loaded:
    service: Service
    data: dict[str, TestData]
    builds: dict[str, int]  # data set -> build id (its tag)
    legacy: LegacyData
    legacy_pull: int  # the build tagged like setup.go's testTagName
    legacy_tags: list[int]  # the builds the discovery workflow tags test0..test3


def _legacy_content(legacy: LegacyData) -> tuple[list[Blob], list[Blob]]:
    pull = [Blob(MT_CONFIG, legacy.configs[0]), Blob(MT_CONFIG, legacy.configs[1]), Blob(MT_LAYER_GZIP, LEGACY_LAYER),
            Blob(MT_IMAGE, legacy.manifests[1])]
    refs = [Blob(MT_EMPTY_JSON, legacy.empty_json), Blob(LEGACY_TYPE_A, legacy.ref_blob_a),
            Blob(MT_IMAGE, legacy.refs["A-config"]), Blob(MT_IMAGE, legacy.refs["A-layer"]),
            Blob(MT_INDEX, legacy.refs["index"]), Blob(MT_CONFIG, legacy.configs[4]), Blob(MT_LAYER_GZIP, LEGACY_LAYER),
            Blob("application/vnd.nba.strawberry.jam.croissant", legacy.ref_blob_b),
            Blob(MT_IMAGE, legacy.refs["B-config"]), Blob(MT_IMAGE, legacy.refs["B-layer"]),
            Blob(MT_IMAGE, legacy.refs["C-layer"])]
    return pull, refs


def publish(http: httpx.Client, repository: str, root: Blob, blobs: list[Blob]) -> int:
    """A new completed build of ``repository`` holding ``root`` (its image) and ``blobs``; its id."""
    namespace, name = repository.split("/")
    return int(publish_build(http, namespace, name, root, blobs, relock=True)["id"])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Loaded]:
    """One server, no worker: every data set a build of conformance/repo1, the v1.1.1 content in
    conformance/legacy, and conformance/empty with no completed build."""
    service = start_service(tmp_path_factory.mktemp("conformance"), service_env, "--workers", "0")
    try:
        data = conformance_data()
        legacy = legacy_data()
        with service.client() as http:
            builds = {name: publish(http, REPO, *data[name].content()) for name in DATA_SETS}
            pull, refs = _legacy_content(legacy)
            legacy_pull = publish(http, LEGACY, Blob(MT_IMAGE, legacy.manifests[0]), pull)
            tagged = [publish(http, LEGACY, Blob(MT_IMAGE, legacy.manifests[2]),
                              [Blob(MT_CONFIG, legacy.configs[2]), Blob(MT_LAYER_GZIP, LEGACY_LAYER)])
                      for _ in range(4)]
            publish(http, LEGACY, Blob(MT_IMAGE, legacy.manifests[4]), refs)
            namespace, name = EMPTY.split("/")
            create_environment(http, namespace, name, ["e2e-env"])  # queued, never built
        yield Loaded(service, data, builds, legacy, legacy_pull, tagged)
    finally:
        service.stop()


@pytest.fixture
def http(loaded: Loaded) -> Iterator[httpx.Client]:
    with loaded.service.client() as client:
        yield client


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def media_type_of(body: bytes) -> str:
    """api.go detectMediaType: the manifest's mediaType field, image manifest when it has none."""
    try:
        value = json.loads(body)
    except ValueError:
        return MT_IMAGE
    return str(value.get("mediaType") or MT_IMAGE) if isinstance(value, dict) else MT_IMAGE


# --- api.go: the checks every data set goes through ------------------------------------------------------------


def manifest_get_exists(http: httpx.Client, repo: str, reference: str, digest: str, body: bytes) -> None:
    """ManifestGetExists: 200, the exact bytes, Content-Type and Content-Length of them, Docker-Content-Digest."""
    response = http.get(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["content-type"] == media_type_of(body)
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["docker-content-digest"] == digest


def manifest_head_exists(http: httpx.Client, repo: str, reference: str, digest: str, body: bytes) -> None:
    """ManifestHeadExists: 200, no body, Content-Type, Content-Length, Docker-Content-Digest."""
    response = http.head(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == media_type_of(body)
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["docker-content-digest"] == digest


def blob_get_exists(http: httpx.Client, repo: str, digest: str, body: bytes) -> None:
    """BlobGetExistsFull: 200, the bytes, Content-Length, Docker-Content-Digest."""
    response = http.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["docker-content-digest"] == digest


def blob_head_exists(http: httpx.Client, repo: str, digest: str, body: bytes) -> None:
    """BlobHeadExists: 200, no body, Content-Length, Docker-Content-Digest."""
    response = http.head(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["docker-content-digest"] == digest


def referrers_list(http: httpx.Client, repo: str, subject: str, **params: str) -> tuple[dict[str, Any], httpx.Response]:
    """ReferrersList: 200, Content-Type of an index, an OCI index (mediaType and schemaVersion 2)."""
    response = http.get(f"/v2/{repo}/referrers/{subject}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MT_INDEX
    index = response.json()
    assert index["mediaType"] == MT_INDEX and index["schemaVersion"] == 2
    return index, response


def tag_list(http: httpx.Client, repo: str, **params: Any) -> httpx.Response:
    response = http.get(f"/v2/{repo}/tags/list", params=params)
    assert response.status_code == 200, response.text
    return response


def matches(found: dict[str, Any], goal: dict[str, Any]) -> bool:
    """run.go TestReferrers: digest, mediaType, size and artifactType equal; every goal annotation present."""
    return (all(found.get(k) == goal.get(k) for k in ("digest", "mediaType", "size", "artifactType"))
            and all(found.get("annotations", {}).get(k) == v for k, v in goal.get("annotations", {}).items()))


# --- the current suite (run.go) ----------------------------------------------------------------------------------


def test_ping(http: httpx.Client) -> None:
    assert http.get("/v2/").status_code == 200


def test_empty_repository(http: httpx.Client) -> None:
    """TestEmpty: the tag list of a repository without content, and referrers of a random subject."""
    listed = http.get(f"/v2/{EMPTY}/tags/list")
    assert listed.status_code in (200, 404)
    assert listed.json() == {"name": EMPTY, "tags": []}
    for repo in (EMPTY, REPO):
        index, _ = referrers_list(http, repo, digest_of(secrets.token_bytes(16)))
        assert index["manifests"] == []


@pytest.mark.parametrize("name", DATA_SETS)
def test_head(loaded: Loaded, http: httpx.Client, name: str) -> None:
    """TestHead: HEAD of the manifest by tag, of every manifest by digest, of every blob."""
    data = loaded.data[name]
    manifest_head_exists(http, REPO, str(loaded.builds[name]), data.root, data.manifests[data.root])
    for digest in data.order:
        manifest_head_exists(http, REPO, digest, digest, data.manifests[digest])
    for digest, body in data.blobs.items():
        blob_head_exists(http, REPO, digest, body)


@pytest.mark.parametrize("name", DATA_SETS)
def test_pull(loaded: Loaded, http: httpx.Client, name: str) -> None:
    """TestPull: GET of the manifest by tag, of every manifest by digest, of every blob."""
    data = loaded.data[name]
    manifest_get_exists(http, REPO, str(loaded.builds[name]), data.root, data.manifests[data.root])
    for digest in data.order:
        manifest_get_exists(http, REPO, digest, digest, data.manifests[digest])
    for digest, body in data.blobs.items():
        blob_get_exists(http, REPO, digest, body)


def test_latest_is_the_last_build(loaded: Loaded, http: httpx.Client) -> None:
    data = loaded.data[DATA_SETS[-1]]
    manifest_get_exists(http, REPO, "latest", data.root, data.manifests[data.root])
    manifest_head_exists(http, REPO, "latest", data.root, data.manifests[data.root])


def test_tag_list(loaded: Loaded, http: httpx.Client) -> None:
    """TestList: every data set's tag is listed; with last set to the middle tag only the later ones come back."""
    tags = tag_list(http, REPO).json()["tags"]
    assert {str(b) for b in loaded.builds.values()} | {"latest"} == set(tags)
    ordered = sorted(tags)
    assert tags == ordered  # ASCIIbetical, as Go's sort.Strings
    end = len(ordered) // 2
    partial = tag_list(http, REPO, last=ordered[end - 1]).json()["tags"]
    assert not set(ordered[:end]) & set(partial)
    assert set(ordered[end:]) <= set(partial)


@pytest.mark.parametrize("name", WITH_REFERRERS)
def test_referrers(loaded: Loaded, http: httpx.Client, name: str) -> None:
    """TestReferrers: each expected descriptor in the list; filtered by each artifactType, OCI-Filters-Applied
    names the filter, the expected descriptors of that type are there and nothing of another type."""
    data = loaded.data[name]
    assert data.referrers
    for subject, goals in data.referrers.items():
        index, _ = referrers_list(http, REPO, subject)
        for goal in goals:
            assert any(matches(found, goal) for found in index["manifests"]), (goal, index)
        assert len(index["manifests"]) == len(goals)
        for artifact_type in {str(g["artifactType"]) for g in goals if g.get("artifactType")}:
            filtered, response = referrers_list(http, REPO, subject, artifactType=artifact_type)
            assert "artifactType" in [f.strip() for f in response.headers["oci-filters-applied"].split(",")]
            for goal in goals:
                if goal.get("artifactType") == artifact_type:
                    assert any(matches(found, goal) for found in filtered["manifests"]), (goal, filtered)
            assert all(found.get("artifactType") == artifact_type for found in filtered["manifests"])


@pytest.mark.parametrize("name", WITH_ABSENT)
def test_content_that_was_not_stored(loaded: Loaded, http: httpx.Client, name: str) -> None:
    """Non-distributable layers and a missing subject are referenced but not stored: 404 with the OCI codes."""
    for digest in loaded.data[name].absent:
        blob = http.get(f"/v2/{REPO}/blobs/{digest}")
        assert blob.status_code == 404 and code(blob) == "BLOB_UNKNOWN"
        assert http.head(f"/v2/{REPO}/blobs/{digest}").status_code == 404
        manifest = http.get(f"/v2/{REPO}/manifests/{digest}", headers=ACCEPT)
        assert manifest.status_code == 404 and code(manifest) == "MANIFEST_UNKNOWN"


def test_manifest_errors(http: httpx.Client) -> None:
    """TestManifestErrors: a missing manifest by digest and by tag is 404; the digest "sha256:baddigeststring"
    may be 404 or 400 (envyard: 400 DIGEST_INVALID)."""
    missing = http.get(f"/v2/{REPO}/manifests/{digest_of(secrets.token_bytes(1024))}", headers=ACCEPT)
    assert missing.status_code == 404 and code(missing) == "MANIFEST_UNKNOWN"
    by_tag = http.get(f"/v2/{REPO}/manifests/missing-{secrets.token_hex(10)}", headers=ACCEPT)
    assert by_tag.status_code == 404 and code(by_tag) == "MANIFEST_UNKNOWN"
    bad = http.get(f"/v2/{REPO}/manifests/sha256:baddigeststring", headers=ACCEPT)
    assert bad.status_code == 400 and code(bad) == "DIGEST_INVALID"


def test_blob_get_missing(http: httpx.Client) -> None:
    """TestBlobAPIs get-missing: a blob that was never pushed is 404 (BLOB_UNKNOWN)."""
    response = http.get(f"/v2/{REPO}/blobs/{digest_of(secrets.token_bytes(512))}")
    assert response.status_code == 404 and code(response) == "BLOB_UNKNOWN"


def test_sha512_content_is_unsupported(loaded: Loaded, http: httpx.Client) -> None:
    """The suite's sha512 data set cannot be stored (envyard's store and uploads are sha256-only): every
    endpoint answers its digests with 400 UNSUPPORTED, and a malformed sha512 digest with 400 DIGEST_INVALID."""
    data = sha512_data()
    for digest in data.order:
        for response in (http.get(f"/v2/{REPO}/manifests/{digest}", headers=ACCEPT),
                         http.get(f"/v2/{REPO}/referrers/{digest}")):
            assert response.status_code == 400 and code(response) == "UNSUPPORTED", response.text
        assert http.head(f"/v2/{REPO}/manifests/{digest}").status_code == 400
    for digest in data.blobs:
        response = http.get(f"/v2/{REPO}/blobs/{digest}")
        assert response.status_code == 400 and code(response) == "UNSUPPORTED"
        assert "sha256" in response.json()["errors"][0]["message"]
    short = http.get(f"/v2/{REPO}/blobs/sha512:{'a' * 64}")
    assert short.status_code == 400 and code(short) == "DIGEST_INVALID"


def test_unknown_repository(http: httpx.Client) -> None:
    for path in ("manifests/latest", f"blobs/{DUMMY_DIGEST}", "tags/list", f"referrers/{DUMMY_DIGEST}"):
        response = http.get(f"/v2/conformance/nowhere/{path}")
        assert response.status_code == 404 and code(response) == "NAME_UNKNOWN", path


def test_content_of_other_repositories_is_not_served(loaded: Loaded, http: httpx.Client) -> None:
    legacy = loaded.legacy
    blob = http.get(f"/v2/{REPO}/blobs/{digest_of(legacy.configs[0])}")
    assert blob.status_code == 404 and code(blob) == "BLOB_UNKNOWN"
    manifest = http.get(f"/v2/{REPO}/manifests/{digest_of(legacy.manifests[0])}", headers=ACCEPT)
    assert manifest.status_code == 404 and code(manifest) == "MANIFEST_UNKNOWN"
    index, _ = referrers_list(http, REPO, digest_of(legacy.manifests[4]))
    assert index["manifests"] == []
    other = http.get(f"/v2/{LEGACY}/manifests/{loaded.builds['image']}", headers=ACCEPT)
    assert other.status_code == 404 and code(other) == "MANIFEST_UNKNOWN"


# --- blob ranges (the spec's SHOULD, RFC 9110 section 14) and tag pagination details --------------------------


def test_blob_ranges(loaded: Loaded, http: httpx.Client) -> None:
    data = loaded.data["image"]
    digest, body = next((d, b) for d, b in data.blobs.items() if data.desc[d]["mediaType"] == MT_LAYER_GZIP)
    size = len(body)
    for header, start, end in (("bytes=10-19", 10, 19), ("bytes=5-", 5, size - 1), ("bytes=-7", size - 7, size - 1),
                               (f"bytes=0-{size + 100}", 0, size - 1), (f"bytes=-{size + 5}", 0, size - 1)):
        part = http.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == body[start:end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert part.headers["content-length"] == str(end - start + 1)
        head = http.head(f"/v2/{REPO}/blobs/{digest}", headers={"Range": header})
        assert head.status_code == 206 and head.headers["content-range"] == part.headers["content-range"]
    for header in (f"bytes={size}-", "bytes=9-3", "bytes=-0", "bytes=x-"):
        refused = http.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": header})
        assert refused.status_code == 416 and code(refused) == "RANGE_INVALID", header
        assert refused.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=0-1,4-5", "lines=1-2"):  # several ranges, another unit: ignored, the whole blob
        whole = http.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": header})
        assert whole.status_code == 200 and whole.content == body, header
    empty = digest_of(b"")
    blob_get_exists(http, REPO, empty, b"")
    blob_head_exists(http, REPO, empty, b"")
    for header in ("bytes=0-", "bytes=-1"):
        refused = http.get(f"/v2/{REPO}/blobs/{empty}", headers={"Range": header})
        assert refused.status_code == 416 and refused.headers["content-range"] == "bytes */0", header


def test_tag_pagination(http: httpx.Client) -> None:
    """n=0 is an empty list without Link; following Link page by page gives the whole list in order."""
    everything = tag_list(http, REPO).json()["tags"]
    zero = tag_list(http, REPO, n=0)
    assert zero.json()["tags"] == [] and "link" not in zero.headers
    pages, url = [], f"/v2/{REPO}/tags/list?n=5"
    while url:
        response = http.get(url)
        assert response.status_code == 200
        pages += response.json()["tags"]
        assert len(response.json()["tags"]) <= 5
        link = response.headers.get("link")
        url = link[1:link.index(">")] if link else ""
        assert not link or link.endswith('rel="next"')
    assert pages == everything


# --- the v1.1.1 suite: 01_pull_test.go -----------------------------------------------------------------------


def test_legacy_pull_blobs(loaded: Loaded, http: httpx.Client) -> None:
    config = loaded.legacy.configs[0]
    assert http.head(f"/v2/{LEGACY}/blobs/{DUMMY_DIGEST}").status_code == 404
    head = http.head(f"/v2/{LEGACY}/blobs/{digest_of(config)}")
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest_of(config)
    assert http.get(f"/v2/{LEGACY}/blobs/{DUMMY_DIGEST}").status_code == 404
    got = http.get(f"/v2/{LEGACY}/blobs/{digest_of(config)}")
    assert got.status_code == 200 and got.content == config


def test_legacy_pull_manifests(loaded: Loaded, http: httpx.Client) -> None:
    accept = {"Accept": MT_IMAGE}
    manifests, tag = loaded.legacy.manifests, str(loaded.legacy_pull)
    for method in ("HEAD", "GET"):
        assert http.request(method, f"/v2/{LEGACY}/manifests/.INVALID_MANIFEST_NAME").status_code == 404
        for reference, manifest in ((digest_of(manifests[0]), manifests[0]), (digest_of(manifests[1]), manifests[1]),
                                    (tag, manifests[0])):
            response = http.request(method, f"/v2/{LEGACY}/manifests/{reference}", headers=accept)
            assert response.status_code == 200
            assert response.headers["docker-content-digest"] == digest_of(manifest)
            assert response.content == (manifest if method == "GET" else b"")


def test_legacy_error_codes(http: httpx.Client) -> None:
    """'400 response body should contain OCI-conforming JSON message' (a 404 is allowed too)."""
    response = http.request("GET", f"/v2/{LEGACY}/manifests/sha256:totallywrong", content=b"blablabla",
                            headers={"Content-Type": MT_IMAGE})
    assert response.status_code in (400, 404)
    assert response.status_code == 400 and code(response) in ERROR_CODES


# --- the v1.1.1 suite: 03_discovery_test.go -------------------------------------------------------------------


def test_legacy_tag_listing(loaded: Loaded, http: httpx.Client) -> None:
    tags = tag_list(http, LEGACY).json()["tags"]
    assert {str(t) for t in loaded.legacy_tags} <= set(tags)
    count = len(tags) // 2
    first = tag_list(http, LEGACY, n=count).json()["tags"]
    assert len(first) == count
    second = tag_list(http, LEGACY, n=count, last=first[count - 1]).json()["tags"]
    assert len(second) <= count and not set(first) & set(second)
    assert first + second == tags[:len(first) + len(second)]


def test_legacy_referrers(loaded: Loaded, http: httpx.Client) -> None:
    legacy = loaded.legacy
    index, _ = referrers_list(http, LEGACY, DUMMY_DIGEST)
    assert index["manifests"] == []
    index, _ = referrers_list(http, LEGACY, digest_of(legacy.manifests[4]))
    assert len(index["manifests"]) == 5
    assert index["manifests"][0]["digest"] != index["manifests"][1]["digest"]
    for found in index["manifests"]:
        assert found["annotations"] == {LEGACY_ANNOTATION: legacy.annotations[found["digest"]]}
    filtered, response = referrers_list(http, LEGACY, digest_of(legacy.manifests[4]), artifactType=LEGACY_TYPE_A)
    assert response.headers["oci-filters-applied"] == "artifactType"
    assert len(filtered["manifests"]) == 2
    for found in filtered["manifests"]:
        assert found["annotations"] == {LEGACY_ANNOTATION: legacy.annotations[found["digest"]]}
    missing, _ = referrers_list(http, LEGACY, digest_of(legacy.manifests[3]))
    assert [m["digest"] for m in missing["manifests"]] == [digest_of(legacy.refs["C-layer"])]

