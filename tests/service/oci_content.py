"""Put arbitrary OCI content into envyard as a completed build, through the worker protocol a real worker uses.

envyard accepts no pushes: its repositories hold what builds produced. The conformance workflows and the
registry benchmark need content a conda build would not make (nested indexes, artifacts with a subject,
empty blobs, a 500 MB image), so a test plays the worker: it claims the queued build, uploads the blobs
over HTTP and completes the build with one artifact per blob.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
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


def complete_build(http: httpx.Client, namespace: str, environment: str, root: Blob, blobs: list[Blob],
                   *, deps: tuple[str, ...] = ("e2e-env",), relock: bool = False) -> httpx.Response:
    """Queue a build of ``namespace/environment``, claim it, upload ``root`` and ``blobs`` and complete it with
    ``root`` as the image; the completion's response. A refused completion fails the build, so that no leased
    build is left for the reaper to requeue. ``relock`` queues a new build even when the environment has one
    of the same spec (to put several builds in one repository)."""
    submitted = create_environment(http, namespace, environment, list(deps), relock=relock)
    claimed = http.post("/api/v1/jobs/claim", json={"worker": "oci-content", "wait_seconds": 5})
    assert claimed.status_code == 200, claimed.text
    job = claimed.json()
    assert job["build_id"] == submitted["id"], "another queued build was claimed; run without workers"
    lease = job["lease_id"]
    artifacts: list[dict[str, Any]] = []
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
    if done.status_code != 200:
        failed = http.post(f"/api/v1/jobs/{job['build_id']}/fail",
                           json={"lease_id": lease, "code": "refused", "message": "completion refused"})
        assert failed.status_code == 200, failed.text
    return done


def publish_build(http: httpx.Client, namespace: str, environment: str, root: Blob, blobs: list[Blob],
                  *, deps: tuple[str, ...] = ("e2e-env",), relock: bool = False) -> dict[str, Any]:
    """A completed build of ``namespace/environment`` whose image root is ``root`` and whose other content is
    ``blobs`` (configs, layers, child manifests, referrers). No worker may be running against the server:
    this client claims the build itself. Returns the build as the API shows it."""
    done = complete_build(http, namespace, environment, root, blobs, deps=deps, relock=relock)
    assert done.status_code == 200, done.text
    return dict(done.json())


# --- the data sets of the distribution-spec conformance suite (conformance/testdata.go, ported) ---------------

MT_EXAMPLE_1 = "application/vnd.example.oci.conformance.v1"
MT_EXAMPLE_2 = "application/vnd.example.oci.conformance.v2"
MT_OCTET_STREAM = "application/octet-stream"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_IMAGE = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_PREFIX = "application/vnd.oci.image.layer.v1."
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MT_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MT_EMPTY_JSON = "application/vnd.oci.empty.v1+json"
AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux"}


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def random_text() -> str:
    """Like Go's crypto/rand.Text: 26 random base32 characters."""
    return base64.b32encode(secrets.token_bytes(20)).decode()[:26]


