"""The worker side of builds: claim with a lease, heartbeat, stage transitions, completion, failure,
and the reaper that requeues builds whose worker vanished and fails builds past their time limit.

Every write that depends on a lease is a conditional UPDATE (``WHERE lease_id = ...``), so two
workers, or a worker and the reaper, can never both win: the same code is correct on SQLite and
PostgreSQL without row locks.

Functions that take a session never commit: the route that called them does. What needs several transactions
(a completion, which holds its blobs first; the reaper, one transaction per build) takes the engine and opens
:func:`~envyard.api.db.session_scope` per step.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import (
    RUNNING,
    STAGE_ORDER,
    Build,
    BuildArtifact,
    BuildPackage,
    BuildStatus,
    Environment,
    Namespace,
    Spec,
    utcnow,
)
from envyard.api.services import referrers
from envyard.api.services.gc import hold_blobs, release_holds
from envyard.api.services.logs import append_log
from envyard.api.services.publish import enqueue_publications
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import BuildCanceledError, ConflictError, LeaseLostError, NotFoundError
from envyard.builder.policy import Policy
from envyard.worker.protocol import ArtifactEntry, BuildOptions, Job, PackageEntry

log = logging.getLogger(__name__)
RUNNING_VALUES = tuple(s.value for s in RUNNING)
CANDIDATES = 32


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    lease_seconds: float
    time_limit_seconds: float
    max_attempts: int
    backoff_seconds: float


def _changed(result: Any) -> bool:
    return bool(result.rowcount)


def claim_build(session: Session, worker: str, platforms: Sequence[str] | None, policy: LeasePolicy,
                only: tuple[int, int] | None = None) -> Build | None:
    """Take the oldest queued build this worker can run, or None. Safe against concurrent claimers; the caller
    commits (a lost race leaves nothing to commit). ``only`` (build id, attempt): that build, and only when the
    claim would be that attempt (a build-scoped token's)."""
    now = utcnow()
    query = (
        select(Build)
        .where(Build.status == BuildStatus.QUEUED, col(Build.lease_id).is_(None))
        .where((col(Build.not_before).is_(None)) | (col(Build.not_before) <= now))
    )
    if only is not None:
        query = query.where(col(Build.id) == only[0], col(Build.attempt) == only[1] - 1)
    candidates = session.exec(query.order_by(col(Build.id)).limit(CANDIDATES)).all()
    allowed = set(platforms) if platforms else None
    for build in candidates:
        if allowed is not None and not set(build.platforms or ["noarch"]) <= allowed | {"noarch"}:
            continue
        lease_id = secrets.token_hex(16)
        won = session.execute(
            update(Build)
            .where(col(Build.id) == build.id, col(Build.status) == BuildStatus.QUEUED, col(Build.lease_id).is_(None))
            .values(
                status=BuildStatus.SOLVING, lease_id=lease_id, lease_owner=worker, attempt=Build.attempt + 1,
                lease_expires_at=now + timedelta(seconds=policy.lease_seconds), solving_at=now, started_at=now,
                not_before=None,
            )
        )
        if _changed(won):
            session.refresh(build)
            return build
    return None


def job_for(session: Session, build: Build, policy: LeasePolicy, heartbeat_seconds: float) -> Job:
    """The :class:`~envyard.worker.protocol.Job` a worker gets for the build it just claimed."""
    spec = session.get(Spec, build.spec_id)
    environment = session.get(Environment, build.environment_id)
    assert spec is not None and environment is not None and build.id is not None and build.lease_id is not None
    namespace = session.get(Namespace, environment.namespace_id)
    assert namespace is not None and build.started_at is not None
    return Job(build_id=build.id, lease_id=build.lease_id, lease_seconds=policy.lease_seconds,
               heartbeat_seconds=heartbeat_seconds, attempt=build.attempt, spec_text=spec.content,
               spec_filename=spec.filename, platforms=build.platforms, options=BuildOptions(**build.options),
               image_name=f"{namespace.name}/{environment.name}:build-{build.id}",
               deadline=build.started_at + timedelta(seconds=time_limit(build, policy)),
               allow_sdists=namespace.allow_sdists, policy=Policy.model_validate(build.policy or {}))


def time_limit(build: Build, policy: LeasePolicy) -> float:
    """Seconds ``build`` may run: the server's limit, or its policy's build time limit where that is lower."""
    limit = (build.policy or {}).get("build_time_limit_seconds")
    return min(policy.time_limit_seconds, float(limit)) if limit else policy.time_limit_seconds


def leased_build(session: Session, build_id: int, lease_id: str) -> Build:
    """The build, if ``lease_id`` still holds it; LeaseLostError otherwise."""
    build = session.get(Build, build_id)
    if build is None:
        raise NotFoundError(f"build {build_id} does not exist")
    if build.lease_id != lease_id or build.status not in RUNNING_VALUES:
        raise LeaseLostError(
            f"build {build_id} is no longer leased to this worker (now {build.status})",
            hint="the lease expired or the build was canceled; drop this build",
        )
    return build


def heartbeat(session: Session, build_id: int, lease_id: str, policy: LeasePolicy) -> Build:
    """Extend the lease; the reply tells the worker whether a cancel was asked for."""
    expires = utcnow() + timedelta(seconds=policy.lease_seconds)
    done = session.execute(
        update(Build)
        .where(col(Build.id) == build_id, col(Build.lease_id) == lease_id, col(Build.status).in_(RUNNING_VALUES))
        .values(lease_expires_at=expires)
    )
    if not _changed(done):
        leased_build(session, build_id, lease_id)  # raises the precise error
    return leased_build(session, build_id, lease_id)


def set_stage(session: Session, build_id: int, lease_id: str, stage: BuildStatus) -> Build:
    build = leased_build(session, build_id, lease_id)
    current = BuildStatus(build.status)
    if STAGE_ORDER.index(stage) < STAGE_ORDER.index(current):
        raise ConflictError(f"build {build_id} is already {current}; it cannot go back to {stage}")
    if stage != current:
        session.execute(
            update(Build)
            .where(col(Build.id) == build_id, col(Build.lease_id) == lease_id)
            .values({"status": stage, f"{stage.value}_at": utcnow()})
        )
    session.refresh(build)
    return build


def complete_build(
    engine: Engine,
    build_id: int,
    lease_id: str,
    store: ArtifactStore,
    artifacts: Sequence[ArtifactEntry],
    packages: Sequence[PackageEntry],
    image_digest: str | None,
    lock_sha256: str | None,
) -> Build:
    """Publish a build: every artifact must be in the store at its size; then one transaction makes the
    artifacts visible, records the packages, marks it completed and makes it the environment's current build.
    A build whose cancel was accepted (``cancel_requested``) is never completed: it ends canceled, and the
    worker gets BuildCanceledError (409). Several transactions (the holds come first): takes the engine."""
    with session_scope(engine) as session:
        canceled = leased_build(session, build_id, lease_id).cancel_requested
    if canceled:
        _refuse_completion(engine, build_id, lease_id)
    hold_blobs(engine, build_id, [a.sha256 for a in artifacts])  # before the stat: see api.services.gc
    missing = [a.name for a in artifacts if store.stat(a.sha256) != a.size]
    if missing:
        raise ConflictError(
            f"build {build_id}: {len(missing)} artifacts are not stored at their declared size: {missing[:5]}",
            hint="upload them (PUT /api/v1/jobs/{id}/blobs/sha256:...) before completing",
        )
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise ConflictError(f"build {build_id}: artifact names repeat", hint="give each artifact its own name")
    found = referrers.describe(store, artifacts)  # subject and artifactType of each manifest, checked
    with session_scope(engine) as session:
        now = utcnow()
        done = session.execute(
            update(Build)
            .where(col(Build.id) == build_id, col(Build.lease_id) == lease_id, col(Build.status).in_(RUNNING_VALUES),
                   col(Build.cancel_requested).is_(False))  # a cancel accepted first wins: see builds.cancel_build
            .values(status=BuildStatus.COMPLETED, finished_at=now, lease_id=None, lease_expires_at=None,
                    image_digest=image_digest, lock_sha256=lock_sha256,
                    package_count=len({(p.name, p.manager) for p in packages}))
            .execution_options(synchronize_session=False)
        )
        completed = _changed(done)
        if completed:
            session.add_all(BuildArtifact(build_id=build_id, **a.model_dump(), **referrers.fields_of(found, a.name))
                            for a in artifacts)
            session.add_all(BuildPackage(build_id=build_id, **p.model_dump()) for p in packages)
            build = session.get(Build, build_id)
            assert build is not None
            environment = session.get(Environment, build.environment_id)
            assert environment is not None
            environment.current_build_id = build_id
            environment.updated_at = now
            release_holds(session, build_id)  # in the transaction that adds the references
            enqueue_publications(session, build)  # one pending publication per enabled registry target
            session.flush()
            session.refresh(build)
    if not completed:
        _refuse_completion(engine, build_id, lease_id)
    return build


def _refuse_completion(engine: Engine, build_id: int, lease_id: str) -> NoReturn:
    """The completion lost: LeaseLostError, or, when a cancel was accepted first, end the build canceled and tell
    the worker so (BuildCanceledError, 409)."""
    with session_scope(engine) as session:
        build = leased_build(session, build_id, lease_id)
        canceled = build.cancel_requested and finish_unsuccessfully(session, build_id, lease_id, BuildStatus.CANCELED)
        if canceled:
            append_log(session, build_id,
                       "envyard: the build was canceled before it completed; its result is discarded\n")
    if canceled:
        raise BuildCanceledError(f"build {build_id} was canceled before it completed; it stays canceled",
                                 hint="drop this build: its artifacts are not published")
    with session_scope(engine) as session:
        leased_build(session, build_id, lease_id)  # raises the precise error
    raise LeaseLostError(f"build {build_id} changed state while completing", hint="drop this build")


def finish_unsuccessfully(
    session: Session, build_id: int, lease_id: str | None, status: BuildStatus, *, code: str | None = None,
    stage: str | None = None, message: str | None = None, hint: str | None = None,
) -> bool:
    """Mark a running build failed or canceled (conditional on its lease, when given)."""
    query = update(Build).where(col(Build.id) == build_id, col(Build.status).in_(RUNNING_VALUES))
    if lease_id is not None:
        query = query.where(col(Build.lease_id) == lease_id)
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "lease_id": None, "lease_expires_at": None}
    if status == BuildStatus.FAILED:
        values.update(error_code=code, error_stage=stage, error_message=message, error_hint=hint)
    done = session.execute(query.values(values))
    return _changed(done)


