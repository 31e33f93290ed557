"""Resolve the resource a request names, then authorize the caller on it: one dependency per kind of resource.

Each dependency takes all the path parameters of its resource with their strict types (:data:`api.ids.Id` for ids),
so FastAPI answers 422 for anything that is not a canonical id before anything is looked up; then it loads the
resource with exactly those values, and :func:`envyard.api.auth.policy.check` decides on the namespaces it
belongs to. A route takes one such dependency per resource, and one for all the parameters of a resource named by
several (a grant: namespace and token id), since FastAPI runs a dependency whose parameters are valid even when
another's are not. The route receives what was authorized (the build, the environment, ...) and works on that, not
on the raw path.

A resource that does not exist is answered like one the caller may not read (the kind's 404; 401 without
credentials), so ids and names tell nothing about other namespaces. The lookups use a short session of their own
(:func:`envyard.api.db.session_scope` on the engine of :func:`envyard.api.deps.get_engine`): a streaming route
(logs, uploads) holds no database connection for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import col, select

from envyard.api.auth.bindings import qualified
from envyard.api.auth.policy import allows, check
from envyard.api.auth.principals import Action, Principal, public_namespaces
from envyard.api.db import session_scope
from envyard.api.deps import EngineDep, current_principal
from envyard.api.ids import Id
from envyard.api.models import (
    ApiToken,
    Build,
    BuildArtifact,
    DataSnapshotRecord,
    Environment,
    Namespace,
    RoleBinding,
    RunManifestRecord,
)
from envyard.builder.errors import NotFoundError, PermissionDeniedError

__all__ = [
    "BuildPair",
    "EnvironmentRef",
    "GrantRef",
    "binding_for",
    "blob_for",
    "build_for",
    "build_pair_for",
    "environment_for",
    "grant_for",
    "manifest_for",
    "namespace_for",
    "own_token_for",
    "snapshot_for",
    "token_for",
    "visible_environment",
]

PRINCIPAL = Depends(current_principal)
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def _named(dependency: Callable[..., object], kind: str, action: Action) -> None:
    dependency.__name__ = f"{kind}_for_{action}"


# --- builds (build_id, and other_id of a diff; the worker protocol's build_id) ----------------------------------------


def _build(request: Request, engine: Engine, principal: Principal, action: Action, build_id: int) -> Build:
    if principal.build is not None and principal.build.build_id != build_id:
        raise PermissionDeniedError(f"this token is scoped to build {principal.build.build_id}, not {build_id}",
                                    hint="a build-scoped worker token works on its own build only")
    with session_scope(engine) as session:
        found = session.exec(
            select(Build, Namespace.name, Environment.name)
            .join(Environment, col(Environment.id) == Build.environment_id)
            .join(Namespace, col(Namespace.id) == Environment.namespace_id).where(col(Build.id) == build_id)
        ).first()
    check(request, principal, action, frozenset({qualified(found[1], found[2])}) if found else frozenset(),
          label="this build",
          hidden=lambda: NotFoundError(f"build {build_id} does not exist", hint="list builds with GET /api/v1/builds"))
    assert found is not None  # check() denies what was not found
    return found[0]


def build_for(action: Action) -> Callable[..., Build]:
    """The build of path parameter ``build_id``, if the caller may ``action`` its namespace."""

    def dependency(request: Request, engine: EngineDep, build_id: Id, principal: Principal = PRINCIPAL) -> Build:
        return _build(request, engine, principal, action, build_id)

    _named(dependency, "build", action)
    return dependency


@dataclass(frozen=True, slots=True)
class BuildPair:
    """The builds of path parameters ``build_id`` and ``other_id``."""

    build: Build
    other: Build


def build_pair_for(action: Action) -> Callable[..., BuildPair]:
    """Both builds of a path naming two (a diff), if the caller may ``action`` each; one dependency, so that an
    invalid id in either place is a 422 before anything is decided."""

    def dependency(request: Request, engine: EngineDep, build_id: Id, other_id: Id,
                   principal: Principal = PRINCIPAL) -> BuildPair:
        return BuildPair(_build(request, engine, principal, action, build_id), _build(request, engine, principal,
                         action, other_id))

    _named(dependency, "build_pair", action)
    return dependency


# --- namespaces and environments -------------------------------------------------------------------------------------


def _namespace(request: Request, engine: Engine, principal: Principal, action: Action, namespace: str) -> Namespace:
    with session_scope(engine) as session:
        found = session.exec(select(Namespace).where(Namespace.name == namespace)).first()
    check(request, principal, action, frozenset({found.name}) if found else frozenset(), label="this namespace",
          hidden=lambda: NotFoundError(f"namespace '{namespace}' does not exist",
                                       hint="list namespaces with GET /api/v1/namespaces"))
    assert found is not None
    return found


def namespace_for(action: Action) -> Callable[..., Namespace]:
    """The namespace of path parameter ``namespace``, if the caller may ``action`` it."""

    def dependency(request: Request, engine: EngineDep, namespace: str, principal: Principal = PRINCIPAL) -> Namespace:
        return _namespace(request, engine, principal, action, namespace)

    _named(dependency, "namespace", action)
    return dependency


@dataclass(frozen=True, slots=True)
class EnvironmentRef:
    """An environment and the name of its namespace."""

    namespace: str
    environment: Environment

    @property
    def name(self) -> str:
        return self.environment.name


def visible_environment(request: Request, engine: Engine, principal: Principal, action: Action, namespace: str,
                        name: str) -> EnvironmentRef:
    """Environment ``namespace/name`` if ``principal`` may ``action`` it; its 404 alike when unknown or hidden."""
    with session_scope(engine) as session:
        found = session.exec(
            select(Environment).join(Namespace, col(Namespace.id) == Environment.namespace_id)
            .where(Namespace.name == namespace, Environment.name == name)
        ).first()
    check(request, principal, action, frozenset({qualified(namespace, name)}) if found else frozenset(),
          label="this environment",
          hidden=lambda: NotFoundError(
              f"environment '{namespace}/{name}' does not exist",
              hint="list environments with GET /api/v1/environments or create it with POST /api/v1/environments"))
    assert found is not None
    return EnvironmentRef(namespace, found)


def environment_for(action: Action) -> Callable[..., EnvironmentRef]:
    """The environment of path parameters ``namespace`` and ``name``, if the caller may ``action`` it."""

    def dependency(request: Request, engine: EngineDep, namespace: str, name: str,
                   principal: Principal = PRINCIPAL) -> EnvironmentRef:
        return visible_environment(request, engine, principal, action, namespace, name)

    _named(dependency, "environment", action)
    return dependency


# --- blobs by digest, tokens -----------------------------------------------------------------------------------------


def blob_for(action: Action) -> Callable[..., BuildArtifact]:
    """An artifact with the digest of path parameter ``digest`` (``sha256:<hex>``) in a namespace the caller may
    ``action`` (a blob may belong to builds of several namespaces: one of them suffices)."""

    def dependency(request: Request, engine: EngineDep, digest: str, principal: Principal = PRINCIPAL) -> BuildArtifact:
        rows: list[tuple[BuildArtifact, str]] = []
        if SHA256.fullmatch(digest):
            with session_scope(engine) as session:
                rows = [(a, n) for a, n in session.exec(
                    select(BuildArtifact, Namespace.name).join(Build, col(Build.id) == BuildArtifact.build_id)
                    .join(Environment, col(Environment.id) == Build.environment_id)
                    .join(Namespace, col(Namespace.id) == Environment.namespace_id)
                    .where(BuildArtifact.sha256 == digest.removeprefix("sha256:")).order_by(col(BuildArtifact.id))
                ).all()]
        def missing() -> NotFoundError:
            return NotFoundError(f"no published artifact has digest '{digest}'", field="digest",
                                 hint="digests look like sha256:<64 hex digits>; see a build's artifact list")

        allowed = check(request, principal, action, frozenset(n for _, n in rows), label="this blob", hidden=missing)
        public = public_namespaces(allowed.source) if allowed.restricted and allowed.source else frozenset()
        found = next((a for a, n in rows if allows(allowed, action, n, public)), None)  # check() saw one
        if found is None:
            raise missing()
        return found

    _named(dependency, "blob", action)
    return dependency


def _token(request: Request, engine: Engine, principal: Principal, action: Action, token_id: int) -> ApiToken:
    check(request, principal, action, None)  # tokens belong to no namespace: the role decides, before any lookup
    with session_scope(engine) as session:
        found = session.get(ApiToken, token_id)
    if found is None:
        raise NotFoundError(f"token {token_id} does not exist", field="token_id",
                            hint="token ids are in the reply of POST /api/v1/tokens")
    return found


def token_for(action: Action) -> Callable[..., ApiToken]:
    """The token of path parameter ``token_id`` (revoked ones included), for callers whose role allows
    ``action``."""

    def dependency(request: Request, engine: EngineDep, token_id: Id, principal: Principal = PRINCIPAL) -> ApiToken:
        return _token(request, engine, principal, action, token_id)

    _named(dependency, "token", action)
    return dependency


@dataclass(frozen=True, slots=True)
class GrantRef:
    """A namespace and a token: the grant of path ``/namespaces/{namespace}/grants/{token_id}``, which may not exist
    yet."""

    namespace: Namespace
    token: ApiToken


def grant_for(action: Action) -> Callable[..., GrantRef]:
    """The namespace and token of a grant's path, if the caller may ``action`` the namespace. One dependency for
    both parameters, so that an invalid ``token_id`` is a 422 before anything is decided."""

    def dependency(request: Request, engine: EngineDep, namespace: str, token_id: Id,
                   principal: Principal = PRINCIPAL) -> GrantRef:
        found = _namespace(request, engine, principal, action, namespace)
        return GrantRef(found, _token(request, engine, principal, action, token_id))

    _named(dependency, "grant", action)
    return dependency


# --- data snapshots and run manifests of a namespace -----------------------------------------------------------------


def snapshot_for(action: Action) -> Callable[..., DataSnapshotRecord]:
    """The data snapshot of path parameters ``namespace`` and ``snapshot_id``, if the caller may ``action`` the
    namespace; an unknown snapshot (or one of another namespace) is the snapshot's 404."""

    def dependency(request: Request, engine: EngineDep, namespace: str, snapshot_id: Id,
                   principal: Principal = PRINCIPAL) -> DataSnapshotRecord:
        with session_scope(engine) as session:
            found = session.exec(select(DataSnapshotRecord).join(
                Namespace, col(Namespace.id) == DataSnapshotRecord.namespace_id)
                .where(Namespace.name == namespace, col(DataSnapshotRecord.id) == snapshot_id)).first()
        check(request, principal, action, frozenset({namespace}) if found else frozenset(), label="this snapshot",
              hidden=lambda: NotFoundError(f"data snapshot {snapshot_id} does not exist in namespace '{namespace}'",
                                           field="snapshot_id", hint=f"list them: envyard data list --namespace "
                                           f"{namespace} (GET /api/v1/namespaces/{namespace}/data-snapshots)"))
        assert found is not None
        return found

    _named(dependency, "snapshot", action)
    return dependency


