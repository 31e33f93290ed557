"""/api/v1/admin/users, /api/v1/admin/bindings and /api/v1/admin/access/check: who exists, who may do what where,
and why (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from envyard.api.auth.principals import Action, PrincipalSource
from envyard.api.deps import Admin, CurrentPrincipal, SessionDep, TokenCacheDep, principal_source
from envyard.api.models import RoleBinding
from envyard.api.resources import binding_for
from envyard.api.schemas import AccessVerdict, BindingCreate, BindingRead, UserCreate, UserRead
from envyard.api.services import identity

router = APIRouter(prefix="/api/v1/admin", tags=["access"])
ADMIN_BINDING = Depends(binding_for(Action.ADMIN))
SOURCE = Depends(principal_source)


@router.get("/users")
def list_users(session: SessionDep, _: Admin) -> list[UserRead]:
    """Users (signed in at least once, or made by an admin) and service accounts, with their groups."""
    return identity.list_users(session)


@router.post("/users", status_code=201)
def create_user(body: UserCreate, session: SessionDep, principal: Admin,
                source: PrincipalSource = SOURCE) -> UserRead:
    """A user or a service account (for CI: then ``POST /api/v1/tokens`` with ``user``), with a personal
    namespace it administers."""
    user = identity.upsert_user(session, principal, body.name, kind=body.kind, groups=body.groups,
                                global_namespace=source.global_namespace)
    session.commit()
    return identity.user_view(session, user)


@router.get("/bindings")
def list_bindings(session: SessionDep, _: Admin,
                  subject_kind: str | None = Query(default=None, pattern="^(user|group|token)$"),
                  subject: str | None = Query(default=None, max_length=200)) -> list[BindingRead]:
    return [identity.binding_view(row) for row in identity.list_bindings(session, subject_kind, subject)]


@router.post("/bindings", status_code=201, responses={404: {"description": "The user or token named does not exist"}})
def create_binding(body: BindingCreate, session: SessionDep, cache: TokenCacheDep, principal: Admin) -> BindingRead:
    """Bind a role (viewer, editor, admin) on ``namespace/environment`` globs to a user, a group or a token."""
    row = identity.create_binding(session, principal, body.role, body.pattern, body.subject_kind, body.subject)
    session.commit()
    cache.clear()
    return identity.binding_view(row)


@router.delete("/bindings/{binding_id}", status_code=204)
def delete_binding(session: SessionDep, cache: TokenCacheDep, principal: CurrentPrincipal,
                   binding: RoleBinding = ADMIN_BINDING) -> Response:
    identity.delete_binding(session, principal, binding)
    session.commit()
    cache.clear()
    return Response(status_code=204)


@router.get("/access/check", responses={404: {"description": "The user or token named does not exist"}})
def access_check(session: SessionDep, _: Admin, source: PrincipalSource = SOURCE,
                 subject: str = Query(max_length=200, description="a user or service account name, or token:ID"),
                 action: Action = Query(description="read, write or admin"),
                 resource: str = Query(max_length=201, description="NAMESPACE or NAMESPACE/ENVIRONMENT")
                 ) -> AccessVerdict:
    """Whether ``subject`` may ``action`` ``resource``: the binding that allowed it, or why none did."""
    return identity.access_check(session, source, subject, action, resource)