def go_json(value: Any) -> bytes:
    """Compact JSON in the field order given, as Go's encoding/json writes structs."""
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class TestData:
    """One conformance data set: its blobs and manifests by digest, manifests in push order, the descriptor of
    every digest, the tags the suite would push, the referrers it expects per subject, and descriptors that are
    referenced but deliberately not stored (non-distributable layers, a missing subject)."""

    __test__ = False  # not a pytest class
    name: str
    algorithm: str = "sha256"
    tags: dict[str, str] = field(default_factory=dict)
    desc: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        """The manifest the first tag names: what envyard serves as the build's image (its build id tag)."""
        return next(iter(self.tags.values()))

    def _descriptor(self, media_type: str, data: bytes, set_data: bool) -> str:
        digest = digest_of(data, self.algorithm)
        self.desc[digest] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if set_data:
            self.desc[digest]["data"] = base64.b64encode(data).decode()
        return digest

    def add_blob(self, data: bytes, media_type: str = MT_OCTET_STREAM, set_data: bool = False) -> str:
        digest = self._descriptor(media_type, data, set_data)
        self.blobs[digest] = data
        return digest

    def gen_blob(self, size: int = 2048, **options: Any) -> str:
        return self.add_blob(secrets.token_bytes(size), **options)

    def gen_layer(self, number: int, compress: bool = True, set_data: bool = False) -> tuple[str, str]:
        """A tar layer holding one file (gzip-compressed unless ``compress`` is false): (digest, diff id)."""
        text = (f"Conformance test file contents for file number {number}.\n"
                f"Todays lucky number is {secrets.randbelow(2**63)}\n").encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(f"./conformance-{number}.txt")
            info.size, info.mode = len(text), 0o644
            archive.addfile(info, io.BytesIO(text))
        tar = buffer.getvalue()
        body = gzip.compress(tar, mtime=0) if compress else tar
        digest = self.add_blob(body, MT_LAYER_GZIP if compress else MT_LAYER, set_data)
        return digest, digest_of(tar, self.algorithm)

    def gen_config(self, platform: dict[str, str], diff_ids: list[str], media_type: str = MT_CONFIG,
                   extra_field: bool = False, set_data: bool = False) -> str:
        config: dict[str, Any] = {"author": "OCI Conformance Test", **platform, "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        if extra_field:
            config[f"org.{random_text()}"] = random_text()
        return self.add_blob(go_json(config), media_type, set_data)

    def _manifest(self, value: dict[str, Any], media_type: str, subject: dict[str, Any] | None,
                  annotations: dict[str, str] | None, annotation_uniq: bool, extra_field: bool, tag: str | None,
                  set_data: bool, artifact_type: str | None) -> str:
        if subject is not None:
            value["subject"] = subject
        annotations = dict(annotations or {})
        if annotation_uniq:
            annotations[f"org.example.{random_text()}"] = random_text()
        if annotations:
            value["annotations"] = annotations
        if extra_field:
            value[f"org.{random_text()}"] = random_text()
        body = go_json(value)
        digest = self._descriptor(media_type, body, set_data)
        self.manifests[digest] = body
        self.order.append(digest)
        if subject is not None:
            referrer: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
            if artifact_type:
                referrer["artifactType"] = artifact_type
            if annotations:
                referrer["annotations"] = annotations
            self.referrers.setdefault(subject["digest"], []).append(referrer)
        if tag is not None:
            self.tags[tag] = digest
        return digest

    def gen_manifest(self, config: dict[str, Any], layers: list[dict[str, Any]], *, artifact_type: str | None = None,
                     subject: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
                     annotation_uniq: bool = False, extra_field: bool = False, tag: str | None = None,
                     set_data: bool = False, **_: Any) -> str:
        value: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_IMAGE}
        if artifact_type:
            value["artifactType"] = artifact_type
        value.update(config=config, layers=layers)
        return self._manifest(value, MT_IMAGE, subject, annotations, annotation_uniq, extra_field, tag, set_data,
                              artifact_type or config["mediaType"])

    def gen_manifest_full(self, *, layer_count: int = 2, platform: dict[str, str] = AMD64,
                          layer_media_type: str | None = None, layer_bytes: bytes | None = None,
                          config_media_type: str | None = None, config_bytes: bytes = b"",
                          compress: bool = True, extra_field: bool = False, set_data: bool = False,
                          **options: Any) -> str:
        """An image (or, with a non-layer media type, an artifact) with its layers and config."""
        layers, diff_ids = [], []
        for number in range(layer_count):
            if layer_media_type is None or layer_media_type.startswith(MT_LAYER_PREFIX):
                digest, diff_id = self.gen_layer(number, compress, set_data)
            elif layer_bytes is not None:
                digest = diff_id = self.add_blob(layer_bytes, layer_media_type, set_data)
            else:
                digest = diff_id = self.gen_blob(media_type=layer_media_type, set_data=set_data)
            layers.append(self.desc[digest])
            diff_ids.append(diff_id)
        if config_media_type is None or config_media_type == MT_CONFIG:
            config = self.gen_config(platform, diff_ids, extra_field=extra_field, set_data=set_data)
        else:
            config = self.add_blob(config_bytes, config_media_type, set_data)
        return self.gen_manifest(self.desc[config], layers, extra_field=extra_field, set_data=set_data, **options)

    def gen_index(self, platforms: list[dict[str, str] | None], manifests: list[str], *,
                  artifact_type: str | None = None, subject: dict[str, Any] | None = None,
                  annotations: dict[str, str] | None = None, annotation_uniq: bool = False,
                  extra_field: bool = False, tag: str | None = None, set_data: bool = False, **_: Any) -> str:
        value: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_INDEX}
        if artifact_type:
            value["artifactType"] = artifact_type
        value["manifests"] = [{**self.desc[m], **({"platform": p} if p else {})}
                              for m, p in zip(manifests, platforms, strict=True)]
        return self._manifest(value, MT_INDEX, subject, annotations, annotation_uniq, extra_field, tag, set_data,
                              artifact_type)

    def gen_index_full(self, *, platforms: tuple[dict[str, str], ...] = (AMD64, ARM64), **options: Any) -> str:
        """An index of one image per platform; like the Go suite, every option applies to the images too."""
        images = [self.gen_manifest_full(**{**options, "platform": p}) for p in platforms]
        return self.gen_index(list(platforms), images, **options)

    def content(self) -> tuple[Blob, list[Blob]]:
        """The root manifest and everything else stored, as publish_build takes them."""
        root = Blob(self.desc[self.root]["mediaType"], self.manifests[self.root])
        others = [Blob(self.desc[d]["mediaType"], self.manifests[d]) for d in self.order if d != self.root]
        return root, others + [Blob(self.desc[d]["mediaType"], data) for d, data in self.blobs.items()]


