"""Namespaces and environments: create, read, list (cursor pages, filters), update, delete; namespace grants.

Listings take ``readable``: the namespace names the caller may read (None: all), from
:func:`envyard.api.auth.scope.readable_namespaces`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from envyard.api.models import (
    ApiToken,
    BlobHold,
    Build,
    BuildArtifact,
    BuildPackage,
    DataSnapshotRecord,
    Deprecation,
    Environment,
    LogChunk,
    Namespace,
    NamespaceGrant,
    NamespaceQuota,
    NamespaceRole,
    NamespaceSecret,
    PolicyDocument,
    Promotion,
    Role,
    RunManifestRecord,
    utcnow,
)
from envyard.api.services.lookups import get_namespace
from envyard.api.services.pagination import clamp_limit, decode_cursor, encode_cursor
from envyard.builder.errors import ConflictError, NotFoundError


def create_namespace(session: Session, name: str, description: str = "", editor: int | None = None) -> Namespace:
    """A new namespace; ``editor``: the id of a token that gets the editor grant on it (its creator)."""
    if session.exec(select(Namespace.id).where(Namespace.name == name)).first() is not None:
        raise ConflictError(f"namespace '{name}' already exists", field="name", hint="choose another name")
    namespace = Namespace(name=name, description=description)
    session.add(namespace)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"namespace '{name}' already exists", field="name", hint="choose another name") from None
    if editor is not None:
        assert namespace.id is not None
        session.add(NamespaceGrant(namespace_id=namespace.id, token_id=editor, role=NamespaceRole.EDITOR))
        session.flush()
    return namespace


def create_namespace_if_absent(session: Session, name: str, editor: int | None = None) -> bool:
    """Create namespace ``name`` unless it exists (``editor`` as in :func:`create_namespace`); whether it did.

    Safe when another request creates it at the same moment: then this one did not.
    """
    if session.exec(select(Namespace.id).where(Namespace.name == name)).first() is not None:
        return False
    try:
        with session.begin_nested():
            namespace = Namespace(name=name)
            session.add(namespace)
            session.flush()
            if editor is not None:
                assert namespace.id is not None
                session.add(NamespaceGrant(namespace_id=namespace.id, token_id=editor, role=NamespaceRole.EDITOR))
    except IntegrityError:
        return False
    return True


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


def list_namespaces(session: Session, readable: Collection[str] | None = None) -> list[tuple[Namespace, int]]:
    counts = (
        select(Environment.namespace_id, func.count().label("n")).group_by(Environment.namespace_id).subquery()
    )
    query = (
        select(Namespace, func.coalesce(counts.c.n, 0))
        .join(counts, counts.c.namespace_id == Namespace.id, isouter=True)
        .order_by(Namespace.name)
    )
    if readable is not None:
        query = query.where(col(Namespace.name).in_(list(readable)))
    rows = session.exec(query).all()
    return [(namespace, int(count)) for namespace, count in rows]


def delete_namespace(session: Session, name: str) -> None:
    """Delete an empty namespace and its grants."""
    namespace = get_namespace(session, name)
    if session.exec(select(Environment.id).where(Environment.namespace_id == namespace.id)).first() is not None:
        raise ConflictError(
            f"namespace '{name}' still holds environments", hint="delete its environments first"
        )
    for grant in session.exec(select(NamespaceGrant).where(NamespaceGrant.namespace_id == namespace.id)).all():
        session.delete(grant)
    session.flush()
    from envyard.api.services import targets  # (targets imports this module)

    targets.delete_targets_of_namespace(session, namespace.id)
    for model in (NamespaceSecret, DataSnapshotRecord, PolicyDocument, NamespaceQuota):
        for row in session.exec(select(model).where(model.namespace_id == namespace.id)).all():
            session.delete(row)
    session.flush()
    session.delete(namespace)


def _delete_admin_rows(session: Session, environment_id: int, build_ids: list[int | None]) -> None:
    """An environment's policy and deprecation, and the promotions of its builds (a curated copy stays)."""
    rows: list[SQLModel] = [
        *session.exec(select(PolicyDocument).where(PolicyDocument.environment_id == environment_id)).all(),
        *session.exec(select(Deprecation).where(Deprecation.environment_id == environment_id)).all(),
        *session.exec(select(Promotion).where(col(Promotion.source_build_id).in_(build_ids)
                                              | col(Promotion.build_id).in_(build_ids)
                                              | (Promotion.environment_id == environment_id))).all(),
    ]
    for row in rows:
        session.delete(row)
    session.flush()


