"""Namespace quotas and the per-user submission rate on a real ``envyard serve`` (SQLite and PostgreSQL): 20
submissions at once never get past a quota, the refusals are 429/403 problems naming the quota and its use, and a
submission at 80 % or more of a quota starts its build log with a warning."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.service.conftest import create_environment, spec_text

SUBMISSIONS = 20


def _submit_at_once(service: Any, namespace: str) -> list[httpx.Response]:
    """SUBMISSIONS different environments of ``namespace`` submitted by as many threads at the same moment."""
    clients = [service.client() for _ in range(SUBMISSIONS)]
    try:
        def submit(index: int) -> httpx.Response:
            return clients[index].post("/api/v1/environments", json={
                "namespace": namespace, "name": f"e{index}", "spec": spec_text(["busybox"], f"e{index}")})

        with ThreadPoolExecutor(SUBMISSIONS) as pool:
            return list(pool.map(submit, range(SUBMISSIONS)))
    finally:
        for client in clients:
            client.close()


def _set_quota(http: httpx.Client, namespace: str, **values: Any) -> dict[str, Any]:
    response = http.put(f"/api/v1/namespaces/{namespace}/quota", json=values)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_concurrent_build_quota_holds_under_20_simultaneous_submissions(start: Any) -> None:
    service = start("--workers", "0")  # no worker: every build accepted stays queued
    with service.client() as http:
        assert http.post("/api/v1/namespaces", json={"name": "team"}).status_code == 201
        _set_quota(http, "team", concurrent_builds=5)
        responses = _submit_at_once(service, "team")
        accepted = [r for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code != 201]
        assert len(accepted) == 5, [r.text for r in responses]
        for response in refused:
            assert response.status_code == 429, response.text
            problem = response.json()
            assert problem["details"] == {"quota": "concurrent_builds", "limit": 5, "in_use": 5, "retry_after": 30}
            assert "5 of 5 builds queued or running" in problem["detail"]
            assert response.headers["retry-after"] == "30"
        queued = http.get("/api/v1/builds", params={"status": "queued"}).json()["items"]
        assert sorted(b["id"] for b in queued) == sorted(r.json()["id"] for r in accepted)
        logs = [http.get(f"/api/v1/builds/{r.json()['id']}/logs").text for r in accepted]
        warned = [log for log in logs if "warning: builds queued or running at" in log]
        assert len(warned) == 2, logs  # the 4th (80 %) and 5th (100 %) build
        # a canceled build frees its place
        assert http.post(f"/api/v1/builds/{accepted[0].json()['id']}/cancel").status_code == 200
        create_environment(http, "team", "after-cancel", ["busybox"])
        rebuilt = http.post(f"/api/v1/builds/{accepted[1].json()['id']}/rebuild")  # a rebuild is held to it too
        assert rebuilt.status_code == 429 and rebuilt.json()["details"]["quota"] == "concurrent_builds"
        quota = http.get("/api/v1/namespaces/team/quota").json()
        assert quota["concurrent_builds"] == 5 and quota["storage_used"] == 0


def test_the_submission_rate_holds_under_20_simultaneous_submissions(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        assert http.post("/api/v1/namespaces", json={"name": "team"}).status_code == 201
        _set_quota(http, "team", submissions_per_minute=7)
        while time.time() % 60 > 45:  # the counter's minute must not turn over during the burst
            time.sleep(1)
        responses = _submit_at_once(service, "team")
        assert sorted(r.status_code for r in responses) == [201] * 7 + [429] * 13, [r.text for r in responses]
        problem = next(r.json() for r in responses if r.status_code == 429)
        assert problem["details"]["quota"] == "submissions_per_minute"
        assert problem["details"]["limit"] == 7 and problem["details"]["in_use"] == 7
        assert "7 of 7 builds allowed per minute" in problem["detail"]
        # lifting the quota lets the same user submit again
        _set_quota(http, "team", submissions_per_minute=None)
        create_environment(http, "team", "after", ["busybox"])
        audit = http.get("/api/v1/admin/audit", params={"action": "quota."}).json()["items"]
        assert [event["after"]["submissions_per_minute"] for event in audit][:2] in ([None, 7], [7, None])


# the storage quota's figures are the same on PostgreSQL (the concurrency tests run there)
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_storage_quota_warns_at_80_percent_and_refuses_when_used_up(start: Any) -> None:
    service = start()  # with its in-process worker
    with service.client() as http:
        first = service.wait_for(create_environment(http, "team", "base", ["busybox"])["id"])
        assert first["status"] == "completed"
        used = http.get("/api/v1/namespaces/team/quota").json()["storage_used"]
        artifacts = http.get(f"/api/v1/builds/{first['id']}/artifacts").json()
        assert used == sum({a["digest"]: a["size"] for a in artifacts}.values()) > 0
        _set_quota(http, "team", storage_bytes=int(used / 0.9))
        warned = create_environment(http, "team", "second", ["reloc-data"])
        log = http.get(f"/api/v1/builds/{warned['id']}/logs").text
        assert "envyard: warning: storage at 90% of its quota" in log, log
        service.wait_for(warned["id"])
        used = http.get("/api/v1/namespaces/team/quota").json()["storage_used"]
        _set_quota(http, "team", storage_bytes=used)
        response = http.post("/api/v1/environments", json={"namespace": "team", "name": "third",
                                                           "spec": spec_text(["python"], "third")})
        assert response.status_code == 403, response.text
        problem = response.json()
        assert problem["type"].endswith("/quota-exceeded")
        assert problem["details"] == {"quota": "storage_bytes", "limit": used, "in_use": used}
        assert "storage quota is used up" in problem["detail"]
        # another namespace is not affected
        create_environment(http, "other", "x", ["python"])
