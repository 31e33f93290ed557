"""Publishing to external registries: Debian's docker-registry on loopback, open and behind htpasswd.

The state machine (claim, lease, retry with backoff, terminal errors) runs in-process on SQLite and PostgreSQL
against images put straight into the database and a local artifact store; a real build by a worker is then
published by a running server, driven by the API and the CLI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from envyard.api.db import make_engine, migrate
from envyard.api.models import (
    Build,
    BuildArtifact,
    BuildStatus,
    Environment,
    Namespace,
    Publication,
    RegistryTarget,
    Spec,
    utcnow,
)
from envyard.api.services import catalog, publish, referrers, targets
from envyard.api.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from envyard.builder.errors import ConflictError, NotFoundError
from envyard.builder.oci.model import OciImage
from envyard.builder.oci.store import BlobStore
from envyard.registry.client import RegistryClient
from envyard.worker.protocol import ArtifactEntry
from tests.commands import ENVYARD
from tests.registry.images import SPDX, sbom_referrer, single_image, two_platform_image
from tests.servers import docker_registry, docker_registry_executable, free_port, stop_process, wait_for_port
from tests.service.conftest import Service, create_environment

SECRET = b"k" * 48
USER, PASSWORD = "alice", "correct horse battery"
POLICY = publish.PublishPolicy(lease_seconds=30, max_attempts=3, backoff_seconds=0.5, timeout_seconds=10)


# --- registries -----------------------------------------------------------------------------------------------------


def _need_registry() -> None:
    if docker_registry_executable() is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")


@pytest.fixture(scope="module")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need_registry()
    with docker_registry(tmp_path_factory.mktemp("open-registry")) as host:
        yield host


@pytest.fixture(scope="module")
def auth_registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _need_registry()
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt makes the htpasswd line")
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    with docker_registry(root, htpasswd=htpasswd) as host:
        yield host


@contextmanager
def registry_on_port(root: Path, port: int) -> Iterator[str]:
    """docker-registry on a port chosen beforehand (a target may name it while nothing listens there yet)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                      f"{json.dumps(str(root / 'storage'))}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "wb") as log:
        process = subprocess.Popen([str(docker_registry_executable()), "serve", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)


# --- in-process: a database, an artifact store, builds with images -----------------------------------------------


@pytest.fixture
def engine(database: str, tmp_path: Path) -> Any:
    engine = make_engine(database or f"sqlite:///{tmp_path / 'envyard.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Any) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def add_build(session: Session, store: ArtifactStore, blobs: BlobStore, namespace: str, environment: str,
              image: OciImage) -> Build:
    """A completed build of ``image`` as a worker leaves it: rows for the root and every blob, bytes in the
    store, the environment's current build, publications queued."""
    ns = catalog.ensure_namespace(session, namespace)
    env = catalog.get_or_create(session, Environment, namespace_id=ns.id, name=environment)
    spec = catalog.get_or_create(session, Spec, sha256=hashlib.sha256(environment.encode()).hexdigest(),
                                 filename="environment.yml", content=environment)
    build = Build(environment_id=env.id or 0, spec_id=spec.id or 0, status=BuildStatus.COMPLETED,
                  image_digest=image.digest, finished_at=utcnow())
    session.add(build)
    session.flush()
    root = image.root.descriptor
    store.put_bytes(image.root.data)
    rows = {root.digest: BuildArtifact(build_id=build.id or 0, kind="oci-index", name="image-index.json",
                                       sha256=root.hex, size=root.size, media_type=root.media_type)}
    for manifest in [*image.manifests, *image.referrers]:
        store.put_bytes(manifest.data)
        for descriptor in [manifest.descriptor, *manifest.children()]:
            if descriptor.digest not in rows:
                if descriptor.digest != manifest.descriptor.digest:
                    store.put_file(blobs.path(descriptor.digest))
                rows[descriptor.digest] = BuildArtifact(
                    build_id=build.id or 0, kind="oci-blob", name=f"blobs/sha256/{descriptor.hex}",
                    sha256=descriptor.hex, size=descriptor.size, media_type=descriptor.media_type)
    found = referrers.describe(store, [ArtifactEntry(**row.model_dump(include=set(ArtifactEntry.model_fields)))
                                       for row in rows.values()])  # as complete_build records them
    for row in rows.values():
        for column, value in referrers.fields_of(found, row.name).items():
            setattr(row, column, value)
    session.add_all(rows.values())
    env.current_build_id = build.id
    publish.enqueue_publications(session, build)
    session.commit()
    return build


def add_target(session: Session, namespace: str, name: str, host: str, **extra: Any) -> RegistryTarget:
    catalog.ensure_namespace(session, namespace)
    target = targets.create_target(session, SECRET, namespace, name=name, url=f"http://{host}", **extra)
    session.commit()
    return target


def run_due(session: Session, store: ArtifactStore, policy: publish.PublishPolicy = POLICY,
            later: float = 0.0) -> Publication | None:
    """Claim the next due publication (as if ``later`` seconds had passed) and run it."""
    engine: Any = session.get_bind()
    claimed = publish.claim_publication(engine, policy, now=utcnow() + timedelta(seconds=later))
    return None if claimed is None else publish.run_publication(engine, store, SECRET, claimed, policy)


def publication_of(session: Session, build: Build) -> Publication:
    session.expire_all()
    return session.exec(select(Publication).where(Publication.build_id == build.id)).one()


# --- targets --------------------------------------------------------------------------------------------------------


def test_target_validation(session: Session) -> None:
    catalog.ensure_namespace(session, "Lab")
    bad_urls = ["ftp://r.example", "registry.example:5000", "https://", "https://u:p@r.example",
                "https://r.example/v2/team", "https://r.example?x=1", "https://bad_host!"]
    for url in bad_urls:
        with pytest.raises(targets.TargetError) as caught:
            targets.create_target(session, SECRET, "Lab", name="t", url=url)
        assert caught.value.field == "url" and caught.value.status == 422, url
    bad_templates = ["{namespace}", "{namespace}/{env}", "{environment!r}", "{environment:>9}", "{}/{environment}",
                     "Team/{environment}", "a//{environment}", "{environment", "x/-{environment}"]
    for template in bad_templates:
        with pytest.raises(targets.TargetError) as caught:
            targets.create_target(session, SECRET, "Lab", name="t", url="https://r.example", repository=template)
        assert caught.value.field == "repository", template
    with pytest.raises(targets.TargetError) as caught:
        targets.create_target(session, SECRET, "Lab", name="t", url="https://r.example", username="u")
    assert caught.value.field == "password"
    with pytest.raises(NotFoundError):
        targets.create_target(session, SECRET, "nope", name="t", url="https://r.example")
    target = targets.create_target(session, SECRET, "Lab", name="t", url="HTTPS://R.Example:5000/",
                                   repository="mirror/{namespace}-{environment}")
    assert target.url == "https://r.example:5000"
    assert targets.render_repository(target.repository, "Lab", "Py_Env") == "mirror/lab-py_env"
    with pytest.raises(ConflictError):
        targets.create_target(session, SECRET, "Lab", name="t", url="https://r.example")


def test_password_is_stored_encrypted(session: Session, engine: Any) -> None:
    add_target(session, "lab", "hub", "r.example", username=USER, password=PASSWORD)
    with engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT * FROM registrytarget").one()
    assert PASSWORD not in repr(tuple(row)) and USER in repr(tuple(row))
    target = session.exec(select(RegistryTarget)).one()
    assert target.secret_ciphertext and targets.target_password(target, SECRET) == PASSWORD
    with pytest.raises(targets.TargetError, match="cannot be decrypted"):
        targets.target_password(target, b"another key of at least thirty-two bytes")


# --- pushes ---------------------------------------------------------------------------------------------------------


def test_push_keeps_the_digest_tags_referrers_and_mounts(session: Session, store: LocalArtifactStore,
                                                         blobs: BlobStore, registry_host: str, database: str) -> None:
    namespace = f"ns{free_port()}"  # one registry for the module: a repository per test and database
    add_target(session, namespace, "hub", registry_host)
    image = two_platform_image(blobs, "first")
    image = OciImage(image.root, image.manifests, (sbom_referrer(blobs, image.root, '{"spdx": 1}'),))
    build = add_build(session, store, blobs, namespace, "first", image)
    done = run_due(session, store)
    assert done is not None and done.status == "pushed", done and done.error_message
    assert done.digest == build.image_digest == image.digest and done.attempt == 1
    count = len({d.digest for m in [*image.manifests, *image.referrers] for d in m.children()})
    assert (done.uploaded_blobs, done.mounted_blobs, done.existing_blobs) == (count, 0, 0)
    repository = f"{namespace}/first"
    with RegistryClient(registry_host) as client:
        for tag in (str(build.id), "latest", image.digest):
            assert client.get_manifest(repository, tag).data == image.root.data
        for manifest in image.manifests:
            assert client.get_manifest(repository, manifest.descriptor.digest).data == manifest.data
        referrers = client.referrers(repository, image.digest)
        assert [r.digest for r in referrers] == [image.referrers[0].descriptor.digest]
        assert referrers[0].artifact_type == SPDX
    assert run_due(session, store) is None  # nothing else is due

    again = publish.request_publications(session, build.id or 0)
    session.commit()
    assert [p.status for p in again] == ["pending"]
    done = run_due(session, store)
    assert done is not None and done.status == "pushed"
    assert (done.uploaded_blobs, done.mounted_blobs, done.existing_blobs) == (0, 0, count)

    shared = {"etc/base": b"shared by both environments\n" * 100}
    other = add_build(session, store, blobs, namespace, "second", single_image(blobs, [shared, {"b": b"2"}]))
    third = add_build(session, store, blobs, namespace, "third", single_image(blobs, [shared, {"c": b"3"}]))
    done = run_due(session, store)
    assert done is not None and done.build_id == other.id and done.status == "pushed"
    assert (done.uploaded_blobs, done.mounted_blobs) == (3, 0)
    done = run_due(session, store)
    assert done is not None and done.build_id == third.id and done.status == "pushed"
    assert (done.uploaded_blobs, done.mounted_blobs, done.existing_blobs) == (2, 1, 0)  # the shared layer: mounted


def test_latest_only_for_the_current_build(session: Session, store: LocalArtifactStore, blobs: BlobStore,
                                           registry_host: str) -> None:
    namespace = f"ns{free_port()}"
    add_target(session, namespace, "hub", registry_host)
    old = add_build(session, store, blobs, namespace, "env", single_image(blobs, [{"v": b"1"}]))
    new = add_build(session, store, blobs, namespace, "env", single_image(blobs, [{"v": b"2"}]))
    for _ in range(2):
        done = run_due(session, store)
        assert done is not None and done.status == "pushed"
    assert publication_of(session, old).reference == f"{registry_host}/{namespace}/env:{old.id}@{old.image_digest}"
    publish.request_publications(session, old.id or 0)  # published again after the newer build: latest stays
    session.commit()
    done = run_due(session, store)
    assert done is not None and done.build_id == old.id and done.status == "pushed"
    with RegistryClient(registry_host) as client:
        assert client.get_manifest(f"{namespace}/env", "latest").descriptor.digest == new.image_digest
        assert client.get_manifest(f"{namespace}/env", str(old.id)).descriptor.digest == old.image_digest
        assert client.get_manifest(f"{namespace}/env", str(new.id)).descriptor.digest == new.image_digest


def test_credentials(session: Session, store: LocalArtifactStore, blobs: BlobStore, auth_registry_host: str) -> None:
    namespace = f"ns{free_port()}"
    add_target(session, namespace, "wrong", auth_registry_host, username=USER, password="wrong password")
    build = add_build(session, store, blobs, namespace, "env", single_image(blobs, [{"a": b"auth"}]))
    done = run_due(session, store)
    assert done is not None and done.status == "failed" and done.attempt == 1
    assert done.error_message is not None and "rejected the credentials of target 'wrong'" in done.error_message
    assert "not retried" in done.error_message and "wrong password" not in done.error_message
    assert run_due(session, store, later=3600) is None  # no retry, however long one waits

    add_target(session, namespace, "right", auth_registry_host, username=USER, password=PASSWORD)
    publications = publish.request_publications(session, build.id or 0, "right")
    session.commit()
    done = run_due(session, store)
    assert done is not None and done.id == publications[0].id and done.status == "pushed", done.error_message
    anonymous = add_target(session, namespace, "anonymous", auth_registry_host)
    publish.request_publications(session, build.id or 0, anonymous.name)
    session.commit()
    done = run_due(session, store)
    assert done is not None and done.status == "failed" and "no credentials" in (done.error_message or "")


def test_registry_down_is_retried_with_backoff_then_fails(session: Session, store: LocalArtifactStore,
                                                          blobs: BlobStore) -> None:
    add_target(session, "lab", "down", f"127.0.0.1:{free_port()}")
    build = add_build(session, store, blobs, "lab", "env", single_image(blobs, [{"a": b"down"}]))
    policy = publish.PublishPolicy(lease_seconds=30, max_attempts=3, backoff_seconds=60)
    first = run_due(session, store, policy)
    assert first is not None and first.status == "pending" and first.attempt == 1
    assert first.error_message is not None and "attempt 1 of 3" in first.error_message
    assert "cannot connect" in first.error_message and "next in 60 s" in first.error_message
    assert run_due(session, store, policy, later=30) is None  # still backing off
    second = run_due(session, store, policy, later=61)
    assert second is not None and second.status == "pending" and "next in 120 s" in (second.error_message or "")
    assert run_due(session, store, policy, later=100) is None  # the delay doubled (from the real clock)
    third = run_due(session, store, policy, later=121)
    assert third is not None and third.status == "failed" and third.attempt == 3
    assert third.finished_at is not None and (third.error_message or "").startswith("after 3 attempts: ")
    assert publication_of(session, build).status == "failed"


def test_registry_down_then_started_is_pushed(session: Session, store: LocalArtifactStore, blobs: BlobStore,
                                              tmp_path: Path) -> None:
    _need_registry()
    port = free_port()
    add_target(session, "lab", "late", f"127.0.0.1:{port}")
    build = add_build(session, store, blobs, "lab", "env", single_image(blobs, [{"a": b"late"}]))
    first = run_due(session, store)
    assert first is not None and first.status == "pending" and "cannot connect" in (first.error_message or "")
    with registry_on_port(tmp_path / "late-registry", port):
        done = run_due(session, store, later=POLICY.backoff_seconds + 1)
        assert done is not None and done.status == "pushed" and done.attempt == 2 and done.error_message is None
        assert done.digest == build.image_digest


def test_claims_are_exclusive_and_leases_expire(session: Session, engine: Any, store: LocalArtifactStore,
                                                blobs: BlobStore) -> None:
    add_target(session, "lab", "hub", f"127.0.0.1:{free_port()}")
    add_build(session, store, blobs, "lab", "env", single_image(blobs, [{"a": b"lease"}]))
    policy = publish.PublishPolicy(lease_seconds=30, max_attempts=2, backoff_seconds=1)
    claimed = publish.claim_publication(engine, policy)
    assert claimed is not None and claimed.status == "pushing" and claimed.attempt == 1
    # another server: nothing for it while the lease holds
    assert publish.claim_publication(engine, policy) is None
    stolen = publish.claim_publication(engine, policy, now=utcnow() + timedelta(seconds=31))
    assert stolen is not None and stolen.id == claimed.id and stolen.attempt == 2
    assert publish._finish(engine, claimed, status="pushed") is False  # the first claim's result is dropped
    with Session(engine, expire_on_commit=False) as third:
        assert publish.claim_publication(engine, policy, now=utcnow() + timedelta(seconds=62)) is None
        lost = third.get(Publication, claimed.id)
        assert lost is not None and lost.status == "failed" and "stopped responding, 2 times" in (lost.error_message
                                                                                                 or "")


def test_enqueue_requests_and_deletes(session: Session, store: LocalArtifactStore, blobs: BlobStore) -> None:
    add_target(session, "lab", "on", "r.example")
    add_target(session, "lab", "off", "r.example", enabled=False)
    add_target(session, "elsewhere", "on", "r.example")
    build = add_build(session, store, blobs, "lab", "env", single_image(blobs, [{"a": b"queue"}]))
    listed = publish.list_publications(session, build.id or 0)
    assert [(t.name, n, p.status) for p, t, n in listed] == [("on", "lab", "pending")]
    assert [p.status for p in publish.request_publications(session, build.id or 0)] == ["pending"]  # left as is
    assert len(publish.request_publications(session, build.id or 0, "off")) == 1  # explicit: disabled works too
    session.commit()
    with pytest.raises(NotFoundError):
        publish.request_publications(session, build.id or 0, "nope")
    with pytest.raises(NotFoundError):
        publish.list_publications(session, 999_999)
    imageless = Build(environment_id=build.environment_id, spec_id=build.spec_id, status=BuildStatus.COMPLETED)
    session.add(imageless)
    session.flush()
    assert publish.enqueue_publications(session, imageless) == []
    with pytest.raises(ConflictError, match="without an image"):
        publish.request_publications(session, imageless.id or 0)
    bare = add_build(session, store, blobs, "bare", "env", single_image(blobs, [{"a": b"bare"}]))
    with pytest.raises(ConflictError, match="no enabled registry target"):
        publish.request_publications(session, bare.id or 0)

    assert targets.delete_target(session, "lab", "off") == 1
    session.commit()
    assert [t.name for t in targets.list_targets(session, "lab")] == ["on"]
    catalog.delete_environment(session, "lab", "env")
    session.commit()
    assert session.exec(select(Publication)).all() == []
    catalog.delete_namespace(session, "lab")
    session.commit()
    assert [t.name for t in session.exec(select(RegistryTarget))] == ["on"]  # elsewhere's
    assert session.exec(select(Namespace).where(Namespace.name == "lab")).first() is None


def test_push_from_an_s3_store(session: Session, blobs: BlobStore, registry_host: str, database: str,
                               tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if database:
        pytest.skip("the store, not the database, is what differs here")
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    endpoint = request.getfixturevalue("s3_endpoint")
    (tmp_path / "spool").mkdir()
    s3 = S3ArtifactStore(endpoint, f"publish-{free_port()}", "artifacts/", "testing", "testing",
                         spool_dir=tmp_path / "spool", connect_timeout=2, retries=1)
    namespace = f"ns{free_port()}"
    add_target(session, namespace, "hub", registry_host)
    image = single_image(blobs, [{"s3": b"from the bucket\n" * 1000}])
    build = add_build(session, s3, blobs, namespace, "env", image)
    source = publish.ArtifactSource(s3, tmp_path / "spool")
    layer = image.manifests[0].children()[1]
    copied = source.path(layer.digest)
    assert copied.read_bytes() == blobs.path(layer.digest).read_bytes()
    with pytest.raises(NotFoundError):
        source.path("sha256:" + "0" * 64)
    source.close()
    assert not copied.exists()
    engine: Any = session.get_bind()
    done = publish.run_publication(engine, s3, SECRET, publish.claim_publication(engine, POLICY), POLICY,
                                   tmp_path / "spool")  # type: ignore[arg-type]
    assert done.status == "pushed" and done.digest == build.image_digest and done.uploaded_blobs == 2
    assert list((tmp_path / "spool").iterdir()) == []  # the spooled copies are gone


def test_missing_artifacts_fail_without_retries(session: Session, store: LocalArtifactStore, blobs: BlobStore,
                                                registry_host: str) -> None:
    namespace = f"ns{free_port()}"
    add_target(session, namespace, "hub", registry_host)
    image = single_image(blobs, [{"a": b"collected"}])
    build = add_build(session, store, blobs, namespace, "env", image)
    store.delete(image.manifests[0].children()[1].hex)  # the layer is gone from the store
    done = run_due(session, store)
    assert done is not None and done.status == "failed" and done.attempt == 1, done.error_message
    assert "no artifact with digest" in (done.error_message or "")
    assert build.image_digest


# --- a real build, a running server, the API and the CLI ----------------------------------------------------------


def envyard(svc: Service, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in svc.env.items() if k not in ("ENVYARD_TOKEN", "ENVYARD_API_URL", "ENVYARD_DATA_DIR")}
    result = subprocess.run([*ENVYARD, "--api", svc.url, "--token", svc.token, *args],
                            input=stdin, capture_output=True, text=True, timeout=120, env=env, cwd=svc.log_dir)
    assert not ok or result.returncode == 0, result.stdout + result.stderr
    return result


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.2)
    return value


def finished(svc: Service, build_id: int, count: int = 1) -> Callable[[], list[dict[str, Any]] | None]:
    def check() -> list[dict[str, Any]] | None:
        with svc.client() as http:
            found = http.get(f"/api/v1/builds/{build_id}/publications").json()
        return found if len(found) == count and all(p["status"] in ("pushed", "failed") for p in found) else None

    return check


@pytest.fixture
def served(start: Any, database: str) -> Service:
    if database:
        pytest.skip("the state machine runs on PostgreSQL in-process above; one database is enough for a server")
    service: Service = start("--workers", "1", env={"ENVYARD_PUBLISH_BACKOFF_SECONDS": "0.5",
                                                    "ENVYARD_PUBLISH_MAX_ATTEMPTS": "3"})
    return service


def test_a_real_build_is_published_with_its_digest(served: Service, database: str, registry_host: str,
                                                   auth_registry_host: str) -> None:
    ns = f"svc{free_port()}"
    with served.client() as http:
        assert http.post("/api/v1/namespaces", json={"name": ns}).status_code == 201
    added = envyard(served, "target", "add", ns, "hub", f"http://{registry_host}", "--json")
    assert json.loads(added.stdout)["repository"] == "{namespace}/{environment}"
    envyard(served, "target", "add", ns, "locked", f"http://{auth_registry_host}", "--username", USER,
            "--password-stdin", stdin=PASSWORD + "\n")
    envyard(served, "target", "add", ns, "wrong", f"http://{auth_registry_host}", "--username", USER,
            "--password-stdin", stdin="not the password\n")
    listed = json.loads(envyard(served, "target", "list", ns, "--json").stdout)
    assert [(t["name"], t["has_password"]) for t in listed] == [("hub", False), ("locked", True), ("wrong", True)]
    assert PASSWORD not in json.dumps(listed)

    with served.client() as http:
        build = served.wait_for(create_environment(http, ns, "one", ["e2e-env"])["id"])
    assert build["status"] == "completed" and build["image_digest"]
    publications = {p["target"]: p for p in wait_until(finished(served, build["id"], 3), "three publications")}
    hub, locked, wrong = publications["hub"], publications["locked"], publications["wrong"]
    assert hub["status"] == locked["status"] == "pushed", publications
    assert hub["digest"] == locked["digest"] == build["image_digest"] and hub["uploaded_blobs"] > 0
    assert wrong["status"] == "failed" and wrong["attempt"] == 1 and "rejected the credentials" in wrong["error"]

    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry_host}/{ns}/one:{build['id']}"], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == build["image_digest"]
    with RegistryClient(registry_host) as client:
        assert client.get_manifest(f"{ns}/one", "latest").descriptor.digest == build["image_digest"]
        sboms = client.referrers(f"{ns}/one", build["image_digest"])
        assert sboms and {d.artifact_type for d in sboms} == {SPDX}

    with served.client() as http:  # a second environment of the namespace shares the base layers
        second = served.wait_for(create_environment(http, ns, "two", ["e2e-env"])["id"])
    pushed = {p["target"]: p for p in wait_until(finished(served, second["id"], 3), "second publications")}["hub"]
    assert pushed["status"] == "pushed" and pushed["digest"] == second["image_digest"]
    assert pushed["mounted_blobs"] + pushed["existing_blobs"] >= 1
    assert pushed["uploaded_blobs"] < hub["uploaded_blobs"] + hub["mounted_blobs"] + hub["existing_blobs"]

    again = json.loads(envyard(served, "build", "publish", str(build["id"]), "--target", "hub", "--wait",
                               "--json").stdout)
    assert [(p["status"], p["uploaded_blobs"], p["mounted_blobs"]) for p in again] == [("pushed", 0, 0)]
    assert again[0]["existing_blobs"] == hub["uploaded_blobs"]
    failed = envyard(served, "build", "publish", str(build["id"]), "--target", "wrong", "--wait", ok=False)
    assert failed.returncode == 5 and "rejected the credentials" in failed.stderr
    shown = envyard(served, "build", "publications", str(build["id"])).stdout
    assert "hub" in shown and "pushed" in shown and "rejected the credentials" in shown

    envyard(served, "target", "remove", ns, "wrong")
    assert [t["name"] for t in json.loads(envyard(served, "target", "list", ns, "--json").stdout)] == ["hub", "locked"]
    assert {p["target"] for p in finished(served, build["id"], 2)() or []} == {"hub", "locked"}
    logs = "".join(p.read_text(errors="replace") for p in served.log_dir.glob("*.log"))
    assert PASSWORD not in logs and "not the password" not in logs
    if not database:
        raw_db = b"".join(p.read_bytes() for p in served.data_dir.glob("envyard.db*"))
        assert PASSWORD.encode() not in raw_db and b"not the password" not in raw_db
        with sqlite3.connect(served.data_dir / "envyard.db") as connection:
            secrets = [row[0] for row in connection.execute("SELECT secret_ciphertext FROM registrytarget "
                                                            "WHERE secret_ciphertext IS NOT NULL")]
        assert len(secrets) == 1 and PASSWORD not in secrets[0]