def conformance_data() -> dict[str, TestData]:
    """The data sets of the newer conformance suite (run.go GenerateData) that a read-only registry can hold:
    every push-only set (bad digests, tag parameters) and the sha512 sets are left out."""
    sets: dict[str, TestData] = {}

    def new(name: str) -> TestData:
        sets[name] = TestData(name)
        return sets[name]

    artifact: dict[str, Any] = {"artifact_type": MT_EXAMPLE_1, "config_media_type": MT_EMPTY_JSON,
                                "config_bytes": b"{}", "layer_count": 1, "layer_media_type": MT_EXAMPLE_1}
    hello = {"org.opencontainers.conformance": "hello conformance test"}
    new("image").gen_manifest_full(tag="image")
    new("image-uncompressed").gen_manifest_full(tag="image-uncompressed", compress=False)
    new("large-manifest").gen_manifest_full(
        tag="large-manifest", annotations={f"large-annotation-{i}": "A" * 10000 for i in range(390)})
    new("index").gen_index_full(tag="index")
    nested = new("nested-index")
    inner = [nested.gen_index_full(), nested.gen_index_full()]
    nested.gen_index([None, None], inner, tag="index-of-index")
    new("empty-index").gen_index_full(tag="index", platforms=())
    new("artifact").gen_manifest_full(tag="artifact", **artifact)
    new("artifact-index").gen_index_full(tag="artifact-index", **artifact)
    new("artifact-without-layers").gen_manifest_full(
        tag="artifact-without-layers", **{**artifact, "layer_bytes": b"{}", "layer_media_type": MT_EMPTY_JSON})
    subject = new("artifacts-with-subject")
    image = subject.desc[subject.gen_manifest_full(tag="image")]
    subject.gen_manifest_full(subject=image)
    subject.gen_manifest_full(**artifact, annotations=hello, annotation_uniq=True, subject=image,
                              tag="tagged-artifact1")
    subject.gen_manifest_full(**{**artifact, "artifact_type": MT_EXAMPLE_2, "layer_media_type": MT_OCTET_STREAM},
                              annotations=hello, annotation_uniq=True, subject=image, tag="tagged-artifact2")
    index_subject = new("index-with-subject")
    index = index_subject.desc[index_subject.gen_index_full(tag="index")]
    index_subject.gen_index_full(**artifact, annotations=hello, annotation_uniq=True, subject=index,
                                 tag="tagged-artifact")
    missing = new("missing-subject")
    absent: dict[str, Any] = {"mediaType": MT_IMAGE, "size": 123, "digest": digest_of(b"missing content")}
    missing.gen_manifest_full(**artifact, annotations=hello, annotation_uniq=True, subject=absent,
                              tag="tagged-artifact")
    missing.absent.append(absent["digest"])
    new("data-field").gen_manifest_full(tag="data-field", set_data=True)
    nondistributable = new("non-distributable-layers")
    layers: list[dict[str, Any]] = []
    diff_ids = [digest_of(secrets.token_bytes(256))]
    for media_type, size in ((MT_LAYER_ND_GZIP, 123456), (MT_LAYER_ND, 12345)):
        digest = digest_of(secrets.token_bytes(256))
        layers.append({"mediaType": media_type, "digest": digest, "size": size,
                       "urls": [f"https://store.example.com/blobs/sha256/{digest[7:]}"]})
        nondistributable.absent.append(digest)
    diff_ids.append(layers[1]["digest"])
    digest, diff_id = nondistributable.gen_layer(1)
    layers.append(nondistributable.desc[digest])
    diff_ids.append(diff_id)
    config = nondistributable.gen_config(AMD64, diff_ids)
    nondistributable.gen_manifest(nondistributable.desc[config], layers, tag="non-distributable-image")
    new("custom-fields").gen_index_full(tag="custom-fields", extra_field=True)
    new("no-layers").gen_manifest_full(tag="no-layers", layer_count=0)
    blobs = new("blobs-sha256")  # the well-known blobs of the blob API tests: empty and the empty JSON object
    well_known = [blobs.add_blob(b""), blobs.add_blob(b"{}", MT_EMPTY_JSON), blobs.gen_blob(512)]
    empty_config = blobs.add_blob(b"{}", MT_EMPTY_JSON)
    blobs.gen_manifest(blobs.desc[empty_config], [blobs.desc[d] for d in well_known], artifact_type=MT_EXAMPLE_1,
                       tag="blobs")
    return sets


