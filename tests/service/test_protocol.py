"""The worker protocol against a real server (SQLite and PostgreSQL): leases, heartbeats, requeue with
backoff, time limits, cancel, verified completion, and concurrent claims that never hand a build out twice."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from typing import Any

import httpx
import pytest

from envyard.builder.errors import ConflictError, LeaseLostError
from envyard.worker.client import ApiClient
from envyard.worker.protocol import Completion
from tests.service.conftest import Service, create_environment


def submit(http: httpx.Client, name: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return create_environment(http, "team", name, deps or ["e2e-env"], **extra)


def worker_client(service: Service) -> ApiClient:
    return ApiClient(service.url, service.token, retry_seconds=5)


def test_submit_reuses_identical_spec_and_validates(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        first = submit(http, "alpha")
        again = submit(http, "alpha")
        assert (again["id"], again["reused"], first["reused"]) == (first["id"], True, False)
        relocked = submit(http, "alpha", relock=True)
        assert relocked["id"] != first["id"] and not relocked["reused"]
        other_platform = submit(http, "alpha", platforms=["linux-aarch64"])
        assert other_platform["id"] not in (first["id"], relocked["id"])
        bad = http.post("/api/v1/environments", json={"namespace": "team", "name": "beta",
                                                      "spec": "dependencies:\n  - python\n  bad: [\n"})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["file"] == "environment.yml" and bad.json()["line"] == 3
        unknown = http.post("/api/v1/environments", json={"namespace": "team", "name": "beta",
                                                          "spec": "dependencies: [python]\n",
                                                          "platforms": ["linux-65"]})
        assert unknown.status_code == 422 and unknown.json()["field"] == "platforms"
        assert http.get("/api/v1/environments/team/beta").status_code == 404  # nothing half-created


def test_claim_heartbeat_stage_and_verified_completion(start: Any) -> None:
    service = start("--workers", "0")
    client = worker_client(service)
    with service.client() as http:
        build = submit(http, "gamma")
        job = client.claim("w1", None, 0)
        assert job is not None and job.build_id == build["id"] and job.attempt == 1
        assert client.claim("w2", None, 0) is None  # never handed out twice
        lease = job.lease_id
        client.stage(build["id"], lease, "installing")
        with pytest.raises(ConflictError):
            client.stage(build["id"], lease, "solving")  # no going back
        client.append_logs(build["id"], lease, "line one\nline two\n")
        assert client.heartbeat(build["id"], lease).cancel_requested is False
        payload = b"conda-lock contents\n" * 1000
        digest = hashlib.sha256(payload).hexdigest()
        artifact = {"kind": "conda-lock", "name": "conda-lock.yml", "platform": None, "sha256": digest,
                    "size": len(payload), "media_type": "application/yaml"}
        body = {"artifacts": [artifact], "packages": [
            {"platform": "linux-64", "manager": "conda", "name": "busybox", "version": "1.36.1", "build": "0"}]}
        with pytest.raises(ConflictError, match="not stored"):
            client.complete(build["id"], lease, Completion.model_validate(body))  # artifacts must be stored first
        wrong = http.put(f"/api/v1/jobs/{build['id']}/blobs/sha256:{'0' * 64}",
                         params={"lease_id": lease, "size": len(payload)}, content=payload)
        assert wrong.status_code == 422 and wrong.json()["type"].endswith("artifact-integrity")
        tmp = service.log_dir / "artifact"
        tmp.write_bytes(payload)
        assert client.upload(build["id"], lease, tmp, digest, len(payload)) is True
        assert client.upload(build["id"], lease, tmp, digest, len(payload)) is False  # already stored
        assert http.get(f"/api/v1/builds/{build['id']}/artifacts").json() == []  # nothing visible yet
        done = client.complete(build["id"], lease, Completion.model_validate(body))
        assert done["status"] == "completed" and done["current"] is True and done["package_count"] == 1
        listed = http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
        assert [a["digest"] for a in listed] == [f"sha256:{digest}"]
        assert http.get(listed[0]["url"]).content == payload
        assert http.get(f"/api/v1/blobs/sha256:{digest}").content == payload
        assert "line one\nline two\n" in http.get(f"/api/v1/builds/{build['id']}/logs").text
        with pytest.raises(LeaseLostError):
            client.heartbeat(build["id"], lease)
        found = http.get("/api/v1/environments", params={"package": "busybox", "package_version": "1.36.1"}).json()
        assert [e["name"] for e in found["items"]] == ["gamma"]
        assert http.get("/api/v1/environments", params={"package": "busybox",
                                                        "package_version": "9"}).json()["items"] == []


def test_expired_lease_requeues_with_backoff_then_fails(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_LEASE_SECONDS": "1", "ENVYARD_MAX_ATTEMPTS": "2",
                                           "ENVYARD_RETRY_BACKOFF_SECONDS": "1"})
    client = worker_client(service)
    with service.client() as http:
        build = submit(http, "delta")
        first = client.claim("lost-worker", None, 0)
        assert first is not None
        time.sleep(1.5)  # no heartbeat: the lease expires
        second = client.claim("w2", None, 5)  # requeued, then claimable after the backoff
        assert second is not None and second.build_id == build["id"] and second.attempt == 2
        with pytest.raises(LeaseLostError):
            client.heartbeat(build["id"], first.lease_id, retry=False)  # the old worker is out
        time.sleep(1.5)
        failed = service.wait_for(build["id"], timeout=15)
        assert failed["status"] == "failed" and failed["error"]["code"] == "worker-lost"
        log = http.get(f"/api/v1/builds/{build['id']}/logs").text
        assert "requeued (attempt 1 of 2" in log and "attempt 2 was the last" in log


def test_time_limit_fails_the_build(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_BUILD_TIME_LIMIT_SECONDS": "1"})
    client = worker_client(service)
    with service.client() as http:
        build = submit(http, "epsilon")
        job = client.claim("slow", None, 0)
        assert job is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                client.heartbeat(build["id"], job.lease_id, retry=False)
            except LeaseLostError:
                break
            time.sleep(0.2)
        failed = service.wait_for(build["id"], timeout=5)
        assert failed["error"]["code"] == "build-timeout" and "time limit" in failed["error"]["message"]


def test_cancel_queued_and_running(start: Any) -> None:
    service = start("--workers", "0")
    client = worker_client(service)
    with service.client() as http:
        queued = submit(http, "zeta")
        canceled = http.post(f"/api/v1/builds/{queued['id']}/cancel").json()
        assert canceled["status"] == "canceled"
        assert http.post(f"/api/v1/builds/{queued['id']}/cancel").status_code == 409
        running = submit(http, "eta")
        job = client.claim("w", None, 0)
        assert job is not None and job.build_id == running["id"]
        assert http.post(f"/api/v1/builds/{running['id']}/cancel").json()["cancel_requested"] is True
        assert client.heartbeat(running["id"], job.lease_id).cancel_requested is True
        client.canceled(running["id"], job.lease_id)
        assert http.get(f"/api/v1/builds/{running['id']}").json()["status"] == "canceled"


def test_fifty_concurrent_submissions_claimed_once_each(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        def one(i: int) -> int:
            with service.client() as own:
                return int(submit(own, f"env{i}", ["busybox"])["id"])

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(one, range(50)))
        assert len(set(ids)) == 50

        def claimer(n: int) -> list[int]:
            client = worker_client(service)
            got = []
            while (job := client.claim(f"c{n}", None, 0)) is not None:
                got.append(job.build_id)
                client.fail(job.build_id, job.lease_id, "test", "solving", "stopped by the test", None)
            return got

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            claimed = [b for got in pool.map(claimer, range(4)) for b in got]
        assert sorted(claimed) == sorted(ids)  # every build claimed exactly once
        statuses = {b["status"] for b in http.get("/api/v1/builds", params={"limit": 100}).json()["items"]}
        assert statuses == {"failed"}


def test_pagination_auth_and_problem_details(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        for i in range(7):
            submit(http, f"page{i}", ["busybox"])
        names, cursor = [], None
        while True:
            page = http.get("/api/v1/environments", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            names += [e["name"] for e in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert names == [f"page{i}" for i in range(7)]
        assert http.get("/api/v1/environments", params={"cursor": "garbage"}).json()["field"] == "cursor"
        reader = http.post("/api/v1/tokens", json={"name": "ro", "role": "reader"}).json()["token"]
    with service.client(reader) as ro:
        assert ro.get("/api/v1/environments").status_code == 200
        denied = ro.post("/api/v1/namespaces", json={"name": "x"})
        assert denied.status_code == 403 and denied.json()["type"].endswith("forbidden")
        assert ro.post("/api/v1/jobs/claim", json={"worker": "x"}).status_code == 403
    anonymous = httpx.get(f"{service.url}/api/v1/environments")
    assert anonymous.status_code == 401 and "ENVYARD_TOKEN" in anonymous.json()["hint"]
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert (service.data_dir / "admin-token").stat().st_mode & 0o777 == 0o600
