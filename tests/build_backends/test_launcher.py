"""The Kubernetes build launcher end to end: a real ``envyard serve --build-backend external``, the real launcher
(in this process, on the server's database and secret key) and Jobs run by :class:`LocalNodes` as local
``envyard worker --once`` processes with the Job's command, environment and build-scoped token."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from envyard.api.auth.secret_key import load_or_create_secret_key
from envyard.api.build_backends.launcher import Launcher
from envyard.api.db import make_engine
from envyard.api.settings import ServiceSettings
from tests.build_backends.conftest import LocalNodes
from tests.service.conftest import Service, create_environment

MAX_JOBS = 2


def launcher_for(service: Service, nodes: LocalNodes, tmp: Path, alias: str, delay: str = "installing=3") -> Launcher:
    settings = ServiceSettings(
        _env_file=None, api_url=service.url, lease_seconds=6, retry_backoff_seconds=0.5,
        kubernetes_max_jobs=MAX_JOBS, kubernetes_poll_seconds=0.3, kubernetes_job_start_seconds=60,
        kubernetes_cache_path=str(tmp / "cache"), kubernetes_work_path=str(tmp / "work"),
        kubernetes_worker_env={"ENVYARD_CHANNEL_ALIAS": alias, "ENVYARD_TEST_STAGE_DELAY": delay},
    )
    engine = make_engine(f"sqlite:///{service.data_dir / 'envyard.db'}")
    secret = load_or_create_secret_key(None, service.data_dir / "secret-key")
    return Launcher(engine, settings, secret, nodes)


def test_builds_run_as_jobs_and_a_lost_node_is_requeued(service: Service, nodes: LocalNodes, tmp_path: Path,
                                                        e2e_alias: str) -> None:
    launcher = launcher_for(service, nodes, tmp_path, e2e_alias)
    stop = threading.Event()
    thread = threading.Thread(target=launcher.run, args=(stop,), daemon=True)
    with service.client() as http:
        builds = [create_environment(http, "k8s", f"env{i}", ["e2e-env"] if i % 2 else ["pyhello"])
                  for i in range(4)]
        thread.start()
        try:
            victim = builds[0]["id"]
            service.wait_for(victim, {"installing"}, timeout=120)
            first = f"envyard-build-{victim}-1"
            assert first in nodes.jobs
            nodes.vanish(first)  # the node dies with the build held in its installing stage
            done = [service.wait_for(b["id"], timeout=240) for b in builds]
        finally:
            stop.set()
            thread.join(timeout=30)
        assert [d["status"] for d in done] == ["completed"] * 4, [http.get(f"/api/v1/builds/{d['id']}/logs").text
                                                                  for d in done if d["status"] != "completed"]
        log = http.get(f"/api/v1/builds/{victim}/logs").text
        assert f"claimed by worker envyard-build-{victim}-1" in log
        assert f"claimed by worker envyard-build-{victim}-2" in log
    assert done[0]["attempt"] == 2
    assert nodes.created.count(first) == 1 and f"envyard-build-{victim}-2" in nodes.created
    assert len(nodes.created) == len(set(nodes.created)) == 5  # one Job per attempt: 4 builds, 1 retry
    assert nodes.conflicts == []
    assert nodes.max_active == MAX_JOBS  # reached, never passed
    codes = nodes.exit_codes()
    assert all(code == 0 for code in codes.values()), codes  # each worker --once exited 0: completed


def test_the_launcher_deletes_jobs_that_cannot_progress(service: Service, nodes: LocalNodes, tmp_path: Path,
                                                        e2e_alias: str) -> None:
    """A reconcile never creates a second Job for an attempt; a canceled build's worker confirms and ends; a Job
    that ended before claiming its build (a broken container) is deleted and created again."""
    launcher = launcher_for(service, nodes, tmp_path, e2e_alias, delay="solving=60")
    with service.client() as http:
        build = create_environment(http, "k8s", "held", ["pyhello"])
        first = launcher.reconcile()
        name = f"envyard-build-{build['id']}-1"
        assert first.created == [name]
        assert launcher.reconcile().created == []  # the attempt has its Job: never a second one
        service.wait_for(build["id"], {"solving"}, timeout=60)
        assert http.post(f"/api/v1/builds/{build['id']}/cancel").status_code in (200, 202)
        service.wait_for(build["id"], {"canceled"}, timeout=60)
        deadline = time.monotonic() + 60
        while nodes.exit_codes()[name] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert nodes.exit_codes()[name] == 0  # the worker confirmed the cancel and ended: canceled is final

        other = create_environment(http, "k8s", "pending", ["pyhello"])
        nodes.created.clear()
        # a Job for the next attempt that ended without claiming (e.g. its pod never got to envyard) ...
        job_name = f"envyard-build-{other['id']}-1"
        real_create = nodes.create_job
        nodes.create_job = lambda job, secret: _create_failing(nodes, job, secret)  # type: ignore[method-assign]
        assert launcher.reconcile().created == [job_name]
        deadline = time.monotonic() + 30
        while nodes.exit_codes().get(job_name) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        nodes.create_job = real_create  # type: ignore[method-assign]
        again = launcher.reconcile()
        assert again.deleted == [job_name] and again.created == [job_name]  # ... is replaced in the same pass
        assert service.wait_for(other["id"], {"solving"}, timeout=60)["attempt"] == 1
    assert nodes.created == [job_name, job_name]


def _create_failing(nodes: LocalNodes, job: Any, secret: Any) -> bool:
    """Create the Job with a container that exits 1 before running envyard (a broken image)."""
    job.spec.template.spec.containers[0].command = ["envyard", "--no-such-option"]
    return LocalNodes.create_job(nodes, job, secret)


def test_two_launchers_never_create_two_jobs_for_one_attempt(service: Service, nodes: LocalNodes, tmp_path: Path,
                                                             e2e_alias: str) -> None:
    """Two API replicas each run a launcher: the deterministic Job names make the API server refuse (409) the
    second Job of an attempt, which the losing launcher takes as done."""
    launchers = [launcher_for(service, nodes, tmp_path, e2e_alias, delay="solving=60") for _ in range(2)]
    with service.client() as http:
        builds = [create_environment(http, "race", f"env{i}", ["pyhello"]) for i in range(MAX_JOBS)]
    start = threading.Barrier(2)
    passes: list[Any] = []

    def race(launcher: Launcher) -> None:
        start.wait()
        passes.append(launcher.reconcile())

    threads = [threading.Thread(target=race, args=(launcher,)) for launcher in launchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = sorted(f"envyard-build-{b['id']}-1" for b in builds)
    assert sorted(nodes.created) == expected  # each attempt's Job once
    assert sorted(name for p in passes for name in p.created) == expected
    assert sorted(nodes.conflicts) == sorted(set(nodes.conflicts))
    assert all(launcher.reconcile().created == [] for launcher in launchers)


def test_pending_jobs_count_and_a_canceled_builds_job_is_deleted(service: Service, nodes: LocalNodes,
                                                                 tmp_path: Path, e2e_alias: str) -> None:
    """Jobs whose pods are not scheduled count against the limit; canceling a build that is still queued deletes
    its Job, which frees a place for the next build."""
    nodes.pending = True
    launcher = launcher_for(service, nodes, tmp_path, e2e_alias)
    with service.client() as http:
        builds = [create_environment(http, "pend", f"env{i}", ["pyhello"])["id"] for i in range(MAX_JOBS + 1)]
        names = [f"envyard-build-{b}-1" for b in builds]
        assert launcher.reconcile().created == names[:MAX_JOBS]
        assert launcher.reconcile().created == []  # the limit holds with pending Jobs
        assert http.post(f"/api/v1/builds/{builds[0]}/cancel").status_code == 200
        assert service.wait_for(builds[0], timeout=10)["status"] == "canceled"
        step = launcher.reconcile()
    assert step.deleted == [names[0]] and step.created == [names[MAX_JOBS]]
    assert names[0] not in nodes.jobs
