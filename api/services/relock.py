"""Scheduled relocks: each environment with a :class:`~envyard.api.models.RelockSchedule` (a cron expression) is
solved again when due; only a solve whose packages differ from the current build's lock queues a build, with the
lock diff attached (:class:`~envyard.api.models.BuildLockDiff`, ``GET /api/v1/builds/{id}/lock-diff``) and a
notification POSTed to the schedule's URL.

Where the solve runs: in the API server, off the event loop, in a one-process pool (``spawn``: nothing of the
server's threads is inherited), with the same :class:`~envyard.builder.url_policy.UrlPolicy` as the workers, no
``${VAR}`` expansion and no file includes. A solve is small next to a build (no install, no image); the build that
follows a change runs on the workers as any other.

Only one replica runs the schedules: the periodic loop (``ServiceSettings.relock_interval_seconds``) first takes the
``relock`` :class:`~envyard.api.models.ServiceLease` (a conditional UPDATE or an INSERT under the primary key).
``POST /api/v1/admin/relocks/run`` runs due schedules at once (``force``: every schedule), for operators and tests.

Notifications: JSON ``{"event": "relock", "environment", "build_id", "previous_build_id", "diff"}`` signed with
HMAC-SHA256 of the body under ``ServiceSettings.relock_notify_secret`` in ``X-Envyard-Signature-256:
sha256=<hex>``; sent from a daemon thread, retried with exponential backoff, never blocking the scheduler.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import multiprocessing
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import (
    Build,
    BuildArtifact,
    BuildLockDiff,
    BuildStatus,
    Environment,
    Namespace,
    RelockSchedule,
    ServiceLease,
    Spec,
    utcnow,
)
from envyard.api.services import builds
from envyard.api.services.specs import submission_policy
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import EnvyardError, NotFoundError, SpecError
from envyard.builder.lockdiff import LockDiff, diff_locks
from envyard.builder.url_policy import UrlPolicy
from envyard.worker.protocol import BuildOptions

log = logging.getLogger(__name__)

LEASE_NAME = "relock"
SIGNATURE_HEADER = "X-Envyard-Signature-256"
HOLDER = f"{uuid.uuid4().hex[:12]}"


# --- schedules -------------------------------------------------------------------------------------------------------


def next_run(cron: str, after: datetime) -> datetime:
    nxt: datetime = croniter(cron, after).get_next(datetime)
    return nxt


def set_schedule(session: Session, environment: Environment, cron: str, notify_url: str | None,
                 policy: UrlPolicy, now: datetime | None = None) -> RelockSchedule:
    """Create or replace ``environment``'s schedule (SpecError naming the field for a bad cron or URL)."""
    if not croniter.is_valid(cron):
        raise SpecError(f"'{cron}' is not a cron expression", field="cron",
                        hint="five fields: minute hour day month weekday, e.g. '0 6 * * 1' (Mondays 06:00 UTC)")
    if notify_url:
        policy.check(notify_url, what="notification URL", field="notify_url")
    now = now or utcnow()
    assert environment.id is not None
    schedule = get_schedule(session, environment)
    if schedule is None:
        schedule = RelockSchedule(environment_id=environment.id, cron=cron)
    schedule.cron, schedule.notify_url, schedule.next_run_at = cron, notify_url, next_run(cron, now)
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(session: Session, environment: Environment) -> RelockSchedule | None:
    return session.exec(select(RelockSchedule).where(RelockSchedule.environment_id == environment.id)).first()


def get_lock_diff(session: Session, build_id: int) -> BuildLockDiff:
    found = session.exec(select(BuildLockDiff).where(BuildLockDiff.build_id == build_id)).first()
    if found is None:
        raise NotFoundError(f"build {build_id} was not queued by a scheduled relock (it has no lock diff)",
                            hint="compare any two builds with GET /api/v1/builds/{id}/diff/{other}")
    return found


# --- the lease -------------------------------------------------------------------------------------------------------


def take_lease(engine: Engine, seconds: float, holder: str = HOLDER, name: str = LEASE_NAME) -> bool:
    """Whether ``holder`` holds the lease ``name`` for the next ``seconds`` (taken when free or expired)."""
    now = utcnow()
    with session_scope(engine) as session:
        done: Any = session.execute(
            update(ServiceLease)
            .where(col(ServiceLease.name) == name,
                   (col(ServiceLease.holder) == holder) | (col(ServiceLease.expires_at) < now))
            .values(holder=holder, expires_at=now + timedelta(seconds=seconds)))
        if done.rowcount:
            return True
    try:
        with session_scope(engine) as session:
            if session.get(ServiceLease, name) is not None:
                return False
            session.add(ServiceLease(name=name, holder=holder, expires_at=now + timedelta(seconds=seconds)))
    except IntegrityError:
        return False
    return True


