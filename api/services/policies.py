"""Admin policies stored per level (global, namespace, environment) and the effective policy of a submission.

The documents are :class:`envyard.builder.policy.Policy` as JSON (``PolicyDocument``); :func:`effective_policy`
merges the levels that exist for a namespace and environment (either may not exist yet: a first submission),
farthest first, with :func:`envyard.builder.policy.merge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from envyard.api.models import Environment, Namespace, PolicyDocument, PolicyScope, utcnow
from envyard.api.services import catalog
from envyard.api.services.lookups import get_namespace
from envyard.builder.policy import Policy, merge, policy_from_data

__all__ = ["PolicyChange", "effective_policy", "get_policy", "policy_key", "set_policy"]


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A stored policy: what it was (None: unset) and what it is now."""

    key: str
    before: dict[str, Any] | None
    after: dict[str, Any]


def policy_key(scope: PolicyScope, namespace: Namespace | None = None, environment: Environment | None = None) -> str:
    if scope == PolicyScope.GLOBAL:
        return "global"
    if scope == PolicyScope.NAMESPACE:
        assert namespace is not None
        return f"ns:{namespace.id}"
    assert environment is not None
    return f"env:{environment.id}"


def _targets(session: Session, scope: PolicyScope, namespace: str | None,
             environment: str | None) -> tuple[Namespace | None, Environment | None]:
    if scope == PolicyScope.GLOBAL:
        return None, None
    assert namespace is not None
    ns = get_namespace(session, namespace)
    if scope == PolicyScope.NAMESPACE:
        return ns, None
    assert environment is not None
    return ns, catalog.get_environment(session, namespace, environment)


def get_policy(session: Session, scope: PolicyScope, namespace: str | None = None,
               environment: str | None = None) -> Policy:
    """The policy stored at one level (an empty policy where none is)."""
    ns, env = _targets(session, scope, namespace, environment)
    row = session.get(PolicyDocument, policy_key(scope, ns, env))
    return Policy() if row is None else policy_from_data(row.document)


def set_policy(session: Session, scope: PolicyScope, policy: Policy, *, namespace: str | None = None,
               environment: str | None = None, updated_by: str | None = None) -> PolicyChange:
    """Store ``policy`` at one level (replacing what was there); the caller commits."""
    ns, env = _targets(session, scope, namespace, environment)
    key = policy_key(scope, ns, env)
    row = session.get(PolicyDocument, key)
    before = None if row is None else dict(row.document)
    after = policy.model_dump(mode="json", exclude_defaults=True)
    if row is None:
        row = PolicyDocument(key=key, scope=scope, namespace_id=ns.id if ns else None,
                             environment_id=env.id if env else None)
    row.document, row.updated_by, row.updated_at = after, updated_by, utcnow()
    session.add(row)
    session.flush()
    return PolicyChange(key, before, after)


def effective_policy(session: Session, namespace: str, environment: str | None = None) -> Policy:
    """The merged policy a build of ``namespace/environment`` is held to (levels that do not exist count empty)."""
    keys = ["global"]
    ns_id = session.exec(select(Namespace.id).where(Namespace.name == namespace)).first()
    if ns_id is not None:
        keys.append(f"ns:{ns_id}")
        if environment is not None:
            env_id = session.exec(select(Environment.id).where(Environment.namespace_id == ns_id,
                                                               Environment.name == environment)).first()
            if env_id is not None:
                keys.append(f"env:{env_id}")
    rows = {row.key: row for row in session.exec(select(PolicyDocument).where(
        PolicyDocument.key.in_(keys))).all()}  # type: ignore[attr-defined]
    return merge(policy_from_data(rows[key].document, key) for key in keys if key in rows)
