"""The build launcher's test cluster: :class:`LocalNodes` implements the launcher's cluster interface by running
each Job's container (its command, its environment, its token Secret) as a local process, the "node"."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from envyard.api.build_backends.jobs import to_dict
from tests.commands import ENVYARD
from tests.service.conftest import Service, e2e_alias, service_env, start_service  # noqa: F401 - shared fixtures

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"


def validate(obj: object) -> dict[str, object]:
    """``obj`` (a client model or its dict) as JSON, after kubernetes-validate --strict accepted it."""
    data = obj if isinstance(obj, dict) else to_dict(obj)
    kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    return data


def _matches(job: k8s.V1Job, selector: str) -> bool:
    labels = job.metadata.labels or {}
    return all(labels.get(key) == value for key, _, value in (term.partition("=") for term in selector.split(",")))


class LocalNodes:
    """A cluster whose nodes are local processes: ``create_job`` validates the Job and its Secret and starts the
    Job's container command with the Job's environment (``secretKeyRef`` resolved from the Secret); the Job's
    status follows the process (active, then succeeded or failed by exit code)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.jobs: dict[str, k8s.V1Job] = {}
        self.secrets: dict[str, k8s.V1Secret] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.created: list[str] = []  # every Job name ever created, in order
        self.conflicts: list[str] = []
        self.max_active = 0
        self.pending = False  # True: new Jobs' pods are not scheduled (no process starts; the Job stays unfinished)
        self.lock = threading.Lock()

    # --- the interface the launcher uses --------------------------------------------------------------------

    def create_job(self, job: k8s.V1Job, secret: k8s.V1Secret) -> bool:
        validate(job)
        validate(secret)
        name = job.metadata.name
        with self.lock:
            if name in self.jobs:
                self.conflicts.append(name)
                return False
            self.jobs[name] = copy.deepcopy(job)
            self.secrets[name] = secret
            self.created.append(name)
            if not self.pending:
                self.processes[name] = self._start(job)
            self.max_active = max(self.max_active, sum(p.poll() is None for p in self.processes.values()))
        return True

    def list_jobs(self, label_selector: str) -> list[k8s.V1Job]:
        with self.lock:
            for name, job in self.jobs.items():
                if name not in self.processes:
                    job.status = k8s.V1JobStatus()  # pending
                    continue
                code = self.processes[name].poll()
                job.status = k8s.V1JobStatus(active=1 if code is None else None,
                                             succeeded=1 if code == 0 else None,
                                             failed=1 if code not in (None, 0) else None)
            return [copy.deepcopy(job) for job in self.jobs.values() if _matches(job, label_selector)]

    def delete_job(self, name: str) -> None:
        self.vanish(name, signal.SIGTERM)

    # --- what tests do to the "cluster" ---------------------------------------------------------------------

    def vanish(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """The Job and its pod are gone (deleted, or its node died: SIGKILL)."""
        with self.lock:
            process = self.processes.pop(name, None)
            self.jobs.pop(name, None)
            self.secrets.pop(name, None)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def exit_codes(self) -> dict[str, int | None]:
        with self.lock:
            return {name: process.poll() for name, process in self.processes.items()}

    def stop(self) -> None:
        for name in list(self.processes):
            self.vanish(name, signal.SIGTERM)

    def _start(self, job: k8s.V1Job) -> subprocess.Popen[bytes]:
        pod = job.spec.template.spec
        (container,) = pod.containers
        assert container.command[0] == "envyard", container.command  # the image's envyard: this checkout's
        env = {"PATH": os.environ["PATH"], "HOME": str(self.log_dir), "PYTHONPATH": str(REPO)}
        for var in container.env:
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                env[var.name] = self.secrets[ref.name].string_data[ref.key]
            else:
                env[var.name] = var.value
        log = (self.log_dir / f"{job.metadata.name}.log").open("ab")
        return subprocess.Popen([*ENVYARD, *container.command[1:]], env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[LocalNodes]:
    cluster = LocalNodes(tmp_path)
    yield cluster
    cluster.stop()


@pytest.fixture
def service(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Service]:  # noqa: F811
    """A real ``envyard serve`` without in-process workers (SQLite, local store)."""
    started = start_service(tmp_path / "svc", service_env, "--build-backend", "external")
    yield started
    started.stop()
