"""A cancel storm (issue 11, item 7): cancels racing completions through the real worker protocol over HTTP, on
SQLite and PostgreSQL. A build whose cancel was answered 200 must end canceled, never completed or current."""

from __future__ import annotations

import concurrent.futures
import hashlib
import random
import threading
import time
from typing import Any

from envyard.builder.errors import BuildCanceledError
from envyard.worker.client import ApiClient
from envyard.worker.protocol import Completion
from tests.service.conftest import create_environment

BUILDS = 60
WORKERS = 6


def test_cancel_storm_never_completes_a_canceled_build(start: Any) -> None:
    service = start("--workers", "0")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        def submit(i: int) -> int:
            with service.client() as own:
                return int(create_environment(own, "storm", f"s{i}", ["e2e-env"])["id"])

        ids = list(pool.map(submit, range(BUILDS)))
    payload = b"lock contents\n" * 100
    digest = hashlib.sha256(payload).hexdigest()
    blob = service.log_dir / "artifact"
    blob.write_bytes(payload)
    body = {"artifacts": [{"kind": "conda-lock", "name": "conda-lock.yml", "platform": None, "sha256": digest,
                           "size": len(payload), "media_type": "application/yaml"}], "packages": []}
    ready = {b: threading.Event() for b in ids}
    go = {b: threading.Event() for b in ids}
    completions: dict[int, str] = {}
    rng = random.Random(11)
    delays = {b: (rng.random() * 0.06, rng.random() * 0.06) for b in ids}  # (complete, cancel) after the signal

    def work(n: int) -> None:
        client = ApiClient(service.url, service.token, retry_seconds=5)
        try:
            while (job := client.claim(f"storm-{n}", None, 0)) is not None:
                build, lease = job.build_id, job.lease_id
                client.stage(build, lease, "installing")
                client.upload(build, lease, blob, digest, len(payload))
                ready[build].set()
                go[build].wait(30)
                time.sleep(delays[build][0])
                try:
                    client.complete(build, lease, Completion.model_validate(body))
                    completions[build] = "completed"
                except BuildCanceledError:
                    completions[build] = "refused: canceled"
        finally:
            client.close()

    def cancel(build: int) -> tuple[int, int]:
        with service.client() as own:
            own.get("/healthz")  # connected before the race starts
            assert ready[build].wait(60), f"build {build} was never claimed"
            go[build].set()
            time.sleep(delays[build][1])
            return build, own.post(f"/api/v1/builds/{build}/cancel").status_code

    with concurrent.futures.ThreadPoolExecutor(BUILDS + WORKERS) as pool:
        workers = [pool.submit(work, n) for n in range(WORKERS)]
        replies = dict(pool.map(cancel, ids))
        for worker in workers:
            worker.result()

    assert set(replies.values()) <= {200, 409}, replies
    accepted = {b for b, status in replies.items() if status == 200}
    with service.client() as http:
        final = {b: http.get(f"/api/v1/builds/{b}").json() for b in ids}
        currents = {e["current_build"]["id"] for e in http.get("/api/v1/environments", params={
            "namespace": "storm", "limit": 500}).json()["items"] if e["current_build"]}
    wrong = {b: (final[b]["status"], completions.get(b)) for b in accepted
             if final[b]["status"] != "canceled" or final[b]["current"] or b in currents}
    assert not wrong, f"builds canceled with a 200 that completed or became current: {wrong}"
    assert all(completions[b] == "refused: canceled" for b in accepted)
    for build in set(ids) - accepted:  # a 409 to the cancel: the completion had won
        assert final[build]["status"] == "completed" and completions[build] == "completed"
    assert accepted and len(accepted) < BUILDS, f"the storm raced nothing: {len(accepted)} of {BUILDS} accepted"
