"""Curated environments: promote a completed build into a curated namespace by reference, and deprecate an
environment in favour of a successor.

A promotion adds a build row to the curated environment that shares the source build's spec, lock, package list
and artifacts (the same blobs: nothing is rebuilt, the image keeps its digest), makes it the environment's current
build, and records a :class:`~api.models.Promotion` (retention keeps both builds while it exists).
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from envyard.api.models import (
    Build,
    BuildArtifact,
    BuildPackage,
    BuildStatus,
    Deprecation,
    Environment,
    Promotion,
    utcnow,
)
from envyard.api.services import catalog
from envyard.builder.errors import ConflictError, NotFoundError

__all__ = ["Deprecation", "deprecate", "deprecations", "promote", "set_pinned", "undeprecate"]


def promote(session: Session, source: Build, namespace: str, name: str, promoted_by: str | None = None) -> Build:
    """The curated environment ``namespace/name``'s build of ``source`` (created, or the existing one of an
    earlier promotion), its current build. The caller commits."""
    if source.status != BuildStatus.COMPLETED or source.collected_at is not None:
        raise ConflictError(f"build {source.id} is {'collected' if source.collected_at else source.status}",
                            field="build_id", hint="only a completed build that retention kept can be promoted")
    ns = catalog.ensure_namespace(session, namespace)
    assert ns.id is not None and source.id is not None
    environment = catalog.get_or_create(session, Environment, namespace_id=ns.id, name=name)
    if environment.id == source.environment_id:
        raise ConflictError(f"build {source.id} is a build of {namespace}/{name} already", field="namespace",
                            hint="promote it into another (curated) namespace")
    earlier = session.exec(select(Promotion).where(Promotion.source_build_id == source.id,
                                                   Promotion.environment_id == environment.id)).first()
    if earlier is not None:
        build = session.get(Build, earlier.build_id)
        assert build is not None
    else:
        now = utcnow()
        build = Build(environment_id=environment.id or 0, spec_id=source.spec_id, status=BuildStatus.COMPLETED,
                      platforms=list(source.platforms), options=dict(source.options), policy=dict(source.policy),
                      created_at=now, queued_at=now, started_at=now, finished_at=now,
                      image_digest=source.image_digest, lock_sha256=source.lock_sha256,
                      package_count=source.package_count, requested_by=promoted_by)
        session.add(build)
        session.flush()
        assert build.id is not None
        for artifact in session.exec(select(BuildArtifact).where(BuildArtifact.build_id == source.id)
                                     .order_by(col(BuildArtifact.id))).all():
            session.add(BuildArtifact(**artifact.model_dump(exclude={"id", "build_id"}), build_id=build.id))
        for package in session.exec(select(BuildPackage).where(BuildPackage.build_id == source.id)).all():
            session.add(BuildPackage(**package.model_dump(exclude={"id", "build_id"}), build_id=build.id))
        session.add(Promotion(source_build_id=source.id, build_id=build.id, environment_id=environment.id or 0,
                              promoted_by=promoted_by))
    environment.current_build_id = build.id
    catalog.touch(environment)
    session.flush()
    return build


def deprecate(session: Session, namespace: str, name: str, successor: str | None, message: str,
              deprecated_by: str | None = None) -> Deprecation:
    """Mark ``namespace/name`` deprecated (``successor``: NAMESPACE/NAME, which must exist). The caller commits."""
    environment = catalog.get_environment(session, namespace, name)
    if successor is not None:
        succ_ns, _, succ_name = successor.partition("/")
        if not succ_name:
            raise NotFoundError(f"successor '{successor}' is not NAMESPACE/NAME", field="successor",
                                hint="name the environment to use instead, e.g. global/python-3.12")
        catalog.get_environment(session, succ_ns, succ_name)
        if (succ_ns, succ_name) == (namespace, name):
            raise ConflictError("an environment cannot succeed itself", field="successor")
    row = session.get(Deprecation, environment.id) or Deprecation(environment_id=environment.id or 0)
    row.successor, row.message, row.deprecated_by, row.deprecated_at = successor, message, deprecated_by, utcnow()
    session.add(row)
    session.flush()
    return row


def undeprecate(session: Session, namespace: str, name: str) -> Deprecation | None:
    """Lift the deprecation (the removed row, or None if there was none). The caller commits."""
    environment = catalog.get_environment(session, namespace, name)
    row = session.get(Deprecation, environment.id)
    if row is not None:
        session.delete(row)
        session.flush()
    return row


def deprecations(session: Session, environment_ids: set[int]) -> dict[int, Deprecation]:
    if not environment_ids:
        return {}
    rows = session.exec(select(Deprecation).where(col(Deprecation.environment_id).in_(environment_ids))).all()
    return {row.environment_id: row for row in rows}


def set_pinned(session: Session, build: Build, pinned: bool) -> Build:
    """Pin (retention keeps it) or unpin a build. The caller commits."""
    build.pinned = pinned
    session.add(build)
    session.flush()
    return build
