"""The decision: may a principal do an action on a namespace or environment, and why (:func:`decide`).

:func:`envyard.api.auth.policy.check` applies it to requests (with the 401/403/404 answers), listings apply it
through :func:`envyard.api.auth.scope.readable_namespaces`, and ``envyard access check`` shows its reasons.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from fnmatch import fnmatchcase

from envyard.api.auth.bindings import RANK, Binding, split_qualified
from envyard.api.auth.principals import Action, Principal
from envyard.api.models import NamespaceRole, Role

__all__ = ["ALLOWED", "NEEDS", "Verdict", "decide", "role_forbids"]

ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.USER: frozenset({Action.READ, Action.WRITE}),
    Role.READER: frozenset({Action.READ}),
    Role.WORKER: frozenset({Action.READ, Action.WORK}),
}

NEEDS: dict[Action, NamespaceRole] = {Action.READ: NamespaceRole.VIEWER, Action.WRITE: NamespaceRole.EDITOR,
                                      Action.ADMIN: NamespaceRole.ADMIN}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision and why: the binding that allowed it (``binding``) or what was missing (``reasons``)."""

    allowed: bool
    reasons: tuple[str, ...]
    binding: Binding | None = None
    role: NamespaceRole | None = None


def role_forbids(principal: Principal, action: Action, on_resource: bool) -> bool:
    """Whether the token's global role alone rules ``action`` out (a user token with admin bindings may
    administer the namespaces they cover; nothing else widens a role)."""
    if principal.role is None:
        return False
    if on_resource and principal.role == Role.USER and action == Action.ADMIN:
        return not any(binding.role == NamespaceRole.ADMIN for binding in principal.bindings)
    return action not in ALLOWED[principal.role]


def decide(principal: Principal, action: Action, resource: str | None, public: Collection[str] = (),
           global_namespace: str | None = None) -> Verdict:
    """The one decision: may ``principal`` do ``action`` on ``resource`` (``namespace`` or
    ``namespace/environment``; None: a route without one, where the role decides)?

    Admin and worker tokens: their role. Everyone else on a namespace: the strongest role among the bindings
    covering the resource (user, group, token bindings, grants, the personal namespace), the namespace being public
    (viewer, for anybody) or the curated ``global_namespace`` (viewer, for every signed-in caller), capped by the
    token's limits (namespaces, highest role, read-only; a reader token views at most)."""
    if principal.role is not None and role_forbids(principal, action, resource is not None):
        return Verdict(False, (f"a {principal.role} token may not {action}",))
    if resource is None or not principal.restricted:
        if principal.role is None:
            return Verdict(False, ("anonymous callers act only on public namespaces",))
        return Verdict(True, (f"the {principal.role} role allows {action}",))
    if action not in NEEDS:  # work: the worker and admin roles only, whatever the bindings
        return Verdict(False, (f"only worker and admin tokens may {action}",))
    namespace, environment = split_qualified(resource)
    need = NEEDS[action]
    best: NamespaceRole | None = None
    chosen: Binding | None = None
    reasons: list[str] = []
    candidates = list(principal.bindings)
    if principal.role is not None and global_namespace and namespace == global_namespace:
        candidates.append(Binding(NamespaceRole.VIEWER, f"{namespace}/*", "every signed-in user reads the curated "
                                                                          "namespace"))
    if principal.scope is not None and not any(fnmatchcase(namespace, glob) for glob in principal.scope):
        reasons.append(f"the token is limited to namespaces {', '.join(principal.scope)}")
        candidates = []
    if namespace in public:
        candidates.append(Binding(NamespaceRole.VIEWER, f"{namespace}/*", "public namespace"))
    for binding in candidates:
        if binding.covers(namespace, environment):
            role = binding.role
        elif environment is None and binding.touches(namespace):
            role = NamespaceRole.VIEWER  # a binding on some of its environments shows the namespace
        else:
            continue
        if best is None or RANK[role] > RANK[best]:
            best, chosen = role, binding
    if best is None:
        reasons.insert(0, f"no binding of {_who(principal)} covers {resource}")
        return Verdict(False, tuple(reasons))
    cap = _cap(principal, reasons)
    effective = best if cap is None or RANK[best] <= RANK[cap] else cap
    if RANK[effective] >= RANK[need]:
        return Verdict(True, (f"{chosen.describe() if chosen else best} allows {action}",), chosen, effective)
    reasons.insert(0, f"{chosen.describe() if chosen else best} gives {effective}; {action} needs {need}")
    return Verdict(False, tuple(reasons), chosen, effective)


def _who(principal: Principal) -> str:
    if principal.user is not None:
        groups = f" (groups: {', '.join(sorted(principal.groups))})" if principal.groups else ""
        token = f"token '{principal.name}' of " if principal.token_id is not None else ""
        return f"{token}{principal.kind} '{principal.user}'{groups}"
    return "anonymous callers" if principal.anonymous else f"token '{principal.name}'"


def _cap(principal: Principal, reasons: list[str]) -> NamespaceRole | None:
    """The highest role the token's limits leave (None: no limit); ``reasons`` says which."""
    if principal.role is None:
        return NamespaceRole.VIEWER
    cap: NamespaceRole | None = None
    if principal.max_role is not None:
        cap = principal.max_role
        reasons.append(f"the token's highest role is {principal.max_role}")
    if principal.read_only or principal.role == Role.READER:
        cap = NamespaceRole.VIEWER
        reasons.append("the token is read-only")
    return cap


