"""/api/v1/namespaces (with their grants and public flag) and /api/v1/environments."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from envyard.api.auth.bindings import qualified
from envyard.api.auth.policy import require
from envyard.api.auth.principals import Action, Principal, TokenCache
from envyard.api.auth.scope import readable, readable_namespaces
from envyard.api.deps import CurrentPrincipal, Editor, LoadDep, Reader, SessionDep, SettingsDep, TokenCacheDep
from envyard.api.models import ApiToken, Build, Environment, Namespace, NamespaceGrant, NamespaceRole
from envyard.api.resources import EnvironmentRef, GrantRef, environment_for, grant_for, namespace_for
from envyard.api.schemas import (
    BuildRead,
    BuildSubmit,
    DeprecationRead,
    EnvironmentCreate,
    EnvironmentRead,
    EnvironmentUpdate,
    GrantRead,
    GrantSet,
    NamespaceCreate,
    NamespaceRead,
    NamespaceUpdate,
    Page,
    SetCurrent,
)
from envyard.api.services import builds, catalog, curation, policies
from envyard.api.services.audit import record_audit
from envyard.api.services.quotas import QuotaSettings
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import PermissionDeniedError
from envyard.builder.policy import Policy

router = APIRouter(prefix="/api/v1", tags=["environments"])
READ_NAMESPACE = Depends(namespace_for(Action.READ))
WRITE_NAMESPACE = Depends(namespace_for(Action.WRITE))
ADMIN_NAMESPACE = Depends(namespace_for(Action.ADMIN))
GRANT = Depends(grant_for(Action.ADMIN))
READ_ENVIRONMENT = Depends(environment_for(Action.READ))
WRITE_ENVIRONMENT = Depends(environment_for(Action.WRITE))


def _namespace_view(namespace: Namespace, environments: int = 0) -> NamespaceRead:
    return NamespaceRead(name=namespace.name, description=namespace.description, created_at=namespace.created_at,
                         environments=environments, public=namespace.public, allow_sdists=namespace.allow_sdists)


def _forget_access(cache: TokenCache) -> None:
    """Drop cached principals and public namespaces after an access change (other replicas: within seconds)."""
    cache.clear()


@router.post("/namespaces", status_code=201)
def create_namespace(body: NamespaceCreate, session: SessionDep,
                     principal: Editor) -> NamespaceRead:
    """A new namespace; a user token that creates one becomes its editor."""
    namespace = catalog.create_namespace(session, body.name, body.description,
                                         editor=principal.token_id if principal.restricted else None)
    session.commit()
    return _namespace_view(namespace)


@router.get("/namespaces")
def list_namespaces(request: Request, session: SessionDep,
                    principal: Reader) -> list[NamespaceRead]:
    """The namespaces the caller may read."""
    return [_namespace_view(n, count)
            for n, count in catalog.list_namespaces(session, readable_namespaces(principal))]


@router.get("/namespaces/{namespace}")
def get_namespace(found: Namespace = READ_NAMESPACE) -> NamespaceRead:
    return _namespace_view(found)


@router.patch("/namespaces/{namespace}")
def update_namespace(body: NamespaceUpdate, request: Request, session: SessionDep, cache: TokenCacheDep,
                     principal: CurrentPrincipal, namespace: Namespace = ADMIN_NAMESPACE) -> NamespaceRead:
    """Make a namespace public (anyone may read and pull it, without a token) or private; edit its description;
    allow or forbid pip source distributions in its builds (admin only)."""
    if body.allow_sdists is not None and principal.restricted:  # sdists run their code on the workers
        raise PermissionDeniedError("only an admin token may allow or forbid source distributions",
                                    field="allow_sdists", hint="ask an admin: envyard namespace sdists NS on|off")
    before = _namespace_view(namespace)
    found = catalog.update_namespace(session, namespace.name, public=body.public, description=body.description,
                                     allow_sdists=body.allow_sdists)
    record_audit(session, principal, "namespace.update", f"namespace {namespace.name}", before, _namespace_view(found))
    session.commit()
    _forget_access(cache)
    return _namespace_view(found)


@router.delete("/namespaces/{namespace}", status_code=204)
def delete_namespace(request: Request, session: SessionDep, cache: TokenCacheDep,
                     principal: CurrentPrincipal, namespace: Namespace = WRITE_NAMESPACE) -> Response:
    before = _namespace_view(namespace)
    catalog.delete_namespace(session, namespace.name)
    record_audit(session, principal, "namespace.delete", f"namespace {namespace.name}", before, None)
    session.commit()
    _forget_access(cache)
    return Response(status_code=204)


def _grant_view(namespace: str, grant: NamespaceGrant, token: ApiToken) -> GrantRead:
    return GrantRead(namespace=namespace, token_id=grant.token_id, token_name=token.name, token_role=token.role,
                     role=grant.role, created_at=grant.created_at)


@router.get("/namespaces/{namespace}/grants")
def list_grants(session: SessionDep, namespace: Namespace = ADMIN_NAMESPACE) -> list[GrantRead]:
    """Which tokens have which role on the namespace (admin and worker tokens need none)."""
    return [_grant_view(namespace.name, grant, token) for grant, token in catalog.list_grants(session, namespace.name)]


@router.put("/namespaces/{namespace}/grants/{token_id}")
def set_grant(body: GrantSet, request: Request, session: SessionDep, cache: TokenCacheDep,
              principal: CurrentPrincipal, ref: GrantRef = GRANT) -> GrantRead:
    """Give a user or reader token a role on the namespace: viewer (read, pull) or editor (also build)."""
    before = catalog.grants_of_token(session, ref.token.id or 0).get(ref.namespace.name)
    grant, token = catalog.set_grant(session, ref.namespace.name, ref.token.id or 0, NamespaceRole(body.role))
    view = _grant_view(ref.namespace.name, grant, token)
    record_audit(session, principal, "grant.set", f"namespace {ref.namespace.name} token {ref.token.id}",
                 None if before is None else {"role": before}, view)
    session.commit()
    _forget_access(cache)
    return view


@router.delete("/namespaces/{namespace}/grants/{token_id}", status_code=204)
def delete_grant(request: Request, session: SessionDep, cache: TokenCacheDep, principal: CurrentPrincipal,
                 ref: GrantRef = GRANT) -> Response:
    before = catalog.grants_of_token(session, ref.token.id or 0).get(ref.namespace.name)
    catalog.delete_grant(session, ref.namespace.name, ref.token.id or 0)
    record_audit(session, principal, "grant.delete", f"namespace {ref.namespace.name} token {ref.token.id}",
                 {"role": before}, None)
    session.commit()
    _forget_access(cache)
    return Response(status_code=204)


def _environment_view(session: Session, request: Request, environment: Environment, namespace: str,
                      current: Build | None) -> EnvironmentRead:
    view = builds.to_read(session, [current], request.url.netloc)[0] if current is not None else None
    return EnvironmentRead(namespace=namespace, name=environment.name, description=environment.description,
                           current_build=view, created_at=environment.created_at, updated_at=environment.updated_at,
                           deprecated=_deprecations(session, [(environment, namespace)]).get(environment.id or 0))


def _deprecations(session: Session, environments: list[tuple[Environment, str]]) -> dict[int, DeprecationRead]:
    found = curation.deprecations(session, {e.id for e, _ in environments if e.id is not None})
    return {e.id: DeprecationRead(environment=f"{ns}/{e.name}", successor=found[e.id].successor,
                                  message=found[e.id].message, deprecated_at=found[e.id].deprecated_at)
            for e, ns in environments if e.id in found}


@router.post("/environments", status_code=201)
async def create_environment(body: EnvironmentCreate, request: Request, response: Response,
                             session: SessionDep, load: LoadDep, settings: SettingsDep, principal: Editor) -> BuildRead:
    """Create the environment (and namespace: a user token becomes its editor) if needed and submit a build."""
    rules = await run_in_threadpool(_rules, session, body.namespace, body.name)
    spec = await load.check_spec(request, principal, body.filename, body.spec, body.platforms,
                                 body.options.channel_alias, rules)

    def store() -> BuildRead:  # the transaction opens once the spec is parsed
        if not catalog.create_namespace_if_absent(session, body.namespace,
                                                  editor=principal.token_id if principal.restricted else None):
            require(request, principal, Action.WRITE, qualified(body.namespace, body.name))  # named in the body
        submitted = builds.submit_build(
            session, body.namespace, body.name, spec=spec, options=body.options, relock=body.relock, create=True,
            description=body.description, requested_by=principal.name, max_waiting=_max_waiting(settings, principal),
            quotas=QuotaSettings.of(settings),
        )
        session.commit()
        return builds.to_read(session, [submitted.build], request.url.netloc, reused=submitted.reused)[0]

    view = await run_in_threadpool(store)
    if view.reused:
        response.status_code = 200
    return view


def _rules(session: Session, namespace: str, name: str) -> Policy:
    """The policy a submission is held to, read before the spec check (which holds no connection)."""
    rules = policies.effective_policy(session, namespace, name)
    session.rollback()  # end the read: the submission's transaction opens after the check
    return rules


def _max_waiting(settings: ServiceSettings, principal: Principal) -> int | None:
    """Builds a token may have queued or running; admin and worker tokens are not limited."""
    return int(settings.max_waiting_builds_per_token) if principal.restricted else None


@router.get("/environments")
def list_environments(request: Request, session: SessionDep, principal: Reader, namespace: str | None = None,
                      name: str | None = Query(default=None, description="Environments whose name contains this."),
                      package: str | None = Query(default=None,
                                                  description="Whose current build contains this package."),
                      package_version: str | None = Query(default=None, description="... at this exact version."),
                      cursor: str | None = None, limit: int = Query(default=50, ge=1, le=500)) -> Page[EnvironmentRead]:
    """Environments in the namespaces the caller may read."""
    scope = readable(principal)
    rows, next_cursor = catalog.list_environments(session, namespace=namespace, name=name, package=package,
                                                  package_version=package_version, cursor=cursor, limit=limit,
                                                  readable=None if scope is None else scope.namespaces)
    if scope is not None:  # bindings on some environments of a namespace
        rows = [row for row in rows if scope.environment(row[1], row[0].name)]
    current = [b for _, _, b in rows if b is not None]
    views = {v.id: v for v in builds.to_read(session, current, request.url.netloc)}
    deprecated = _deprecations(session, [(e, ns) for e, ns, _ in rows])
    items = [EnvironmentRead(namespace=ns, name=e.name, description=e.description,
                             current_build=views.get(b.id) if b is not None and b.id is not None else None,
                             created_at=e.created_at, updated_at=e.updated_at, deprecated=deprecated.get(e.id or 0))
             for e, ns, b in rows]
    return Page[EnvironmentRead](items=items, next_cursor=next_cursor)


@router.get("/environments/{namespace}/{name}")
def get_environment(request: Request, session: SessionDep,
                    ref: EnvironmentRef = READ_ENVIRONMENT) -> EnvironmentRead:
    environment = ref.environment
    current = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    return _environment_view(session, request, environment, ref.namespace, current)


@router.patch("/environments/{namespace}/{name}")
def update_environment(body: EnvironmentUpdate, request: Request, session: SessionDep,
                       ref: EnvironmentRef = WRITE_ENVIRONMENT) -> EnvironmentRead:
    namespace = ref.namespace
    environment = catalog.get_environment(session, namespace, ref.name)
    if body.description is not None:
        environment.description = body.description
        catalog.touch(environment)
    session.commit()
    current = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    return _environment_view(session, request, environment, namespace, current)


@router.delete("/environments/{namespace}/{name}", status_code=204)
def delete_environment(session: SessionDep, ref: EnvironmentRef = WRITE_ENVIRONMENT) -> Response:
    catalog.delete_environment(session, ref.namespace, ref.name)
    session.commit()
    return Response(status_code=204)


@router.post("/environments/{namespace}/{name}/builds", status_code=201)
async def submit_build(body: BuildSubmit, request: Request, response: Response, session: SessionDep, load: LoadDep,
                       settings: SettingsDep,
                       principal: CurrentPrincipal, ref: EnvironmentRef = WRITE_ENVIRONMENT) -> BuildRead:
    rules = await run_in_threadpool(_rules, session, ref.namespace, ref.name)
    spec = await load.check_spec(request, principal, body.filename, body.spec, body.platforms,
                                 body.options.channel_alias, rules)

    def store() -> BuildRead:  # the transaction opens once the spec is parsed
        submitted = builds.submit_build(session, ref.namespace, ref.name, spec=spec, options=body.options,
                                        relock=body.relock, requested_by=principal.name,
                                        max_waiting=_max_waiting(settings, principal),
                                        quotas=QuotaSettings.of(settings))
        session.commit()
        return builds.to_read(session, [submitted.build], request.url.netloc, reused=submitted.reused)[0]

    view = await run_in_threadpool(store)
    if view.reused:
        response.status_code = 200
    return view


@router.put("/environments/{namespace}/{name}/current")
def set_current(body: SetCurrent, request: Request, session: SessionDep,
                ref: EnvironmentRef = WRITE_ENVIRONMENT) -> EnvironmentRead:
    """Point the environment at one of its completed builds (rollback)."""
    environment = builds.set_current(session, ref.namespace, ref.name, body.build_id)
    session.commit()
    return _environment_view(session, request, environment, ref.namespace, session.get(Build, body.build_id))
