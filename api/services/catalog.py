"""Namespaces and environments: create, read, list (cursor pages, filters), update, delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from api.models import Build, BuildArtifact, BuildPackage, Environment, LogChunk, Namespace, utcnow
from api.services.pagination import clamp_limit, decode_cursor, encode_cursor
from builder.errors import ConflictError, NotFoundError


def get_namespace(session: Session, name: str) -> Namespace:
    namespace = session.exec(select(Namespace).where(Namespace.name == name)).first()
    if namespace is None:
        raise NotFoundError(f"namespace '{name}' does not exist", hint="create it with POST /api/v1/namespaces")
    return namespace


def create_namespace(session: Session, name: str, description: str = "") -> Namespace:
    if session.exec(select(Namespace.id).where(Namespace.name == name)).first() is not None:
        raise ConflictError(f"namespace '{name}' already exists", field="name", hint="choose another name")
    namespace = Namespace(name=name, description=description)
    session.add(namespace)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"namespace '{name}' already exists", field="name", hint="choose another name") from None
    return namespace


M = TypeVar("M", bound=SQLModel)


def get_or_create(session: Session, model: type[M], **key: Any) -> M:
    """The row with these column values, inserted if absent; safe when another request inserts it first."""
    query = select(model).filter_by(**key)
    found = session.exec(query).first()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            row = model(**key)
            session.add(row)
        return row
    except IntegrityError:
        found = session.exec(query).first()
        assert found is not None
        return found


def ensure_namespace(session: Session, name: str) -> Namespace:
    return get_or_create(session, Namespace, name=name)


def list_namespaces(session: Session) -> list[tuple[Namespace, int]]:
    counts = (
        select(Environment.namespace_id, func.count().label("n")).group_by(Environment.namespace_id).subquery()
    )
    rows = session.exec(
        select(Namespace, func.coalesce(counts.c.n, 0))
        .join(counts, counts.c.namespace_id == Namespace.id, isouter=True)
        .order_by(Namespace.name)
    ).all()
    return [(namespace, int(count)) for namespace, count in rows]


def delete_namespace(session: Session, name: str) -> None:
    namespace = get_namespace(session, name)
    if session.exec(select(Environment.id).where(Environment.namespace_id == namespace.id)).first() is not None:
        raise ConflictError(
            f"namespace '{name}' still holds environments", hint="delete its environments first"
        )
    session.delete(namespace)


def get_environment(session: Session, namespace: str, name: str) -> Environment:
    environment = session.exec(
        select(Environment).join(Namespace).where(Namespace.name == namespace, Environment.name == name)
    ).first()
    if environment is None:
        raise NotFoundError(
            f"environment '{namespace}/{name}' does not exist",
            hint="list environments with GET /api/v1/environments or create it with POST /api/v1/environments",
        )
    return environment


def list_environments(
    session: Session,
    *,
    namespace: str | None = None,
    name: str | None = None,
    package: str | None = None,
    package_version: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[Sequence[tuple[Environment, str, Build | None]], str | None]:
    """A page of environments ordered by id, with their namespace name and current build."""
    limit = clamp_limit(limit)
    query = (
        select(Environment, Namespace.name, Build)
        .join(Namespace, Namespace.id == Environment.namespace_id)
        .join(Build, Build.id == Environment.current_build_id, isouter=True)
        .where(Environment.id > decode_cursor(cursor))
    )
    if namespace:
        query = query.where(Namespace.name == namespace)
    if name:
        query = query.where(Environment.name.contains(name))  # type: ignore[attr-defined]
    if package:
        contained = select(BuildPackage.build_id).where(BuildPackage.name == package)
        if package_version:
            contained = contained.where(BuildPackage.version == package_version)
        query = query.where(Environment.current_build_id.in_(contained))  # type: ignore[union-attr]
    rows = session.exec(query.order_by(Environment.id).limit(limit + 1)).all()
    next_cursor = encode_cursor(rows[limit - 1][0].id or 0) if len(rows) > limit else None
    return rows[:limit], next_cursor


def touch(environment: Environment) -> None:
    environment.updated_at = utcnow()


def delete_environment(session: Session, namespace: str, name: str) -> None:
    """Delete an environment that has no build running; its builds' records go with it."""
    environment = get_environment(session, namespace, name)
    builds = session.exec(select(Build).where(Build.environment_id == environment.id)).all()
    running = [b.id for b in builds if b.status not in ("completed", "failed", "canceled")]
    if running:
        raise ConflictError(
            f"environment '{namespace}/{name}' has builds in progress: {running}", hint="cancel them first"
        )
    environment.current_build_id = None
    session.flush()
    ids = [b.id for b in builds]
    for model in (BuildArtifact, BuildPackage, LogChunk):
        for row in session.exec(select(model).where(model.build_id.in_(ids))).all():  # type: ignore[attr-defined]
            session.delete(row)
    session.flush()
    for build in builds:
        session.delete(build)
    session.flush()
    session.delete(environment)
