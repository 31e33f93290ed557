"""One user's hostile load (issue 11, item 5) against a real server: 150 log streams held open and a stream of
slow-to-parse submissions must not exhaust the database pool, slow ``/healthz`` or break the worker protocol;
per-token limits answer 429 with the limit, its use and Retry-After."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import httpx
import pytest

from envyard.worker.client import ApiClient
from tests.service.conftest import Service, create_environment, spec_text

STREAMS = 150


def user_token(service: Service, name: str) -> tuple[int, str]:
    with service.client() as http:
        created = http.post("/api/v1/tokens", json={"name": name, "role": "user"})
        assert created.status_code in (200, 201), created.text
        return int(created.json()["id"]), str(created.json()["token"])


def slow_spec(n: int, keys: int = 3000) -> str:
    """A valid spec whose many ``variables`` keys are slow to parse (quadratic duplicate-key checks make it
    seconds; a linear parser or a key limit makes it fast or a 422 — either way it must not hurt others)."""
    return spec_text(["e2e-env"], f"slow{n}") + "variables:\n" + "".join(f"  V{i}_{n}: x\n" for i in range(keys))


class Streams:
    """``count`` follow streams of one build, read in one event loop on a thread of the test."""

    def __init__(self, service: Service, token: str, build_id: int, count: int) -> None:
        self.service, self.token, self.build_id, self.count = service, token, build_id, count
        self.opened = threading.Event()
        self.statuses: list[int] = []
        self.texts: list[str] = [""] * count
        self.ended = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _one(self, client: httpx.AsyncClient, index: int, started: list[int]) -> None:
        async with client.stream("GET", f"/api/v1/builds/{self.build_id}/logs", params={"follow": "true"}) as reply:
            self.statuses.append(reply.status_code)
            started.append(index)
            if len(started) == self.count:
                self.opened.set()
            if reply.status_code != 200:
                return
            async for text in reply.aiter_text():
                self.texts[index] += text
                if "event: end" in self.texts[index]:
                    self.ended += 1
                    return

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.count + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.service.url, limits=limits, timeout=120,
                                     headers={"Authorization": f"Bearer {self.token}"}) as client:
            started: list[int] = []
            await asyncio.gather(*(self._one(client, i, started) for i in range(self.count)))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_streams_and_slow_submissions_leave_healthz_and_workers_alone(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_MAX_LOG_STREAMS_PER_TOKEN": str(STREAMS + 10)})
    _, token = user_token(service, "hostile")
    with service.client(token) as http:
        build = create_environment(http, "hostile", "base", ["e2e-env"])["id"]
    worker = ApiClient(service.url, service.token, retry_seconds=0)
    job = worker.claim("steady", None, 0)
    assert job is not None and job.build_id == build
    lease = job.lease_id

    streams = Streams(service, token, build, STREAMS)
    streams.thread.start()
    assert streams.opened.wait(60), f"only {len(streams.statuses)} of {STREAMS} streams opened"
    assert streams.statuses == [200] * STREAMS

    stop = threading.Event()
    submissions: list[int] = []

    def submit(n: int) -> None:
        with service.client(token) as own:
            i = 0
            while not stop.is_set():
                reply = own.post("/api/v1/environments/hostile/base/builds", json={"spec": slow_spec(n * 1000 + i)})
                submissions.append(reply.status_code)
                i += 1

    heartbeats: list[float] = []

    def keep_lease() -> None:  # the running build's worker: heartbeat and log twice a second
        tick = 0
        while not stop.wait(0.5):
            started = time.monotonic()
            reply = worker.heartbeat(build, lease, retry=False)
            heartbeats.append(time.monotonic() - started)
            assert reply.cancel_requested is False
            worker.append_logs(build, lease, f"tick {tick}\n")
            tick += 1

    latencies: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        loads = [pool.submit(submit, n) for n in range(6)] + [pool.submit(keep_lease)]
        with httpx.Client(base_url=service.url, timeout=30) as probe:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.05)
        stop.set()
        for load in loads:
            load.result()

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1.0, f"/healthz p99 {p99:.3f} s under load (max {latencies[-1]:.3f} s)"
    assert len(heartbeats) >= 5 and max(heartbeats) < 3.0, heartbeats  # the lease (6 s) was never at risk
    assert submissions and set(submissions) <= {200, 201, 422, 429}, sorted(set(submissions))
    with service.client() as http:
        assert http.get(f"/api/v1/builds/{build}").json()["status"] == "solving"  # still leased, never requeued
        assert http.get("/readyz").status_code == 200
    worker.fail(build, lease, "test", "solving", "stopped by the test", None)
    streams.thread.join(60)
    assert streams.ended == STREAMS  # every stream saw the ticks and the end, from one shared poller
    assert all("tick 4" in text and '"status": "failed"' in text for text in streams.texts)
    assert "QueuePool limit" not in (service.log_dir / "serve.log").read_text()
    worker.close()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_per_token_limits_answer_429_with_retry_after(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_MAX_LOG_STREAMS_PER_TOKEN": "3",
                                           "ENVYARD_MAX_SUBMISSIONS_PER_TOKEN": "1",
                                           "ENVYARD_SPEC_CHECK_PROCESSES": "1",
                                           "ENVYARD_MAX_WAITING_BUILDS_PER_TOKEN": "2"})
    (_, token), (other_id, other) = user_token(service, "greedy"), user_token(service, "other")
    with service.client(token) as http:
        build = create_environment(http, "greedy", "base", ["e2e-env"])["id"]
        url = f"/api/v1/builds/{build}/logs?follow=true"
        with http.stream("GET", url) as s1, http.stream("GET", url) as s2, http.stream("GET", url) as s3:
            assert [s.status_code for s in (s1, s2, s3)] == [200, 200, 200]
            refused = http.get(url)
            assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["Retry-After"]) > 0
            problem = refused.json()
            assert problem["type"].endswith("/too-many-requests") and problem["field"] == "max_log_streams_per_token"
            assert problem["details"] == {"limit": "max_log_streams_per_token", "maximum": 3, "in_use": 3,
                                          "retry_after": int(refused.headers["Retry-After"])}
            assert "3 of 3" in problem["detail"]
            with service.client() as admin:  # the limit is per token: another token still streams
                granted = admin.put(f"/api/v1/namespaces/greedy/grants/{other_id}", json={"role": "viewer"})
                assert granted.status_code == 200, granted.text
            with service.client(other) as http2, http2.stream("GET", url) as s4:
                assert s4.status_code == 200
        deadline = time.monotonic() + 10  # closed streams give their slots back
        while True:
            with http.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed streams' slots were never given back"
            time.sleep(0.2)

        # submissions being checked: one at a time for this token
        barrier = threading.Barrier(6)

        def submit(n: int) -> int:
            with service.client(token) as own:
                barrier.wait()
                return own.post("/api/v1/environments/greedy/base/builds",
                                json={"spec": slow_spec(n, 1500)}).status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(submit, range(6)))
        assert 429 in codes and set(codes) <= {201, 200, 422, 429}, codes

        # builds waiting: at most 2 queued or running per token
        for build_id in [b["id"] for b in http.get("/api/v1/builds", params={"status": "queued"}).json()["items"]]:
            http.post(f"/api/v1/builds/{build_id}/cancel")
        for n in range(2):
            assert http.post("/api/v1/environments/greedy/base/builds",
                             json={"spec": spec_text(["e2e-env"], f"w{n}")}).status_code == 201
        full = http.post("/api/v1/environments/greedy/base/builds", json={"spec": spec_text(["e2e-env"], "w2")})
        assert full.status_code == 429 and full.json()["details"]["in_use"] == 2
        assert full.json()["field"] == "max_waiting_builds_per_token" and "Retry-After" in full.headers