def sha512_data() -> TestData:
    """The suite's sha512 data set (an index of two images, every digest sha512): envyard cannot store it."""
    data = TestData("sha512", algorithm="sha512")
    data.gen_index_full(tag="sha512")
    return data


# --- the content of the v1.1.1 suite's pull and content discovery workflows (conformance/setup.go, ported) -----

#: setup.go's layerBase64String: a tar.gz of test.txt ("you bothered to find out what was in here. Congratulations!")
LEGACY_LAYER = base64.b64decode(
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA")
LEGACY_ANNOTATION = "org.opencontainers.conformance.test"
LEGACY_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
LEGACY_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
LEGACY_TYPE_INDEX = "application/vnd.food.stand"


def _indented(value: Any) -> bytes:
    """json.MarshalIndent(value, "", "\\t")."""
    return json.dumps(value, indent="\t").encode()


def _legacy_descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """setup.go's descriptor type: ``newUnspecifiedField`` has no omitempty, so it is null unless set."""
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), "newUnspecifiedField": None}


@dataclass
class LegacyData:
    """configs[0..4], the layer, manifests[0..4] and the referrers of manifests[4] (and of the never pushed
    manifests[3]) exactly as the v1.1.1 suite makes them, with the annotation it expects per referrer digest."""

    configs: list[bytes]
    manifests: list[bytes]
    empty_json: bytes
    ref_blob_a: bytes
    ref_blob_b: bytes
    refs: dict[str, bytes]  # A-config, A-layer, B-config, B-layer, C-layer, index -> manifest bytes
    annotations: dict[str, str]  # referrer digest -> value of LEGACY_ANNOTATION

    def digest(self, data: bytes) -> str:
        return digest_of(data)