# --- the solve (in a worker process) ---------------------------------------------------------------------------------


def solve_lock_text(filename: str, text: str, platforms: list[str], channel_alias: str, mirrors: dict[str, list[str]],
                    cache_dir: str, policy: UrlPolicy) -> str:
    """The conda-lock.yml of ``text`` solved afresh (runs in the pool's process)."""
    from envyard.builder.channels import ChannelOptions
    from envyard.builder.lock import LockOptions
    from envyard.builder.pipeline import CONDA_LOCK_FILE, lock_to_directory

    with tempfile.TemporaryDirectory(prefix="envyard-relock-") as tmp:
        spec = Path(tmp) / filename
        spec.write_text(text, encoding="utf-8")
        options = LockOptions(platforms=tuple(platforms), channels=ChannelOptions(channel_alias=channel_alias,
                                                                                   mirrors=mirrors),
                              url_policy=policy)
        lock_to_directory(spec, Path(tmp) / "out", options, cache_dir=Path(cache_dir), environ={},
                          allow_includes=False)
        made: str = (Path(tmp) / "out" / CONDA_LOCK_FILE).read_text(encoding="utf-8")
        return made


def _read_lock_text(text: str) -> Any:
    from envyard.builder.lockfiles import read_lockfile

    with tempfile.TemporaryDirectory(prefix="envyard-relock-") as tmp:
        path = Path(tmp) / "conda-lock.yml"
        path.write_text(text, encoding="utf-8")
        return read_lockfile(path)


def versions_differ(diff: LockDiff) -> bool:
    """Whether packages were added, removed, or changed version or build (not only recorded details)."""
    return any(pd.added or pd.removed or any(c.old != c.new for c in pd.changed) for pd in diff.platforms.values())


# --- running schedules -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Current:
    schedule_id: int
    environment: str
    namespace: str
    name: str
    build_id: int
    filename: str
    text: str
    platforms: list[str]
    options: dict[str, Any]
    lock_sha256: str | None
    notify_url: str | None
    cron: str


def _due(engine: Engine, now: datetime, force: bool) -> list[int]:
    with session_scope(engine) as session:
        query = select(RelockSchedule.id).order_by(col(RelockSchedule.id))
        if not force:
            query = query.where(col(RelockSchedule.next_run_at) <= now)
        return [i for i in session.exec(query).all() if i is not None]


def _load(session: Session, schedule_id: int) -> _Current | str:
    schedule = session.get(RelockSchedule, schedule_id)
    if schedule is None:
        return "schedule deleted"
    environment = session.get(Environment, schedule.environment_id)
    assert environment is not None
    namespace = session.get(Namespace, environment.namespace_id)
    assert namespace is not None
    build = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    if build is None or build.status != BuildStatus.COMPLETED or build.id is None:
        return "no current build"
    spec = session.get(Spec, build.spec_id)
    assert spec is not None
    artifact = session.exec(select(BuildArtifact).where(BuildArtifact.build_id == build.id,
                                                        BuildArtifact.kind == "conda-lock")).first()
    return _Current(schedule_id, f"{namespace.name}/{environment.name}", namespace.name, environment.name, build.id,
                    spec.filename, spec.content, list(build.platforms), dict(build.options),
                    artifact.sha256 if artifact else None, schedule.notify_url, schedule.cron)


def _finish(engine: Engine, schedule_id: int, now: datetime, result: str) -> None:
    with session_scope(engine) as session:
        schedule = session.get(RelockSchedule, schedule_id)
        if schedule is not None:
            schedule.last_run_at, schedule.last_result = now, result[:500]
            schedule.next_run_at = next_run(schedule.cron, now)


