"""The Kubernetes build launcher: for each queued build, one Job running ``envyard worker --once`` with a token
scoped to that build attempt; at most ``kubernetes_max_jobs`` Jobs at once.

Each pass (:meth:`Launcher.reconcile`) compares the Jobs it finds (by label) with the builds in the database:

* a queued build whose next attempt has no Job gets one (deterministic name ``envyard-build-<id>-<attempt>``; a
  409 on create means it has one: never two Jobs for one attempt, even with two servers launching);
* a Job that vanished (deleted, node lost) needs nothing: its build stays leased until the lease expires, the
  reaper (:func:`envyard.api.services.jobs.reap`) requeues it as the next attempt, and that attempt gets a Job;
* a Job that finished without claiming its build (it failed before its pod ran ``envyard worker``) is deleted,
  so that the next pass creates it again;
* an unfinished Job whose build was canceled is deleted.

Everything else (lease loss, time limits, retries and their backoff) is the worker protocol's, unchanged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from kubernetes import client as k8s
from sqlalchemy import Engine
from sqlmodel import col, select

from envyard.api.auth.build_tokens import build_token_key, sign_build_token
from envyard.api.build_backends.cluster import Cluster, job_finished
from envyard.api.build_backends.jobs import ATTEMPT_LABEL, BUILD_LABEL, JOB_SELECTOR, BuildTarget, build_job, job_name
from envyard.api.db import session_scope
from envyard.api.models import Build, BuildStatus, Environment, Namespace, utcnow
from envyard.api.settings import ServiceSettings

__all__ = ["Launcher", "Pass"]

log = logging.getLogger(__name__)


@dataclass
class Pass:
    """What one reconcile pass did (for logs and tests)."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    active: int = 0


def _label(job: k8s.V1Job, key: str) -> int | None:
    value = (job.metadata.labels or {}).get(key, "")
    return int(value) if value.isdigit() else None


class Launcher:
    """Keeps build Jobs in step with queued builds (see the module's docstring)."""

    def __init__(self, engine: Engine, settings: ServiceSettings, secret_key: bytes, cluster: Cluster) -> None:
        self.engine, self.settings, self.cluster = engine, settings, cluster
        self.key = build_token_key(secret_key)

    def run(self, stop: threading.Event) -> None:
        """Reconcile every ``kubernetes_poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - the launcher must outlive an API server or database hiccup
                log.exception("build launcher pass failed")
            stop.wait(self.settings.kubernetes_poll_seconds)

    def reconcile(self) -> Pass:
        result = Pass()
        jobs = {job.metadata.name: job for job in self.cluster.list_jobs(JOB_SELECTOR)}
        ids = {b for b in (_label(job, BUILD_LABEL) for job in jobs.values()) if b is not None}
        now = utcnow()
        with session_scope(self.engine) as session:
            known = {b.id: (b.status, b.attempt) for b in session.exec(select(Build).where(col(Build.id).in_(ids)))}
            queued = session.exec(
                select(Build, Namespace.name).join(Environment, col(Environment.id) == Build.environment_id)
                .join(Namespace, col(Namespace.id) == Environment.namespace_id)
                .where(Build.status == BuildStatus.QUEUED, col(Build.lease_id).is_(None))
                .where((col(Build.not_before).is_(None)) | (col(Build.not_before) <= now))
                .order_by(col(Build.id)).limit(self.settings.kubernetes_max_jobs * 4)
            ).all()
        for name, job in list(jobs.items()):
            build_id, attempt = _label(job, BUILD_LABEL), _label(job, ATTEMPT_LABEL)
            status, attempts = known.get(build_id, (None, 0)) if build_id is not None else (None, 0)
            finished = job_finished(job)
            unclaimed = finished and status == BuildStatus.QUEUED and attempt == attempts + 1
            orphan = not finished and status in (BuildStatus.CANCELED, None)
            if unclaimed or orphan:
                log.info("deleting Job %s (%s)", name, "it ended before claiming its build" if unclaimed
                         else "its build was canceled or deleted")
                self.cluster.delete_job(name)
                result.deleted.append(name)
                del jobs[name]
        result.active = sum(not job_finished(job) for job in jobs.values())
        for build, namespace in queued:
            if result.active >= self.settings.kubernetes_max_jobs:
                break
            assert build.id is not None
            target = BuildTarget(build.id, build.attempt + 1, namespace, list(build.platforms or []))
            name = job_name(target.build_id, target.attempt)
            if name in jobs:
                continue
            seconds = self.settings.kubernetes_job_start_seconds + int(self.settings.build_time_limit_seconds)
            token = sign_build_token(self.key, target.build_id, target.attempt, seconds=seconds)
            job, secret = build_job(target, self.settings, token)
            if self.cluster.create_job(job, secret):
                log.info("created Job %s for build %d (attempt %d)", name, target.build_id, target.attempt)
                result.created.append(name)
                result.active += 1
        return result
