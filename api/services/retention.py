"""Retention: which builds a namespace keeps, and collecting the others (their artifacts and image blobs).

A namespace's retention (``NamespaceQuota.keep_last`` / ``keep_days``; neither set: every build is kept) keeps, per
environment, the last ``keep_last`` builds and the builds younger than ``keep_days`` days, and always keeps the
current build, pinned builds, builds not finished yet, builds a promotion references (its source and the curated
copy), builds a run manifest names, and any more a caller names (``external_references``). Every other
build is *collected*: its row stays (marked ``collected_at``, its log and package list kept) and its artifact rows
go; the blobs no other build references are then deleted through garbage collection's protocol
(:func:`api.services.gc.delete_blobs`). A dry run reports the same builds, blobs and bytes without changing
anything; the real run frees exactly those blobs unless a build took one of them meanwhile (then it is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import (
    TERMINAL,
    BlobHold,
    Build,
    BuildArtifact,
    Environment,
    Namespace,
    NamespaceQuota,
    Promotion,
    RunManifestRecord,
    utcnow,
)
from envyard.api.schemas import RetainedBuild, RetentionReport
from envyard.api.services import gc
from envyard.api.services.lookups import get_namespace
from envyard.api.storage import ArtifactStore
from envyard.api.storage.base import ListedBlob

__all__ = ["ExternalReferences", "apply_retention", "collectable_builds", "retained_build_ids"]

ExternalReferences = Callable[[Session, int], Collection[int]]
"""Build ids of one namespace (its id is the second argument) referenced outside the build tables, which retention
keeps besides the run manifests' builds (always kept)."""

TERMINAL_VALUES = tuple(s.value for s in TERMINAL)


def retained_build_ids(session: Session, namespace_id: int, *, now: datetime | None = None,
                       external_references: ExternalReferences | None = None) -> set[int] | None:
    """The builds of the namespace its retention keeps (None: it has no retention, everything is kept).

    Builds a run manifest names are always kept; ``external_references``: more build ids to keep."""
    quota = session.get(NamespaceQuota, namespace_id)
    if quota is None or (quota.keep_last is None and quota.keep_days is None):
        return None
    now = now or utcnow()
    rows = session.exec(
        select(Build.id, Build.environment_id, Build.created_at, Build.status, Build.pinned,
               Environment.current_build_id)
        .join(Environment, col(Environment.id) == Build.environment_id)
        .where(Environment.namespace_id == namespace_id)
        .order_by(col(Build.environment_id), col(Build.id).desc())).all()
    ids = {row[0] for row in rows}
    kept: set[int] = set()
    seen: dict[int, int] = {}
    young = now - timedelta(days=quota.keep_days) if quota.keep_days is not None else None
    for build_id, environment_id, created_at, status, pinned, current in rows:
        assert build_id is not None
        seen[environment_id] = seen.get(environment_id, 0) + 1
        if (build_id == current or pinned or status not in TERMINAL_VALUES
                or (quota.keep_last is not None and seen[environment_id] <= quota.keep_last)
                or (young is not None and created_at >= young)):
            kept.add(build_id)
    promoted = session.exec(select(Promotion.source_build_id, Promotion.build_id).where(
        col(Promotion.source_build_id).in_(ids) | col(Promotion.build_id).in_(ids))).all()
    kept |= {i for pair in promoted for i in pair} & ids
    kept |= set(session.exec(select(RunManifestRecord.build_id).where(col(RunManifestRecord.build_id).in_(ids)))
                .all())  # a run manifest names them: they must still run and verify
    if external_references is not None:
        kept |= set(external_references(session, namespace_id)) & ids
    return kept


def collectable_builds(session: Session, namespace: str | None = None, *, now: datetime | None = None,
                       external_references: ExternalReferences | None = None) -> list[Build]:
    """Builds retention would collect (of ``namespace``, or every namespace), oldest first."""
    query = select(Namespace)
    if namespace is not None:
        query = query.where(Namespace.id == get_namespace(session, namespace).id)
    found: list[Build] = []
    for ns in session.exec(query.order_by(col(Namespace.id))).all():
        assert ns.id is not None
        kept = retained_build_ids(session, ns.id, now=now, external_references=external_references)
        if kept is None:
            continue
        found += session.exec(
            select(Build).join(Environment, col(Environment.id) == Build.environment_id)
            .where(Environment.namespace_id == ns.id, col(Build.collected_at).is_(None),
                   col(Build.id).not_in(kept) if kept else col(Build.id).is_not(None))
            .order_by(col(Build.id))).all()
    return found


def _freed_blobs(session: Session, build_ids: Sequence[int]) -> dict[str, int]:
    """sha256 -> size of the blobs only ``build_ids`` reference (and no unfinished build holds)."""
    if not build_ids:
        return {}
    theirs = dict(session.exec(select(BuildArtifact.sha256, func.max(BuildArtifact.size))
                               .where(col(BuildArtifact.build_id).in_(build_ids))
                               .group_by(col(BuildArtifact.sha256))).all())
    others = set(session.exec(select(BuildArtifact.sha256).distinct().where(
        col(BuildArtifact.sha256).in_(list(theirs)), col(BuildArtifact.build_id).not_in(build_ids))).all())
    held = set(session.exec(select(BlobHold.sha256).join(Build, col(Build.id) == BlobHold.build_id).where(
        col(BlobHold.sha256).in_(list(theirs)), col(Build.status).not_in(TERMINAL_VALUES))).all())
    return {sha: int(size) for sha, size in sorted(theirs.items()) if sha not in others and sha not in held}


def _environment_names(session: Session, builds: Sequence[Build]) -> dict[int, str]:
    rows = session.exec(select(Environment.id, Namespace.name, Environment.name)
                        .join(Namespace, col(Namespace.id) == Environment.namespace_id)
                        .where(col(Environment.id).in_({b.environment_id for b in builds}))).all()
    return {row[0]: f"{row[1]}/{row[2]}" for row in rows if row[0] is not None}


def apply_retention(engine: Engine, store: ArtifactStore, *, namespace: str | None = None, dry_run: bool = True,
                    now: datetime | None = None,
                    external_references: ExternalReferences | None = None) -> RetentionReport:
    """Collect what retention does not keep (or, ``dry_run``, report it): one transaction marks the builds and
    removes their artifact rows, then their blobs no other build references are deleted."""
    with session_scope(engine) as session:
        builds = collectable_builds(session, namespace, now=now, external_references=external_references)
        ids = [b.id for b in builds if b.id is not None]
        blobs = _freed_blobs(session, ids)
        names = _environment_names(session, builds)
        views = [RetainedBuild(id=b.id or 0, environment=names.get(b.environment_id, "?"), status=b.status,
                               created_at=b.created_at) for b in builds]
        if not dry_run and ids:
            session.execute(update(Build).where(col(Build.id).in_(ids), col(Build.collected_at).is_(None))
                            .values(collected_at=utcnow()).execution_options(synchronize_session=False))
            session.execute(delete(BuildArtifact).where(col(BuildArtifact.build_id).in_(ids)))
    report = RetentionReport(dry_run=dry_run, builds=views, blobs=list(blobs), bytes=sum(blobs.values()))
    if not dry_run and blobs:
        stamp = utcnow()
        deleted, deleted_bytes = gc.delete_blobs(engine, store, [ListedBlob(sha, size, stamp)
                                                                 for sha, size in blobs.items()])
        report.freed_blobs, report.freed_bytes = deleted, deleted_bytes
    return report
