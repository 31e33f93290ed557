"""Garbage collection of the artifact store (api/services/gc.py): real servers and workers on SQLite with the local
store and on PostgreSQL with S3 (moto_server); the races against uploads with a real database and store in-process.

Builds held running are played by the test through the worker protocol (ApiClient, the client real workers use):
a real worker uploads and completes in one go, so it cannot be held between the two.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from envyard.api.db import make_engine, migrate
from envyard.api.models import BlobHold, BlobTombstone, Build, BuildArtifact, Environment, Namespace, Spec, utcnow
from envyard.api.services import gc
from envyard.api.storage import ArtifactStore, ListedBlob, LocalArtifactStore, S3ArtifactStore
from envyard.builder.errors import ConflictError, NotFoundError, StorageError
from envyard.worker.client import ApiClient
from envyard.worker.protocol import ArtifactEntry, Completion
from tests.commands import ENVYARD
from tests.service.conftest import Service, create_environment

S3_KEYS = {"ENVYARD_S3_ACCESS_KEY": "testing", "ENVYARD_S3_SECRET_KEY": "testing"}
NO_GRACE = {"ENVYARD_GC_GRACE_SECONDS": "0"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise(size: int = 2048) -> bytes:
    return random.randbytes(size)


# --- a server with its store ---------------------------------------------------------------------------------------


class Server:
    """A started service, the test's view of its database (an engine) and of its artifact store."""

    def __init__(self, service: Service, database: str, store: ArtifactStore) -> None:
        self.service = service
        self.engine = make_engine(database or f"sqlite:///{service.data_dir / 'envyard.db'}")
        self.store = store
        self.http = service.client()
        self.worker = ApiClient(service.url, service.token, retry_seconds=10)

    def close(self) -> None:
        self.http.close()
        self.worker.close()
        self.engine.dispose()

    def stored(self) -> set[str]:
        return {blob.sha256 for blob in self.store.iter_blobs()}

    def gc(self, **body: Any) -> dict[str, Any]:
        response = self.http.post("/api/v1/admin/gc", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def claim(self, namespace: str, name: str) -> tuple[int, str]:
        """Submit a build of namespace/name and claim it as a worker would: (build id, lease)."""
        build = create_environment(self.http, namespace, name, ["e2e-env"])
        job = self.worker.claim("test-worker", None, 5)
        assert job is not None and job.build_id == build["id"]
        self.worker.stage(build["id"], job.lease_id, "pushing")
        return build["id"], job.lease_id

    def upload(self, build_id: int, lease: str, data: bytes) -> bool:
        """Store ``data`` for the build through the protocol (presigned on S3); True when bytes were sent."""
        path = self.service.log_dir / f"upload-{uuid.uuid4().hex}"
        path.write_bytes(data)
        return self.worker.upload(build_id, lease, path, sha(data), len(data))

    def complete(self, build_id: int, lease: str, blobs: list[bytes]) -> dict[str, Any]:
        artifacts = [ArtifactEntry(kind="file", name=f"file-{i}", platform=None, sha256=sha(data), size=len(data),
                                   media_type="application/octet-stream") for i, data in enumerate(blobs)]
        return self.worker.complete(build_id, lease, Completion(artifacts=artifacts, packages=[]))


@pytest.fixture
def server(start: Any, database: str, s3_endpoint: str) -> Iterator[Callable[..., Server]]:
    """server(*serve_args, env=...) -> Server: SQLite with the local store, PostgreSQL with S3."""
    made: list[Server] = []

    def _server(*args: str, env: dict[str, str] | None = None) -> Server:
        if database:
            bucket = f"envyard-gc-{uuid.uuid4().hex[:12]}"
            service = start(*args, "--storage", f"s3://{bucket}/artifacts",
                            env={**S3_KEYS, "ENVYARD_S3_ENDPOINT_URL": s3_endpoint, **(env or {})})
            store: ArtifactStore = S3ArtifactStore(s3_endpoint, bucket, "artifacts", "testing", "testing")
        else:
            service = start(*args, env=env)
            store = LocalArtifactStore(service.data_dir / "artifacts")
        made.append(Server(service, database, store))
        return made[-1]

    yield _server
    for each in made:
        each.close()


# --- end to end ----------------------------------------------------------------------------------------------------


def pull(http: httpx.Client, repository: str, build_id: int) -> int:
    """Pull repository's latest image the way a registry client does; the number of blobs fetched and checked."""
    manifest = http.get(f"/v2/{repository}/manifests/latest")
    assert manifest.status_code == 200, manifest.text
    assert f"sha256:{sha(manifest.content)}" == manifest.headers["docker-content-digest"]
    fetched = 0
    for artifact in http.get(f"/api/v1/builds/{build_id}/artifacts").json():
        if artifact["kind"] == "oci-blob":
            blob = http.get(f"/v2/{repository}/blobs/{artifact['digest']}")
            assert blob.status_code == 200 and f"sha256:{sha(blob.content)}" == artifact["digest"], artifact["name"]
            fetched += 1
        body = http.get(artifact["url"]).content
        assert f"sha256:{sha(body)}" == artifact["digest"], artifact["name"]
    return fetched


def test_gc_deletes_only_what_no_remaining_build_references(server: Callable[..., Server]) -> None:
    srv = server("--workers", "1", env=NO_GRACE)
    http = srv.http
    alpha = create_environment(http, "gc", "alpha", ["e2e-env"])
    beta = create_environment(http, "gc", "beta", ["busybox"])
    for build in (alpha, beta):
        done = srv.service.wait_for(build["id"])
        assert done["status"] == "completed", http.get(f"/api/v1/builds/{build['id']}/logs").text
    sizes = {}
    owners: dict[int, set[str]] = {}
    for build in (alpha, beta):
        artifacts = http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
        owners[build["id"]] = {a["digest"][7:] for a in artifacts}
        sizes.update({a["digest"][7:]: a["size"] for a in artifacts})
    only_alpha = owners[alpha["id"]] - owners[beta["id"]]
    assert only_alpha and owners[alpha["id"]] & owners[beta["id"]], "the two builds should share some blobs"
    assert srv.stored() == owners[alpha["id"]] | owners[beta["id"]]

    nothing = srv.gc()
    assert (nothing["unreferenced"], nothing["deleted"], nothing["blobs"]) == (0, 0, len(sizes))

    assert http.delete("/api/v1/environments/gc/alpha").status_code == 204
    dry = srv.gc(dry_run=True)
    assert dry["dry_run"] and (dry["deletable"], dry["deleted"]) == (len(only_alpha), 0)
    assert dry["deletable_bytes"] == sum(sizes[d] for d in only_alpha)
    assert srv.stored() == owners[alpha["id"]] | owners[beta["id"]]  # a dry run deletes nothing

    report = srv.gc()
    assert not report["dry_run"]
    assert (report["unreferenced"], report["deleted"]) == (len(only_alpha), len(only_alpha))
    assert report["deleted_bytes"] == sum(sizes[d] for d in only_alpha) > 0
    assert report["referenced"] == len(owners[beta["id"]])
    assert srv.stored() == owners[beta["id"]]
    assert pull(http, "gc/beta", beta["id"]) > 0  # what remains still pulls, blob by blob

    again = srv.gc()
    assert (again["unreferenced"], again["deleted"]) == (0, 0)
    with srv.engine.connect() as connection:  # no tombstone, no lock, no hold left behind
        assert connection.execute(select(BlobTombstone.sha256)).all() == []
        assert connection.execute(select(BlobHold.sha256)).all() == []


def test_a_real_build_running_through_a_collection_completes(server: Callable[..., Server]) -> None:
    """A worker held in ``pushing`` (before it uploads) while a collection deletes the blobs it is about to send:
    it stores them again and its image pulls."""
    srv = server("--workers", "1", env={**NO_GRACE, "ENVYARD_TEST_STAGE_DELAY": "pushing=4"})
    http = srv.http
    alpha = create_environment(http, "gc", "first", ["e2e-env"])
    assert srv.service.wait_for(alpha["id"])["status"] == "completed"
    before = {a["digest"][7:] for a in http.get(f"/api/v1/builds/{alpha['id']}/artifacts").json()}
    assert http.delete("/api/v1/environments/gc/first").status_code == 204
    beta = create_environment(http, "gc", "second", ["e2e-env"])
    srv.service.wait_for(beta["id"], {"pushing"}, timeout=60)
    report = srv.gc()
    assert report["deleted"] == len(before) and srv.stored() == set()
    done = srv.service.wait_for(beta["id"])
    assert done["status"] == "completed", http.get(f"/api/v1/builds/{beta['id']}/logs").text
    after = {a["digest"][7:] for a in http.get(f"/api/v1/builds/{beta['id']}/artifacts").json()}
    assert before & after and srv.stored() == after  # the shared blobs were stored again
    assert pull(http, "gc/second", beta["id"]) > 0


def test_a_running_build_holds_what_it_uploaded_or_found(server: Callable[..., Server]) -> None:
    srv = server("--workers", "0", env=NO_GRACE)
    found, fresh = noise(), noise()
    orphan, orphan_lease = srv.claim("gc", "orphan")
    assert srv.upload(orphan, orphan_lease, found) is True
    srv.worker.fail(orphan, orphan_lease, "install-failed", "pushing", "gave up", None)  # `found` is garbage now

    build_id, lease = srv.claim("gc", "held")
    assert srv.upload(build_id, lease, fresh) is True
    assert srv.upload(build_id, lease, found) is False  # already stored: held all the same
    report = srv.gc()
    assert (report["unreferenced"], report["kept_held"], report["deleted"]) == (2, 2, 0)
    assert report["holds_released"] == 1  # the failed build's hold
    assert {sha(fresh), sha(found)} <= srv.stored()

    done = srv.complete(build_id, lease, [fresh, found])
    assert done["status"] == "completed"
    for data in (fresh, found):
        assert srv.http.get(f"/api/v1/blobs/sha256:{sha(data)}").content == data
    after = srv.gc()
    assert (after["unreferenced"], after["deleted"], after["holds_released"]) == (0, 0, 0)  # released on completion


def test_an_environment_whose_failed_build_holds_blobs_can_be_deleted(server: Callable[..., Server]) -> None:
    """Holds of a failed build stay until the next collection; deleting its environment removes them too."""
    srv = server("--workers", "0", env=NO_GRACE)
    data = noise()
    build_id, lease = srv.claim("gc", "doomed")
    srv.upload(build_id, lease, data)
    srv.worker.fail(build_id, lease, "install-failed", "pushing", "gave up", None)
    deleted = srv.http.delete("/api/v1/environments/gc/doomed")
    assert deleted.status_code == 204, deleted.text
    report = srv.gc()
    assert (report["deleted"], report["holds_released"]) == (1, 0)
    assert sha(data) not in srv.stored()


def test_the_grace_period_keeps_unreferenced_uploads(server: Callable[..., Server]) -> None:
    srv = server("--workers", "0")  # the default grace period of an hour
    data = noise(4096)
    build_id, lease = srv.claim("gc", "late")
    srv.upload(build_id, lease, data)
    srv.worker.fail(build_id, lease, "install-failed", "pushing", "gave up", None)

    kept = srv.gc()
    assert (kept["unreferenced"], kept["kept_recent"], kept["deleted"], kept["grace_seconds"]) == (1, 1, 0, 3600)
    dry = srv.gc(dry_run=True, grace_seconds=0)
    assert (dry["deletable"], dry["deletable_bytes"], dry["deleted"]) == (1, len(data), 0)
    assert sha(data) in srv.stored()
    gone = srv.gc(grace_seconds=0)
    assert (gone["deleted"], gone["deleted_bytes"]) == (1, len(data))
    assert sha(data) not in srv.stored()


def test_a_second_collection_is_refused(server: Callable[..., Server]) -> None:
    srv = server("--workers", "0", env=NO_GRACE)
    with gc.gc_lock(srv.engine):  # another replica collecting
        refused = srv.http.post("/api/v1/admin/gc", json={})
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith("/conflict") and "already running" in refused.json()["detail"]
        assert srv.gc(dry_run=True)["dry_run"]  # a dry run deletes nothing and needs no lock
        with pytest.raises(gc.GcRunningError):
            gc.GcLock.acquire(srv.engine)
    assert srv.gc()["deleted"] == 0

    with Session(srv.engine) as session:  # the lock of a collector that died
        session.add(BlobTombstone(sha256=gc.LOCK_KEY, created_at=utcnow() - timedelta(seconds=2 * gc.LOCK_SECONDS)))
        session.commit()
    assert srv.gc()["deleted"] == 0  # taken over
    with Session(srv.engine) as session:
        assert session.get(BlobTombstone, gc.LOCK_KEY) is None

    user = srv.http.post("/api/v1/tokens", json={"name": "someone", "role": "user"}).json()["token"]
    with srv.service.client(user) as http:
        denied = http.post("/api/v1/admin/gc", json={"dry_run": True})
    assert denied.status_code == 403 and denied.json()["type"].endswith("/forbidden")


def test_stale_tombstones_are_cleared(server: Callable[..., Server]) -> None:
    srv = server("--workers", "0", env=NO_GRACE)
    old, recent = sha(b"old"), sha(b"recent")
    with Session(srv.engine) as session:
        session.add(BlobTombstone(sha256=old, created_at=utcnow() - timedelta(seconds=2 * gc.STALE_TOMBSTONE_SECONDS)))
        session.add(BlobTombstone(sha256=recent, created_at=utcnow()))
        session.commit()
    assert srv.gc(dry_run=True)["stale_tombstones"] == 1
    assert srv.gc()["stale_tombstones"] == 1
    with Session(srv.engine) as session:
        assert set(session.exec(select(BlobTombstone.sha256)).all()) == {recent}


def test_periodic_collection(server: Callable[..., Server]) -> None:
    srv = server("--workers", "0", env={**NO_GRACE, "ENVYARD_GC_INTERVAL_SECONDS": "0.3"})
    garbage, held = noise(), noise()
    build_id, lease = srv.claim("gc", "periodic")
    srv.upload(build_id, lease, garbage)
    srv.worker.fail(build_id, lease, "install-failed", "pushing", "gave up", None)
    running, running_lease = srv.claim("gc", "running")
    srv.upload(running, running_lease, held)
    deadline = time.monotonic() + 60
    while sha(garbage) in srv.stored():
        assert time.monotonic() < deadline, "the periodic collection did not delete the garbage"
        time.sleep(0.2)
    assert sha(held) in srv.stored()
    assert srv.complete(running, running_lease, [held])["status"] == "completed"


# --- the CLI --------------------------------------------------------------------------------------------------------


def envyard(service: Service, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in service.env.items() if k not in ("ENVYARD_TOKEN", "ENVYARD_API_URL", "ENVYARD_DATA_DIR")}
    return subprocess.run([*ENVYARD, "--api", service.url, "--token", token or service.token,
                           *args], capture_output=True, text=True, timeout=120, env=env, cwd=service.log_dir)


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert result.returncode == exit_code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_cli_gc(server: Callable[..., Server], database: str) -> None:
    if database:
        pytest.skip("the CLI is the same against either database")
    srv = server("--workers", "0", env=NO_GRACE)
    data = noise(3000)
    build_id, lease = srv.claim("gc", "cli")
    srv.upload(build_id, lease, data)
    srv.worker.fail(build_id, lease, "install-failed", "pushing", "gave up", None)

    dry = envyard(srv.service, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "garbage collection (dry run)" in dry.stdout and "would delete" in dry.stdout
    assert sha(data) in srv.stored()
    kept = envyard(srv.service, "gc", "--grace-seconds", "3600", "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["kept_recent"] == 1
    done = envyard(srv.service, "gc", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["dry_run"], report["deleted"], report["deleted_bytes"]) == (False, 1, len(data))
    assert sha(data) not in srv.stored()
    human = envyard(srv.service, "gc")
    assert human.returncode == 0 and "deleted" in human.stdout

    with gc.gc_lock(srv.engine):
        assert "already running" in one_line_error(envyard(srv.service, "gc"), 7)
        refused = envyard(srv.service, "gc", "--json")
        assert refused.returncode == 7 and json.loads(refused.stdout)["error"]["status"] == 409
    user = srv.http.post("/api/v1/tokens", json={"name": "someone", "role": "user"}).json()["token"]
    assert "may not admin" in one_line_error(envyard(srv.service, "gc", token=user), 8)
    unreachable = subprocess.run([*ENVYARD, "--api", "http://127.0.0.1:9", "--token", "x",
                                  "gc"], capture_output=True, text=True, timeout=60, env=srv.service.env)
    assert unreachable.returncode != 0
    assert "is the envyard server running" in one_line_error(unreachable, unreachable.returncode)


# --- in process: the races, against a real database and store ------------------------------------------------------


@pytest.fixture
def engine(database: str, tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(database or f"sqlite:///{tmp_path / 'gc.db'}")
    migrate(made)
    yield made
    made.dispose()


def new_build(engine: Engine, status: str = "pushing") -> int:
    with Session(engine) as session:
        namespace = Namespace(name=f"ns-{uuid.uuid4().hex[:8]}")
        spec = Spec(sha256=uuid.uuid4().hex * 2, filename="environment.yml", content="dependencies: []\n")
        session.add_all([namespace, spec])
        session.flush()
        assert namespace.id is not None and spec.id is not None
        environment = Environment(namespace_id=namespace.id, name="env")
        session.add(environment)
        session.flush()
        assert environment.id is not None
        build = Build(environment_id=environment.id, spec_id=spec.id, status=status)
        session.add(build)
        session.commit()
        assert build.id is not None
        return build.id


def reference(engine: Engine, build_id: int, data: bytes) -> None:
    with Session(engine) as session:
        session.add(BuildArtifact(build_id=build_id, kind="file", name=uuid.uuid4().hex, sha256=sha(data),
                                  size=len(data), media_type="application/octet-stream"))
        session.commit()


def tombstones(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(BlobTombstone.sha256)).all())


class PausingStore(LocalArtifactStore):
    """The local store, with deletions that wait until the test lets them go on (to interleave with an upload)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleting = threading.Event()
        self.proceed = threading.Event()

    def delete(self, sha256: str) -> None:
        self.deleting.set()
        assert self.proceed.wait(30)
        super().delete(sha256)


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_an_upload_of_a_blob_being_deleted_waits_then_stores_it(engine: Engine, tmp_path: Path) -> None:
    store = PausingStore(tmp_path / "store")
    data = noise()
    store.put_bytes(data)  # unreferenced, unheld: garbage
    collection, collected = in_thread(lambda: gc.collect(engine, store, grace_seconds=0))
    assert store.deleting.wait(30)  # the collector has committed its tombstone and checked again
    assert tombstones(engine) == {sha(data), gc.LOCK_KEY}
    build_id = new_build(engine)

    def upload() -> bool:
        gc.hold_blobs(engine, build_id, [sha(data)])
        if store.stat(sha(data)) == len(data):
            return False
        store.put_bytes(data)
        return True

    uploading, uploaded = in_thread(upload)
    uploading.join(0.5)
    assert uploading.is_alive(), "the upload went ahead while its blob was being deleted"
    store.proceed.set()
    collection.join(30)
    uploading.join(30)
    assert "error" not in collected and "error" not in uploaded
    assert collected["value"].deleted == 1
    assert uploaded["value"] is True  # stored again, after the deletion
    assert store.stat(sha(data)) == len(data) and tombstones(engine) == set()
    report = gc.collect(engine, store, grace_seconds=0)
    assert (report.deleted, report.kept_held) == (0, 1)


def test_a_blob_taken_after_the_mark_is_kept(engine: Engine, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    contents = [noise() for _ in range(4)]
    held, referenced, tombstoned, garbage = (store.put_bytes(data) for data in contents)
    gc.hold_blobs(engine, new_build(engine), [held.sha256])  # after the mark: a running build holds one, ...
    # ... a completion references another
    reference(engine, new_build(engine, "completed"), contents[1])
    with Session(engine) as session:
        session.add(BlobTombstone(sha256=tombstoned.sha256, created_at=utcnow()))  # a collector that died just now
        session.commit()
    old = utcnow() - timedelta(hours=1)
    tally = gc._Tally()
    gc.sweep(engine, store, [ListedBlob(b.sha256, b.size, old) for b in (held, referenced, tombstoned, garbage)],
             tally)
    assert (tally.deleted, tally.deleted_bytes, tally.kept_racing) == (1, garbage.size, 3)
    assert store.stat(garbage.sha256) is None
    assert all(store.stat(b.sha256) is not None for b in (held, referenced, tombstoned))
    assert tombstones(engine) == {tombstoned.sha256}  # its own tombstones are gone, another's is not touched


def test_waiting_for_a_tombstone_is_bounded_and_a_stale_one_is_removed(engine: Engine) -> None:
    build_id = new_build(engine)
    busy, stale = sha(b"busy"), sha(b"stale")
    with Session(engine) as session:
        session.add(BlobTombstone(sha256=busy, created_at=utcnow()))
        long_ago = utcnow() - timedelta(seconds=gc.STALE_TOMBSTONE_SECONDS + 60)
        session.add(BlobTombstone(sha256=stale, created_at=long_ago))
        session.commit()
    with pytest.raises(StorageError, match="being deleted by garbage collection") as err:
        gc.hold_blobs(engine, build_id, [busy], wait_seconds=0.2)
    assert err.value.status == 503 and "retry" in (err.value.hint or "")
    gc.hold_blobs(engine, build_id, [stale, stale])  # a dead collector's tombstone: removed, no wait
    gc.hold_blobs(engine, build_id, [stale])  # holding twice is fine
    with Session(engine) as session:
        holds = session.exec(select(BlobHold.sha256).where(BlobHold.build_id == build_id)).all()
    assert sorted(holds) == sorted([busy, stale]) and tombstones(engine) == {busy}


def test_a_failed_deletion_leaves_no_tombstone_and_no_lock(engine: Engine, tmp_path: Path) -> None:
    store = PausingStore(tmp_path / "store")
    blob = store.put_bytes(noise())
    collection, collected = in_thread(lambda: gc.collect(engine, store, grace_seconds=0))
    assert store.deleting.wait(30)
    path = store.blob_dir / blob.sha256  # the file turns into a directory: unlink fails for real
    path.unlink()
    path.mkdir()
    (path / "inside").write_bytes(b"x")
    store.proceed.set()
    collection.join(30)
    assert isinstance(collected.get("error"), StorageError), collected
    assert tombstones(engine) == set()
    (path / "inside").unlink()
    path.rmdir()
    assert gc.collect(engine, store, grace_seconds=0).blobs == 0  # the lock was released


def test_the_lock_is_lost_when_taken_over(engine: Engine) -> None:
    lock = gc.GcLock.acquire(engine)
    with pytest.raises(ConflictError):
        gc.GcLock.acquire(engine)
    with Session(engine) as session:  # the first one stopped renewing (frozen) until its lock expired
        row = session.get(BlobTombstone, gc.LOCK_KEY)
        assert row is not None
        row.created_at = utcnow() - timedelta(seconds=gc.LOCK_SECONDS + 1)
        session.commit()
    other = gc.GcLock.acquire(engine)
    with pytest.raises(gc.GcRunningError, match="lost its lock"):
        lock.renew()
    lock.release()  # releases nothing of the other's
    assert tombstones(engine) == {gc.LOCK_KEY}
    other.renew()
    other.release()
    assert tombstones(engine) == set()


def test_holds_of_finished_builds_are_released(engine: Engine, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    blob = store.put_bytes(noise())
    running, failed = new_build(engine), new_build(engine)
    gc.hold_blobs(engine, running, [blob.sha256])
    gc.hold_blobs(engine, failed, [blob.sha256])
    with Session(engine) as session:
        build = session.get(Build, failed)
        assert build is not None
        build.status = "failed"
        session.commit()
    report = gc.collect(engine, store, grace_seconds=0)
    assert (report.holds_released, report.kept_held, report.deleted) == (1, 1, 0)
    with Session(engine) as session:
        build = session.get(Build, running)
        assert build is not None
        build.status = "canceled"
        session.commit()
    report = gc.collect(engine, store, grace_seconds=0)
    assert (report.holds_released, report.kept_held, report.deleted) == (1, 0, 1)


# --- iter_blobs and abandoned uploads, both backends ---------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    spool = tmp_path / "spool"
    spool.mkdir()
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3ArtifactStore(endpoint, f"envyard-{uuid.uuid4().hex[:12]}", "artifacts/", "testing", "testing",
                           spool_dir=spool, connect_timeout=2, retries=1)


def spool_dir(store: ArtifactStore) -> Path:
    directory = store.tmp_dir if isinstance(store, LocalArtifactStore) else store.spool_dir  # type: ignore[attr-defined]
    assert directory is not None
    return Path(directory)


def test_iter_blobs_lists_published_blobs_only(store: ArtifactStore) -> None:
    before = utcnow() - timedelta(seconds=2)  # S3 times have whole seconds
    blobs = [store.put_bytes(noise(size)) for size in (0, 10, 5000)]
    writer = store.writer()  # an upload in progress is not a blob
    writer.write(b"partial")
    if isinstance(store, LocalArtifactStore):
        (store.blob_dir / "not-a-digest").write_bytes(b"x")
        (store.blob_dir / ("a" * 64)).mkdir()
    else:
        assert isinstance(store, S3ArtifactStore)
        ticket = store.presigned_upload(60)
        assert ticket is not None and httpx.put(ticket.url, content=b"staged").status_code == 200
    listed = {b.sha256: b for b in store.iter_blobs()}
    after = utcnow() + timedelta(seconds=2)
    assert set(listed) == {b.sha256 for b in blobs}
    for blob in blobs:
        assert listed[blob.sha256].size == blob.size
        assert before <= listed[blob.sha256].modified <= after
    writer.abort()
    store.delete(blobs[0].sha256)
    assert {b.sha256 for b in store.iter_blobs()} == {b.sha256 for b in blobs[1:]}


def test_abandoned_uploads_are_removed(store: ArtifactStore) -> None:
    writer = store.writer()
    writer.write(b"in progress")
    abandoned = spool_dir(store) / "envyard-upload-abandoned"
    abandoned.write_bytes(b"12345")
    long_ago = time.time() - 7200
    os.utime(abandoned, (long_ago, long_ago))
    unrelated = spool_dir(store) / "someone-elses"
    unrelated.write_bytes(b"x")
    os.utime(unrelated, (long_ago, long_ago))
    hour_ago = utcnow() - timedelta(hours=1)
    assert (store.remove_stale_uploads(hour_ago, dry_run=True).count, abandoned.exists()) == (1, True)
    removed = store.remove_stale_uploads(hour_ago)
    assert (removed.count, removed.bytes) == (1, 5)
    assert not abandoned.exists() and unrelated.exists()
    writer.write(b" and on")
    assert store.stat(writer.commit().sha256) is not None  # the upload in progress was not touched
    if isinstance(store, S3ArtifactStore):
        ticket = store.presigned_upload(60)
        assert ticket is not None and httpx.put(ticket.url, content=b"staged").status_code == 200
        assert store.remove_stale_uploads(hour_ago).count == 0  # a fresh staging object stays
        gone = store.remove_stale_uploads(utcnow() + timedelta(minutes=1))
        assert (gone.count, gone.bytes) == (1, len(b"staged"))
        with pytest.raises(NotFoundError, match="no bytes have arrived"):
            store.finish_upload(ticket.upload_id, sha(b"staged"))


def test_gc_on_s3(s3_endpoint: str, engine: Engine, tmp_path: Path) -> None:
    store = S3ArtifactStore(s3_endpoint, f"envyard-{uuid.uuid4().hex[:12]}", "artifacts", "testing", "testing",
                            spool_dir=tmp_path)
    kept, held, garbage = noise(), noise(), noise(3333)
    for data in (kept, held, garbage):
        store.put_bytes(data)
    reference(engine, new_build(engine, "completed"), kept)
    gc.hold_blobs(engine, new_build(engine), [sha(held)])
    dry = gc.collect(engine, store, grace_seconds=0, dry_run=True)
    assert (dry.blobs, dry.referenced, dry.kept_held, dry.deletable, dry.deleted) == (3, 1, 1, 1, 0)
    report = gc.collect(engine, store, grace_seconds=0)
    assert (report.deleted, report.deleted_bytes) == (1, len(garbage))
    assert {b.sha256 for b in store.iter_blobs()} == {sha(kept), sha(held)}
    assert gc.collect(engine, store, grace_seconds=3600).deleted == 0