def relock_one(engine: Engine, store: ArtifactStore, settings: ServiceSettings, schedule_id: int, now: datetime,
               pool: ProcessPoolExecutor) -> dict[str, Any]:
    with session_scope(engine) as session:
        current = _load(session, schedule_id)
    if isinstance(current, str):
        _finish(engine, schedule_id, now, current)
        return {"schedule": schedule_id, "result": current}
    report: dict[str, Any] = {"schedule": schedule_id, "environment": current.environment,
                              "previous_build_id": current.build_id}
    try:
        old_text = b"".join(store.read(current.lock_sha256)).decode() if current.lock_sha256 else None
        channel_alias = current.options.get("channel_alias") or settings.channel_alias
        policy = UrlPolicy.from_settings(settings)
        new_text = pool.submit(solve_lock_text, current.filename, current.text, current.platforms, channel_alias,
                               dict(settings.mirrors), str(settings.cache_dir), policy).result()
        new_lock = _read_lock_text(new_text)
        old_lock = _read_lock_text(old_text) if old_text else None
    except EnvyardError as err:
        _finish(engine, schedule_id, now, f"failed: {err.one_line()}")
        return {**report, "result": "failed", "error": err.one_line()}
    from envyard.builder.model import EnvironmentLock

    diff = diff_locks(old_lock or EnvironmentLock({}), new_lock)
    if old_lock is not None and not versions_differ(diff):
        _finish(engine, schedule_id, now, "unchanged")
        return {**report, "result": "unchanged"}
    with session_scope(engine) as session:
        spec = builds.check_submission(current.filename, current.text, current.platforms,
                                       submission_policy(settings))
        submitted = builds.submit_build(session, current.namespace, current.name, spec=spec,
                                        options=BuildOptions(**current.options), relock=True,
                                        requested_by="schedule")
        assert submitted.build.id is not None
        session.add(BuildLockDiff(build_id=submitted.build.id, previous_build_id=current.build_id,
                                  diff=diff.to_json()))
        build_id = submitted.build.id
    _finish(engine, schedule_id, now, f"changed: build {build_id}")
    report = {**report, "result": "changed", "build_id": build_id, "diff": diff.to_json()}
    if current.notify_url:
        notify(current.notify_url, {"event": "relock", "environment": current.environment, "build_id": build_id,
                                    "previous_build_id": current.build_id, "diff": diff.to_json()}, settings)
    return report


def run_due(engine: Engine, store: ArtifactStore, settings: ServiceSettings, *, force: bool = False,
            now: datetime | None = None) -> list[dict[str, Any]]:
    """Relock every due schedule (``force``: every schedule); one report per schedule."""
    now = now or utcnow()
    due = _due(engine, now, force)
    if not due:
        return []
    reports = []
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for schedule_id in due:
            try:
                reports.append(relock_one(engine, store, settings, schedule_id, now, pool))
            except Exception as exc:  # noqa: BLE001 - one schedule's failure does not stop the others
                log.exception("scheduled relock %s failed", schedule_id)
                _finish(engine, schedule_id, now, f"failed: {type(exc).__name__}: {exc}")
                reports.append({"schedule": schedule_id, "result": "failed", "error": f"{type(exc).__name__}: {exc}"})
    return reports


def run_periodically(engine: Engine, store: ArtifactStore, settings: ServiceSettings, stop: threading.Event) -> None:
    """The server's scheduler thread: every ``relock_interval_seconds``, run the due schedules if this replica
    holds the lease."""
    interval = settings.relock_interval_seconds
    while not stop.wait(interval):
        try:
            if take_lease(engine, max(interval * 3, 60.0)):
                run_due(engine, store, settings)
        except Exception:  # noqa: BLE001 - the scheduler must outlive a database hiccup
            log.exception("relock scheduler pass failed")


# --- notifications ---------------------------------------------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notify(url: str, payload: dict[str, Any], settings: ServiceSettings) -> threading.Thread:
    """POST ``payload`` to ``url`` from a daemon thread, retried with exponential backoff."""
    import httpx

    body = json.dumps(payload, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "envyard"}
    if settings.relock_notify_secret:
        headers[SIGNATURE_HEADER] = signature(settings.relock_notify_secret, body)
    policy = UrlPolicy.from_settings(settings)
    attempts, backoff = settings.relock_notify_attempts, settings.relock_notify_backoff_seconds

    def send() -> None:
        delay = backoff
        for attempt in range(1, attempts + 1):
            try:
                policy.check(url, what="notification URL")
                response = httpx.post(url, content=body, headers=headers, timeout=10.0, follow_redirects=False)
                if response.status_code < 300:
                    return
                log.warning("relock notification to %s: HTTP %s (try %d of %d)", url, response.status_code,
                            attempt, attempts)
            except EnvyardError as err:
                log.warning("relock notification to %s refused: %s", url, err.one_line())
                return
            except httpx.HTTPError as exc:
                log.warning("relock notification to %s failed: %s (try %d of %d)", url, exc, attempt, attempts)
            if attempt < attempts:
                time.sleep(delay)
                delay *= 2

    thread = threading.Thread(target=send, name="envyard-relock-notify", daemon=True)
    thread.start()
    return thread