def test_api_errors(start: Any, database: str) -> None:
    if database:
        pytest.skip("validation does not touch the database engine; SQLite is enough")
    service: Service = start("--workers", "0")
    with service.client() as http:
        assert http.post("/api/v1/namespaces", json={"name": "lab"}).status_code == 201
        path = "/api/v1/namespaces/lab/registry-targets"
        for body, field in [({"name": "t", "url": "ftp://r.example"}, "url"),
                            ({"name": "t", "url": "https://r.example", "repository": "{team}/{environment}"},
                             "repository"),
                            ({"name": "t", "url": "https://r.example", "username": "u"}, "password")]:
            response = http.post(path, json=body)
            assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
            assert response.json()["field"] == field, response.json()
        assert http.post(path, json={"name": "bad name", "url": "https://r.example"}).json()["field"] == "body.name"
        assert http.post("/api/v1/namespaces/nope/registry-targets",
                         json={"name": "t", "url": "https://r.example"}).status_code == 404
        created = http.post(path, json={"name": "t", "url": "https://r.example", "username": "u", "password": "pw"})
        assert created.status_code == 201 and "pw" not in created.text and created.json()["has_password"]
        assert http.post(path, json={"name": "t", "url": "https://r.example"}).status_code == 409
        assert http.get(f"{path}/t").json()["username"] == "u"
        assert http.get(f"{path}/nope").status_code == 404
        assert http.get("/api/v1/builds/999/publications").status_code == 404
        assert http.post("/api/v1/builds/999/publications").status_code == 404
        user_token = http.post("/api/v1/tokens", json={"name": "someone", "role": "user"}).json()["token"]
    with service.client(user_token) as http:
        assert http.get(path).status_code == 403
        assert http.post(path, json={"name": "u", "url": "https://r.example"}).status_code == 403
        assert http.delete(f"{path}/t").status_code == 403
    with service.client() as http:
        assert http.delete(f"{path}/t").status_code == 204
        assert http.get(path).json() == []
    missing = envyard(service, "target", "remove", "lab", "t", ok=False)
    assert missing.returncode == 6 and missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
    bad = envyard(service, "target", "add", "lab", "t", "https://r.example", "--repository", "{x}", ok=False)
    assert bad.returncode != 0 and bad.stderr.startswith("error: repository: repository template '{x}'")
    assert len(bad.stderr.splitlines()) == 1
