"""Namespace quotas (storage, builds queued or running) and each user's submission rate, checked in the
submission's transaction so that they hold under concurrent submissions.

How they hold. :func:`check_quotas` first writes the namespace's row (a no-op UPDATE): PostgreSQL takes the row's
lock and SQLite its database write lock, so submissions to one namespace go through this function one at a time,
and each counts the builds the ones before it committed. The submission rate is a counter per user and minute,
raised by a conditional UPDATE (``count < limit``) or created by an INSERT that skips a row another submission
created first: never read, then written.

Beyond a quota: storage is a 403 ``quota-exceeded`` problem, builds and rate a 429 ``too-many-requests`` problem;
both name the quota, its limit and the current use. At 80 % of a quota the submission succeeds and its build log
starts with a warning line (:func:`check_quotas` returns the lines).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from envyard.api.models import (
    RUNNING,
    Build,
    BuildArtifact,
    BuildStatus,
    Environment,
    Namespace,
    NamespaceQuota,
    SubmissionCounter,
    utcnow,
)
from envyard.api.services.lookups import get_namespace
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import QuotaExceededError, TooManyRequestsError
from envyard.builder.progress import format_size

__all__ = ["QuotaSettings", "WARN_FRACTION", "check_quotas", "get_quota", "namespace_storage", "set_quota"]

WARN_FRACTION = 0.8
WAITING = (BuildStatus.QUEUED.value, *(s.value for s in RUNNING))
BUILDS_RETRY_SECONDS = 30
RATE_RETRY_SECONDS = 60


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """The server-wide defaults where a namespace sets none (None: no limit)."""

    storage_bytes: int | None = None
    concurrent_builds: int | None = None
    submissions_per_minute: int | None = None

    @classmethod
    def of(cls, settings: ServiceSettings) -> QuotaSettings:
        return cls(settings.default_storage_quota_bytes, settings.default_concurrent_builds,
                   settings.default_submissions_per_minute)


def get_quota(session: Session, namespace: str) -> NamespaceQuota:
    ns = get_namespace(session, namespace)
    assert ns.id is not None
    return session.get(NamespaceQuota, ns.id) or NamespaceQuota(namespace_id=ns.id)


def set_quota(session: Session, namespace: str, values: dict[str, int | None]) -> tuple[dict[str, int | None],
                                                                                       dict[str, int | None]]:
    """Set the fields of ``values`` on the namespace's quota row; (before, after). The caller commits."""
    row = get_quota(session, namespace)
    fields = ("storage_bytes", "concurrent_builds", "submissions_per_minute", "keep_last", "keep_days")
    before = {name: getattr(row, name) for name in fields}
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return before, {name: getattr(row, name) for name in fields}


def namespace_storage(session: Session, namespace_id: int) -> int:
    """Bytes the namespace's builds keep in the store (each distinct blob once; collected builds keep none)."""
    blobs = (select(BuildArtifact.sha256, func.max(BuildArtifact.size).label("size"))
             .join(Build, col(Build.id) == BuildArtifact.build_id)
             .join(Environment, col(Environment.id) == Build.environment_id)
             .where(Environment.namespace_id == namespace_id)
             .group_by(col(BuildArtifact.sha256)).subquery())
    return int(session.exec(select(func.coalesce(func.sum(blobs.c.size), 0))).one())


def _lock_namespace(session: Session, namespace_id: int) -> None:
    session.execute(update(Namespace).where(col(Namespace.id) == namespace_id).values(id=Namespace.id)
                    .execution_options(synchronize_session=False))


def _take_submission(session: Session, key: str, limit: int) -> int | None:
    """Count one submission of ``key`` this minute; None when ``limit`` were counted already, else the count."""
    window = int(time.time() // 60)
    raise_count = (update(SubmissionCounter)
                   .where(col(SubmissionCounter.key) == key, col(SubmissionCounter.window) == window,
                          col(SubmissionCounter.count) < limit)
                   .values(count=SubmissionCounter.count + 1).execution_options(synchronize_session=False))
    if session.execute(raise_count).rowcount:  # type: ignore[attr-defined]
        return _count(session, key, window)
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    created = session.execute(insert_(SubmissionCounter).values(key=key, window=window, count=1)
                              .on_conflict_do_nothing().returning(col(SubmissionCounter.key))).all()
    if created:
        return 1
    if session.execute(raise_count).rowcount:  # type: ignore[attr-defined]  # created by another submission
        return _count(session, key, window)
    return None


def _count(session: Session, key: str, window: int) -> int:
    return int(session.exec(select(SubmissionCounter.count).where(SubmissionCounter.key == key,
                                                                  SubmissionCounter.window == window)).one())


def _warning(what: str, used: float, limit: float, shown: str) -> str | None:
    if limit and used >= WARN_FRACTION * limit:
        return f"envyard: warning: {what} at {used / limit:.0%} of its quota ({shown})\n"
    return None


def check_quotas(session: Session, namespace_id: int, requested_by: str | None,
                 defaults: QuotaSettings = QuotaSettings()) -> list[str]:
    """Hold the namespace's quotas for one more build (raising QuotaExceededError or TooManyRequestsError);
    the warning lines for quotas at 80 % or more. Call in the submission's transaction, before the build row is
    added; the caller commits."""
    _lock_namespace(session, namespace_id)
    row = session.get(NamespaceQuota, namespace_id)
    storage = row.storage_bytes if row and row.storage_bytes is not None else defaults.storage_bytes
    builds = row.concurrent_builds if row and row.concurrent_builds is not None else defaults.concurrent_builds
    rate = (row.submissions_per_minute if row and row.submissions_per_minute is not None
            else defaults.submissions_per_minute)
    warnings: list[str] = []
    if storage is not None:
        used = namespace_storage(session, namespace_id)
        shown = f"{format_size(used)} of {format_size(storage)}"
        if used >= storage:
            raise QuotaExceededError(
                f"the namespace's storage quota is used up: {shown}", field="storage_bytes",
                hint="remove old builds (envyard retention apply) or ask an admin to raise the quota",
                details={"quota": "storage_bytes", "limit": storage, "in_use": used})
        warnings.append(_warning("storage", used, storage, shown) or "")
    if builds is not None:
        waiting = int(session.exec(
            select(func.count()).select_from(Build).join(Environment, col(Environment.id) == Build.environment_id)
            .where(Environment.namespace_id == namespace_id, col(Build.status).in_(WAITING))).one())
        if waiting >= builds:
            raise TooManyRequestsError(
                f"the namespace has {waiting} of {builds} builds queued or running allowed",
                field="concurrent_builds", retry_after=BUILDS_RETRY_SECONDS,
                hint="wait for a build to finish, or ask an admin to raise the namespace's concurrent_builds quota",
                details={"quota": "concurrent_builds", "limit": builds, "in_use": waiting,
                         "retry_after": BUILDS_RETRY_SECONDS})
        warnings.append(_warning("builds queued or running", waiting + 1, builds, f"{waiting + 1} of {builds}") or "")
    if rate is not None and requested_by is not None:
        counted = _take_submission(session, f"user:{requested_by}", rate)
        if counted is None:
            raise TooManyRequestsError(
                f"{requested_by} submitted {rate} of {rate} builds allowed per minute", field="submissions_per_minute",
                retry_after=RATE_RETRY_SECONDS, hint="retry in a minute, or ask an admin to raise the rate",
                details={"quota": "submissions_per_minute", "limit": rate, "in_use": rate,
                         "retry_after": RATE_RETRY_SECONDS})
        warnings.append(_warning("submissions this minute", counted, rate, f"{counted} of {rate}") or "")
    return [line for line in warnings if line]
