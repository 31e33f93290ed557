"""Usage: pulls and downloads recorded as they happen (one appended row each), and the usage report over a time
range (``GET /api/v1/usage``): builds, build minutes, failures by type, storage per namespace and environment,
pulls and downloads per environment and user."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime

from sqlalchemy import Engine, func, insert
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import (
    Build,
    BuildArtifact,
    BuildStatus,
    Environment,
    Namespace,
    UsageEvent,
    utcnow,
)

__all__ = ["count_download", "record_usage", "storage_by_environment", "usage_csv", "usage_report"]


def record_usage(session: Session, kind: str, namespace: str, environment: str, principal: str | None,
                 nbytes: int) -> None:
    """Append one pull (``manifest``, ``blob``) or ``artifact`` download of ``namespace/environment``: one INSERT,
    the environment's id found by a subquery. The caller commits."""
    environment_id = (select(Environment.id).join(Namespace, col(Namespace.id) == Environment.namespace_id)
                      .where(Namespace.name == namespace, Environment.name == environment).scalar_subquery())
    session.execute(insert(UsageEvent).values(at=utcnow(), kind=kind, environment_id=environment_id,
                                              principal=principal, bytes=nbytes))


def count_download(engine: Engine, kind: str, namespace: str, environment: str, principal: str | None,
                   nbytes: int) -> None:
    """:func:`record_usage` in a transaction of its own, for routes that only read (the /v2/ pulls)."""
    with session_scope(engine) as session:
        record_usage(session, kind, namespace, environment, principal, nbytes)


def storage_by_environment(session: Session) -> dict[tuple[str, str], int]:
    """(namespace, environment) -> bytes its builds keep (each distinct blob once per environment)."""
    blobs = (select(Namespace.name.label("ns"), Environment.name.label("env"),  # type: ignore[attr-defined]
                    BuildArtifact.sha256, func.max(BuildArtifact.size).label("size"))
             .join(Build, col(Build.id) == BuildArtifact.build_id)
             .join(Environment, col(Environment.id) == Build.environment_id)
             .join(Namespace, col(Namespace.id) == Environment.namespace_id)
             .group_by(col(Namespace.name), col(Environment.name), col(BuildArtifact.sha256)).subquery())
    rows = session.exec(select(blobs.c.ns, blobs.c.env, func.sum(blobs.c.size)).group_by(blobs.c.ns, blobs.c.env))
    return {(row[0], row[1]): int(row[2] or 0) for row in rows.all()}


def storage_by_namespace(session: Session) -> dict[str, int]:
    """Namespace -> bytes its builds keep (each distinct blob once per namespace)."""
    blobs = (select(Namespace.name.label("ns"), BuildArtifact.sha256,  # type: ignore[attr-defined]
                    func.max(BuildArtifact.size).label("size"))
             .join(Build, col(Build.id) == BuildArtifact.build_id)
             .join(Environment, col(Environment.id) == Build.environment_id)
             .join(Namespace, col(Namespace.id) == Environment.namespace_id)
             .group_by(col(Namespace.name), col(BuildArtifact.sha256)).subquery())
    rows = session.exec(select(blobs.c.ns, func.sum(blobs.c.size)).group_by(blobs.c.ns))
    return {row[0]: int(row[1] or 0) for row in rows.all()}


def usage_report(session: Session, since: datetime, until: datetime) -> dict[str, object]:
    """The usage report of [since, until): a JSON-able mapping (see docs/admin.md)."""
    names = {row[0]: f"{row[1]}/{row[2]}" for row in session.exec(
        select(Environment.id, Namespace.name, Environment.name)
        .join(Namespace, col(Namespace.id) == Environment.namespace_id)).all()}
    created = session.exec(select(Build.environment_id, Build.status).where(
        col(Build.created_at) >= since, col(Build.created_at) < until)).all()
    finished = session.exec(select(Build.environment_id, Build.status, Build.error_code, Build.started_at,
                                   Build.finished_at).where(col(Build.finished_at) >= since,
                                                            col(Build.finished_at) < until)).all()
    minutes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for environment_id, status, error_code, started, ended in finished:
        if started is not None and ended is not None:
            minutes[names.get(environment_id, "?")] += (ended - started).total_seconds() / 60
        if status == BuildStatus.FAILED:
            failures[error_code or "unknown"] += 1
    submitted = Counter(names.get(environment_id, "?") for environment_id, _ in created)
    pulls = session.exec(
        select(UsageEvent.environment_id, UsageEvent.principal, UsageEvent.kind, func.count(),
               func.sum(UsageEvent.bytes))
        .where(col(UsageEvent.at) >= since, col(UsageEvent.at) < until)
        .group_by(col(UsageEvent.environment_id), col(UsageEvent.principal), col(UsageEvent.kind))).all()
    return {
        "since": since.isoformat(), "until": until.isoformat(),
        "builds": {"submitted": len(created), "finished": len(finished),
                   "by_status": dict(Counter(status for _, status, *_ in finished)),
                   "by_environment": dict(sorted(submitted.items()))},
        "build_minutes": {"total": round(sum(minutes.values()), 4),
                          "by_environment": {k: round(v, 4) for k, v in sorted(minutes.items())}},
        "failures": dict(sorted(failures.items())),
        "storage": {"namespaces": dict(sorted(storage_by_namespace(session).items())),
                    "environments": {f"{ns}/{env}": size
                                     for (ns, env), size in sorted(storage_by_environment(session).items())}},
        "pulls": [{"environment": names.get(environment_id) if environment_id is not None else None,
                   "user": principal, "kind": kind, "count": int(count), "bytes": int(size or 0)}
                  for environment_id, principal, kind, count, size in sorted(
                      pulls, key=lambda r: (r[0] or 0, r[1] or "", r[2]))],
    }


def usage_csv(report: dict[str, object]) -> str:
    """The report as CSV: one row per figure (``section,environment,user,key,value``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "environment", "user", "key", "value"])
    builds: dict = report["builds"]  # type: ignore[assignment]
    writer.writerow(["builds", "", "", "submitted", builds["submitted"]])
    writer.writerow(["builds", "", "", "finished", builds["finished"]])
    for status, count in builds["by_status"].items():
        writer.writerow(["builds", "", "", f"status:{status}", count])
    for environment, count in builds["by_environment"].items():
        writer.writerow(["builds", environment, "", "submitted", count])
    build_minutes: dict = report["build_minutes"]  # type: ignore[assignment]
    writer.writerow(["build_minutes", "", "", "total", build_minutes["total"]])
    for environment, value in build_minutes["by_environment"].items():
        writer.writerow(["build_minutes", environment, "", "minutes", value])
    for code, count in report["failures"].items():  # type: ignore[attr-defined]
        writer.writerow(["failures", "", "", code, count])
    storage: dict = report["storage"]  # type: ignore[assignment]
    for namespace, size in storage["namespaces"].items():
        writer.writerow(["storage", namespace, "", "namespace_bytes", size])
    for environment, size in storage["environments"].items():
        writer.writerow(["storage", environment, "", "bytes", size])
    for pull in report["pulls"]:  # type: ignore[attr-defined]
        writer.writerow(["pulls", pull["environment"] or "", pull["user"] or "", pull["kind"], pull["count"]])
    return out.getvalue()
