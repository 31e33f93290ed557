"""Spec to completed build through a real server and real workers: every artifact downloadable and verified,
on SQLite with the local store and on PostgreSQL with S3 (moto_server); a SIGKILLed worker, a restarted API,
and a cancel in each stage."""

from __future__ import annotations

import hashlib
import signal
import time
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, create_environment

S3_ENV = {"ENVYARD_S3_ACCESS_KEY": "testing", "ENVYARD_S3_SECRET_KEY": "testing"}


def create(http: httpx.Client, name: str, deps: list[str], **extra: Any) -> dict[str, Any]:
    return create_environment(http, "lab", name, deps, **extra)


def verify_artifacts(http: httpx.Client, build: dict[str, Any]) -> list[dict[str, Any]]:
    artifacts: list[dict[str, Any]] = http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
    for artifact in artifacts:
        body = http.get(artifact["url"]).content
        assert len(body) == artifact["size"], artifact["name"]
        assert f"sha256:{hashlib.sha256(body).hexdigest()}" == artifact["digest"], artifact["name"]
    return artifacts


def test_full_flow_sqlite_local_store(start: Any, database: str) -> None:
    if database:
        pytest.skip("the PostgreSQL flow runs with S3 below")
    service: Service = start("--workers", "1")
    with service.client() as http:
        build = create(http, "flow", ["e2e-env"])
        done = service.wait_for(build["id"])
        assert done["status"] == "completed", http.get(f"/api/v1/builds/{build['id']}/logs").text
        assert [k for k in ("solving_at", "installing_at", "imaging_at", "pushing_at", "finished_at")
                if done["timestamps"][k] is None] == []
        artifacts = verify_artifacts(http, done)
        kinds = {a["kind"] for a in artifacts}
        assert {"conda-lock", "pixi-lock", "explicit", "environment", "archive", "sbom", "oci-index",
                "oci-blob"} <= kinds
        index = next(a for a in artifacts if a["kind"] == "oci-index")
        assert index["digest"] == done["image_digest"]
        assert done["image_reference"].endswith(f"lab/flow@{done['image_digest']}")
        lock_text = http.get(f"/api/v1/builds/{done['id']}/artifacts/conda-lock.yml").text
        assert "name: e2e-env" in lock_text and done["package_count"] == 5
        log = http.get(f"/api/v1/builds/{done['id']}/logs").text
        assert "claimed by worker" in log and "stored" in log
        env = http.get("/api/v1/environments/lab/flow").json()
        assert env["current_build"]["id"] == done["id"]
        again = create(http, "flow", ["e2e-env"])
        assert again["reused"] and again["id"] == done["id"]


def test_full_flow_postgresql_s3(start: Any, database: str, s3_endpoint: str) -> None:
    if not database:
        pytest.skip("the SQLite flow runs with the local store above")
    service: Service = start("--workers", "1", "--storage", f"s3://envyard-{time.monotonic_ns()}/artifacts",
                             env={**S3_ENV, "ENVYARD_S3_ENDPOINT_URL": s3_endpoint})
    with service.client() as http:
        build = create(http, "flow", ["e2e-env"])
        done = service.wait_for(build["id"])
        assert done["status"] == "completed", http.get(f"/api/v1/builds/{build['id']}/logs").text
        verify_artifacts(http, done)
        archive = next(a for a in http.get(f"/api/v1/builds/{done['id']}/artifacts").json() if a["kind"] == "archive")
        redirect = http.get(archive["url"], params={"presigned": "true"}, follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(s3_endpoint)
        assert hashlib.sha256(httpx.get(redirect.headers["location"]).content).hexdigest() == archive["digest"][7:]


def test_killed_worker_build_completes_elsewhere(start: Any) -> None:
    service: Service = start("--workers", "0", env={"ENVYARD_LEASE_SECONDS": "3"})
    with service.client() as http:
        build = create(http, "killed", ["e2e-env"])
        first = service.start_worker("doomed")
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/builds/{build['id']}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert http.get(f"/api/v1/builds/{build['id']}/artifacts").json() == []
        service.start_worker("rescuer")
        done = service.wait_for(build["id"], timeout=120)
        assert done["status"] == "completed" and done["attempt"] == 2 and done["worker"] == "rescuer"
        verify_artifacts(http, done)
        assert "stopped responding" in http.get(f"/api/v1/builds/{build['id']}/logs").text


def test_api_restart_mid_build_loses_nothing(start: Any, tmp_path: Any) -> None:
    service: Service = start("--workers", "0", env={"ENVYARD_LEASE_SECONDS": "20"})
    port = int(service.url.rsplit(":", 1)[1])
    with service.client() as http:
        build = create(http, "restart", ["e2e-env"])
    service.start_worker("steady")
    service.wait_for(build["id"], {"solving", "installing", "imaging", "pushing", "completed"})
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(timeout=30)
    time.sleep(1.0)
    restarted: Service = start("--workers", "0", port=port)
    restarted.workers = service.workers
    service.workers = []
    done = restarted.wait_for(build["id"], timeout=120)
    assert done["status"] == "completed"
    with restarted.client() as http:
        verify_artifacts(http, done)


@pytest.mark.parametrize("stage", ["solving", "installing", "imaging", "pushing"])
def test_cancel_in_each_stage(start: Any, database: str, stage: str) -> None:
    if database:
        pytest.skip("stage cancels run on SQLite; the protocol test covers PostgreSQL")
    service: Service = start("--workers", "1", env={"ENVYARD_TEST_STAGE_DELAY": f"{stage}=30"})
    with service.client() as http:
        build = create(http, f"cancel-{stage}", ["e2e-env"])
        service.wait_for(build["id"], {stage}, timeout=60)
        asked = time.monotonic()
        http.post(f"/api/v1/builds/{build['id']}/cancel")
        done = service.wait_for(build["id"], timeout=20)
        assert done["status"] == "canceled" and time.monotonic() - asked < 10
        assert http.get(f"/api/v1/builds/{build['id']}/artifacts").json() == []