def legacy_data() -> LegacyData:
    configs, manifests = [], []
    layer = _legacy_descriptor(MT_LAYER_GZIP, LEGACY_LAYER)
    for _ in range(5):
        author = "".join(secrets.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
                         for _ in range(16))
        config = _indented({"author": author, "architecture": "amd64", "os": "linux",
                            "rootfs": {"type": "layers", "diff_ids": []}})
        configs.append(config)
        manifests.append(_indented({
            "schemaVersion": 2, "mediaType": MT_IMAGE,
            "config": {"mediaType": MT_CONFIG, "digest": digest_of(config), "size": len(config),
                       "data": base64.b64encode(config).decode(),
                       "newUnspecifiedField": base64.b64encode(b"hello world").decode()},
            "layers": [layer]}))
    empty_json, blob_a, blob_b = b"{}", b"NHL Peanut Butter on my NHL bagel", b"NBA Strawberry Jam on my NBA croissant"
    empty = _legacy_descriptor(MT_EMPTY_JSON, empty_json)

    def referrer(subject: bytes, config: dict[str, Any], layers: list[dict[str, Any]], note: str | None,
                 artifact_type: str | None = None) -> bytes:
        value: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_IMAGE}
        if artifact_type:
            value["artifactType"] = artifact_type
        value.update(config=config, layers=layers, subject=_legacy_descriptor(MT_IMAGE, subject))
        if note:
            value["annotations"] = {LEGACY_ANNOTATION: note}
        return _indented(value)

    refs = {
        "A-config": referrer(manifests[4], _legacy_descriptor(LEGACY_TYPE_A, blob_a), [empty], "test config a"),
        "B-config": referrer(manifests[4], _legacy_descriptor(LEGACY_TYPE_B, blob_b), [empty], "test config b"),
        "A-layer": referrer(manifests[4], empty, [_legacy_descriptor(LEGACY_TYPE_A, blob_a)], "test layer a",
                            LEGACY_TYPE_A),
        "B-layer": referrer(manifests[4], empty, [_legacy_descriptor(LEGACY_TYPE_B, blob_b)], "test layer b",
                            LEGACY_TYPE_B),
        "C-layer": referrer(manifests[3], empty, [_legacy_descriptor(LEGACY_TYPE_B, blob_b)], None, LEGACY_TYPE_B),
    }
    refs["index"] = _indented({
        "schemaVersion": 2, "mediaType": MT_INDEX, "artifactType": LEGACY_TYPE_INDEX,
        "manifests": [_legacy_descriptor(MT_IMAGE, refs["A-config"]), _legacy_descriptor(MT_IMAGE, refs["A-layer"])],
        "subject": _legacy_descriptor(MT_IMAGE, manifests[4]), "annotations": {LEGACY_ANNOTATION: "test index"}})
    annotations = {digest_of(refs[k]): v for k, v in (("A-config", "test config a"), ("B-config", "test config b"),
                                                       ("A-layer", "test layer a"), ("B-layer", "test layer b"),
                                                       ("index", "test index"))}
    return LegacyData(configs, manifests, empty_json, blob_a, blob_b, refs, annotations)


def publish_two_namespaces(http: httpx.Client) -> list[dict[str, Any]]:
    """The world of the authorization tests: builds 1 and 2 in ``victim/env``, 3 in ``mine/env``, each a completed
    build with a one-layer image (no worker may be running). Returns the builds as the API shows them."""

    def image(name: str) -> TestData:
        data = TestData(name)
        data.gen_manifest_full(tag="image", layer_count=1)
        return data

    return [publish_build(http, "victim", "env", *image("a").content()),
            publish_build(http, "victim", "env", *image("b").content(), relock=True),
            publish_build(http, "mine", "env", *image("c").content())]