def manifest_for(action: Action) -> Callable[..., RunManifestRecord]:
    """The run manifest of path parameters ``namespace`` and ``digest`` (``sha256:<hex>``), if the caller may
    ``action`` the namespace."""

    def dependency(request: Request, engine: EngineDep, namespace: str, digest: str,
                   principal: Principal = PRINCIPAL) -> RunManifestRecord:
        found = None
        if SHA256.fullmatch(digest):
            with session_scope(engine) as session:
                found = session.exec(select(RunManifestRecord).join(
                    Namespace, col(Namespace.id) == RunManifestRecord.namespace_id)
                    .where(Namespace.name == namespace,
                           RunManifestRecord.sha256 == digest.removeprefix("sha256:"))).first()
        check(request, principal, action, frozenset({namespace}) if found else frozenset(), label="this manifest",
              hidden=lambda: NotFoundError(f"run manifest {digest!r} does not exist in namespace '{namespace}'",
                                           field="digest", hint=f"digests look like sha256:<64 hex digits>; list "
                                           f"them: envyard manifest list --namespace {namespace}"))
        assert found is not None
        return found

    _named(dependency, "manifest", action)
    return dependency


def own_token_for() -> Callable[..., ApiToken]:
    """The token of path parameter ``token_id`` if the caller is an admin, the token itself or its owner's
    user; others get the same 404 as for a token that does not exist."""

    def dependency(request: Request, engine: EngineDep, token_id: Id, principal: Principal = PRINCIPAL) -> ApiToken:
        check(request, principal, Action.READ, None)  # a token at all
        with session_scope(engine) as session:
            found = session.get(ApiToken, token_id)
        mine = found is not None and (not principal.restricted or found.id == principal.token_id
                                      or (principal.user_id is not None and found.user_id == principal.user_id))
        if found is None or not mine:
            raise NotFoundError(f"token {token_id} does not exist", field="token_id",
                                hint="list your tokens: envyard token list")
        return found

    dependency.__name__ = "own_token_for"
    return dependency


def binding_for(action: Action) -> Callable[..., RoleBinding]:
    """The role binding of path parameter ``binding_id``, for callers whose role allows ``action`` (bindings
    belong to no namespace: the role decides, before any lookup)."""

    def dependency(request: Request, engine: EngineDep, binding_id: Id,
                   principal: Principal = PRINCIPAL) -> RoleBinding:
        check(request, principal, action, None)
        with session_scope(engine) as session:
            found = session.get(RoleBinding, binding_id)
        if found is None:
            raise NotFoundError(f"binding {binding_id} does not exist", field="binding_id",
                                hint="list them: envyard access list")
        return found

    _named(dependency, "binding", action)
    return dependency
