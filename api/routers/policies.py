"""Admins' policies (global, namespace, environment) and namespace quotas: read by readers, set by admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from envyard.api.auth.principals import Action
from envyard.api.deps import Admin, CurrentPrincipal, Reader, SessionDep
from envyard.api.models import Namespace, PolicyScope, Role
from envyard.api.resources import EnvironmentRef, environment_for, namespace_for
from envyard.api.schemas import QuotaRead, QuotaSet
from envyard.api.services import policies, quotas
from envyard.api.services.audit import record_audit
from envyard.builder.errors import PermissionDeniedError
from envyard.builder.policy import Policy

router = APIRouter(prefix="/api/v1", tags=["admin"])
READ_NAMESPACE = Depends(namespace_for(Action.READ))
ADMIN_NAMESPACE = Depends(namespace_for(Action.ADMIN))
READ_ENVIRONMENT = Depends(environment_for(Action.READ))
ADMIN_ENVIRONMENT = Depends(environment_for(Action.ADMIN))


@router.get("/admin/policy")
def get_global_policy(session: SessionDep, _: Reader) -> Policy:
    """The global policy (every namespace and environment is held to it)."""
    return policies.get_policy(session, PolicyScope.GLOBAL)


@router.put("/admin/policy")
def set_global_policy(body: Policy, session: SessionDep, principal: Admin) -> Policy:
    change = policies.set_policy(session, PolicyScope.GLOBAL, body, updated_by=principal.name)
    record_audit(session, principal, "policy.update", "policy global", change.before, change.after)
    session.commit()
    return body


@router.get("/namespaces/{namespace}/policy")
def get_namespace_policy(session: SessionDep, effective: bool = False,
                         namespace: Namespace = READ_NAMESPACE) -> Policy:
    """The namespace's own policy (``?effective=true``: merged with the global one)."""
    if effective:
        return policies.effective_policy(session, namespace.name)
    return policies.get_policy(session, PolicyScope.NAMESPACE, namespace.name)


@router.put("/namespaces/{namespace}/policy")
def set_namespace_policy(body: Policy, session: SessionDep, principal: CurrentPrincipal,
                         namespace: Namespace = ADMIN_NAMESPACE) -> Policy:
    change = policies.set_policy(session, PolicyScope.NAMESPACE, body, namespace=namespace.name,
                                 updated_by=principal.name)
    record_audit(session, principal, "policy.update", f"policy namespace {namespace.name}", change.before,
                 change.after)
    session.commit()
    return body


@router.get("/namespaces/{namespace}/environments/{name}/policy")
def get_environment_policy(session: SessionDep, effective: bool = False,
                           ref: EnvironmentRef = READ_ENVIRONMENT) -> Policy:
    """The environment's own policy (``?effective=true``: the merged policy its builds are held to)."""
    if effective:
        return policies.effective_policy(session, ref.namespace, ref.name)
    return policies.get_policy(session, PolicyScope.ENVIRONMENT, ref.namespace, ref.name)


@router.put("/namespaces/{namespace}/environments/{name}/policy")
def set_environment_policy(body: Policy, session: SessionDep, principal: CurrentPrincipal,
                           ref: EnvironmentRef = ADMIN_ENVIRONMENT) -> Policy:
    change = policies.set_policy(session, PolicyScope.ENVIRONMENT, body, namespace=ref.namespace,
                                 environment=ref.name, updated_by=principal.name)
    record_audit(session, principal, "policy.update", f"policy environment {ref.namespace}/{ref.name}",
                 change.before, change.after)
    session.commit()
    return body


def _quota_view(session: SessionDep, namespace: Namespace) -> QuotaRead:
    row = quotas.get_quota(session, namespace.name)
    return QuotaRead(namespace=namespace.name, storage_bytes=row.storage_bytes,
                     concurrent_builds=row.concurrent_builds, submissions_per_minute=row.submissions_per_minute,
                     keep_last=row.keep_last, keep_days=row.keep_days,
                     storage_used=quotas.namespace_storage(session, namespace.id or 0))


@router.get("/namespaces/{namespace}/quota")
def get_quota(session: SessionDep, namespace: Namespace = READ_NAMESPACE) -> QuotaRead:
    """The namespace's quotas and retention, and the storage it uses now."""
    return _quota_view(session, namespace)


@router.put("/namespaces/{namespace}/quota")
def set_quota(body: QuotaSet, session: SessionDep, namespace: Annotated[Namespace, READ_NAMESPACE],
              principal: CurrentPrincipal) -> QuotaRead:
    """Set the fields given (null: no limit); admin tokens only, not a namespace's own administrators (who would
    raise their own limits): readers of the namespace are told 403, others its 404."""
    if principal.role != Role.ADMIN:
        raise PermissionDeniedError(f"token '{principal.name}' may not set the quotas of namespace "
                                    f"'{namespace.name}'", hint="quotas are set by admins: ask one")
    before, after = quotas.set_quota(session, namespace.name, body.model_dump(exclude_unset=True))
    record_audit(session, principal, "quota.update", f"quota namespace {namespace.name}", before, after)
    session.commit()
    return _quota_view(session, namespace)