def update_namespace(session: Session, name: str, *, public: bool | None = None,
                     description: str | None = None, allow_sdists: bool | None = None) -> Namespace:
    namespace = get_namespace(session, name)
    if public is not None:
        namespace.public = public
    if allow_sdists is not None:
        namespace.allow_sdists = allow_sdists
    if description is not None:
        namespace.description = description
    session.flush()
    return namespace


def list_grants(session: Session, namespace: str) -> list[tuple[NamespaceGrant, ApiToken]]:
    """The grants on a namespace with their tokens, by token id."""
    found = get_namespace(session, namespace)
    return [(grant, token) for grant, token in session.exec(
        select(NamespaceGrant, ApiToken).join(ApiToken, col(ApiToken.id) == NamespaceGrant.token_id)
        .where(NamespaceGrant.namespace_id == found.id).order_by(col(NamespaceGrant.token_id))
    ).all()]


def grants_of_token(session: Session, token_id: int) -> dict[str, str]:
    """Namespace name -> the token's role there."""
    return dict(session.exec(
        select(Namespace.name, NamespaceGrant.role).join(Namespace, col(Namespace.id) == NamespaceGrant.namespace_id)
        .where(NamespaceGrant.token_id == token_id).order_by(Namespace.name)
    ).all())


def set_grant(session: Session, namespace: str, token_id: int, role: NamespaceRole) -> tuple[NamespaceGrant, ApiToken]:
    """Give token ``token_id`` ``role`` on ``namespace`` (replacing its grant there, if any)."""
    found = get_namespace(session, namespace)
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(f"token {token_id} does not exist", field="token_id",
                            hint="token ids are in the reply of POST /api/v1/tokens")
    if token.role in (Role.ADMIN, Role.WORKER):
        raise ConflictError(f"token {token_id} has the {token.role} role, which reads every namespace already",
                            field="token_id", hint="grants are for user and reader tokens")
    assert found.id is not None
    grant = get_or_create(session, NamespaceGrant, namespace_id=found.id, token_id=token_id)
    grant.role = role
    session.flush()
    return grant, token


def delete_grant(session: Session, namespace: str, token_id: int) -> None:
    found = get_namespace(session, namespace)
    grant = session.exec(select(NamespaceGrant).where(NamespaceGrant.namespace_id == found.id,
                                                      NamespaceGrant.token_id == token_id)).first()
    if grant is None:
        raise NotFoundError(f"token {token_id} has no grant on namespace '{namespace}'", field="token_id",
                            hint=f"list them: GET /api/v1/namespaces/{namespace}/grants")
    session.delete(grant)
    session.flush()


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
    readable: Collection[str] | None = None,
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
    if readable is not None:
        query = query.where(col(Namespace.name).in_(list(readable)))
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
    kept = sorted(set(session.exec(select(RunManifestRecord.build_id).where(
        col(RunManifestRecord.build_id).in_([b.id for b in builds]))).all()))
    if kept:
        raise ConflictError(
            f"run manifests name builds {kept} of environment '{namespace}/{name}'; they are kept so that the "
            "runs stay reproducible", hint="keep the environment (submit a new build to replace its current one)")
    environment.current_build_id = None
    session.flush()
    ids = [b.id for b in builds]
    from envyard.api.services import targets  # (targets imports this module)

    targets.delete_publications_of_builds(session, ids)
    _delete_admin_rows(session, environment.id or 0, ids)
    for model in (BuildArtifact, BuildPackage, LogChunk, BlobHold):
        for row in session.exec(select(model).where(model.build_id.in_(ids))).all():  # type: ignore[attr-defined]
            session.delete(row)
    session.flush()
    for build in builds:
        session.delete(build)
    session.flush()
    session.delete(environment)