def fail_build(session: Session, build_id: int, lease_id: str, *, code: str, stage: str | None, message: str,
               hint: str | None) -> Build:
    build = leased_build(session, build_id, lease_id)
    stage = stage or build.status
    if not finish_unsuccessfully(session, build_id, lease_id, BuildStatus.FAILED, code=code, stage=stage,
                                 message=message, hint=hint):
        leased_build(session, build_id, lease_id)
    session.refresh(build)
    return build


def confirm_canceled(session: Session, build_id: int, lease_id: str) -> Build:
    build = leased_build(session, build_id, lease_id)
    finish_unsuccessfully(session, build_id, lease_id, BuildStatus.CANCELED)
    session.refresh(build)
    return build


def reap(engine: Engine, policy: LeasePolicy, now: datetime | None = None) -> int:
    """Requeue (with backoff) or fail builds whose lease expired; fail builds past the time limit. One
    transaction per build."""
    now = now or utcnow()
    touched = 0
    with session_scope(engine) as session:
        expired = session.exec(
            select(Build).where(col(Build.status).in_(RUNNING_VALUES), col(Build.lease_expires_at) < now)
        ).all()
    for build in expired:
        with session_scope(engine) as session:
            touched += _requeue_or_fail(session, build, policy, now)
    with session_scope(engine) as session:  # running builds are few (one per worker): their limits differ
        running = session.exec(select(Build).where(col(Build.status).in_(RUNNING_VALUES))).all()
    overdue = [b for b in running
               if b.started_at is not None and b.started_at < now - timedelta(seconds=time_limit(b, policy))]
    for build in overdue:
        minutes = time_limit(build, policy) / 60
        with session_scope(engine) as session:
            if finish_unsuccessfully(
                session, build.id or 0, build.lease_id, BuildStatus.FAILED, code="build-timeout", stage=build.status,
                message=f"the build ran longer than the time limit of {minutes:g} minutes and was stopped",
                hint="ask an admin to raise ENVYARD_BUILD_TIME_LIMIT_SECONDS, or split the environment",
            ):
                append_log(session, build.id or 0,
                           f"envyard: time limit of {minutes:g} minutes reached; build failed\n")
                touched += 1
    return touched


def _requeue_or_fail(session: Session, build: Build, policy: LeasePolicy, now: datetime) -> int:
    """Requeue, fail or cancel one build whose lease expired; 1 if this call changed it. The caller commits."""
    # read before the UPDATE: an ORM UPDATE synchronizes the loaded row (lease_owner None, status queued)
    build_id, lease_id, stage, attempt = build.id or 0, build.lease_id, build.status, build.attempt
    worker = f"worker {build.lease_owner}" if build.lease_owner else "the worker (whose name was not recorded)"
    where = update(Build).where(col(Build.id) == build_id, col(Build.lease_id) == lease_id,
                                col(Build.status).in_(RUNNING_VALUES))
    if build.cancel_requested:
        done = session.execute(where.values(status=BuildStatus.CANCELED, finished_at=now, lease_id=None,
                                            lease_expires_at=None))
        note = f"envyard: {worker} stopped responding during {stage}; the build was canceled as asked\n"
    elif attempt >= policy.max_attempts:
        done = session.execute(where.values(
            status=BuildStatus.FAILED, finished_at=now, lease_id=None, lease_expires_at=None, error_code="worker-lost",
            error_stage=stage,
            error_message=f"the worker stopped responding during {stage}, {attempt} times",
            error_hint="check the workers' logs and resources (memory, disk), then rebuild",
        ))
        note = f"envyard: {worker} stopped responding during {stage}; attempt {attempt} was the last\n"
    else:
        delay = policy.backoff_seconds * 2 ** max(attempt - 1, 0)
        done = session.execute(where.values(
            status=BuildStatus.QUEUED, lease_id=None, lease_owner=None, lease_expires_at=None, queued_at=now,
            not_before=now + timedelta(seconds=delay),
        ))
        note = (f"envyard: {worker} stopped responding during {stage}; requeued "
                f"(attempt {attempt} of {policy.max_attempts}, retry in {delay:g} s)\n")
    if _changed(done):
        append_log(session, build_id, note)
        log.warning(note.strip())
        return 1
    return 0
