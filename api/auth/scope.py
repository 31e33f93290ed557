"""Scope: which namespaces a request concerns, before any verdict.

A route names a resource through its path parameters; the resource dependencies of :mod:`envyard.api.resources`
resolve it to the namespaces it belongs to (one for a build or an environment, every namespace holding a blob) and
hand those to :func:`envyard.api.auth.policy.check`. A request with path parameters that no resource dependency
resolved concerns no namespace anyone may act on (:func:`unresolved`: fail closed). A listing concerns the
namespaces its caller reads (:func:`readable_namespaces`), and of those the environments it reads
(:func:`readable`). On ``/v2/`` a registry token narrows the scope to the
repositories it names (:func:`in_registry_scope`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from fastapi import Request
from sqlmodel import col, select

from envyard.api.auth.decision import decide
from envyard.api.auth.principals import Action, Principal, is_registry_path, load_principal, unauthenticated
from envyard.api.db import session_scope
from envyard.api.models import ApiToken, Namespace
from envyard.builder.errors import AuthenticationError

__all__ = [
    "Readable", "denied_details", "in_registry_scope", "out_of_scope", "readable", "readable_namespaces", "unresolved",
]


def unresolved(request: Request) -> bool:
    """Whether the request names a resource (path parameters) that nothing resolved to its namespaces."""
    return bool(request.path_params)


def in_registry_scope(principal: Principal, action: Action, repository: str | None) -> bool:
    """Whether a registry token's scope (if the request came with one) covers ``action`` on ``repository``."""
    return principal.repositories is None or (action == Action.READ and repository in principal.repositories)


def out_of_scope(request: Request, repository: str | None) -> AuthenticationError:
    return unauthenticated(request, f"the registry token does not grant pull of '{repository or ''}'",
                           "fetch a token for this repository from /v2/token", "insufficient_scope")


def denied_details(request: Request) -> dict[str, str]:
    """The details of a 403: on /v2/ the OCI code DENIED."""
    return {"oci": "DENIED"} if is_registry_path(request.url.path) else {}


def _fresh(principal: Principal) -> tuple[Principal, frozenset[str], list[str]]:
    """``principal`` reloaded (a new binding or revocation shows at once on every replica), the public namespaces,
    and every namespace's name: two queries."""
    source = principal.source
    assert source is not None, "principals of a request come from envyard.api.deps.current_principal"
    if principal.token_id is not None:
        fresh = load_principal(source, f"id:{principal.token_id}", col(ApiToken.id) == principal.token_id,
                               fresh=True)
        principal = principal if fresh is None else replace(fresh, repositories=principal.repositories)
    with session_scope(source.engine) as session:
        rows = session.exec(select(Namespace.name, Namespace.public)).all()
    return principal, frozenset(name for name, is_public in rows if is_public), [name for name, _ in rows]


@dataclass(frozen=True, slots=True)
class Readable:
    """What a listing may show a restricted caller: the namespaces it reads, and of those the environments (a
    binding on ``team/python-*`` lists the namespace ``team`` but only those of its environments)."""

    namespaces: frozenset[str]
    environment: Callable[[str, str], bool]  # (namespace, environment) -> readable


def readable(principal: Principal) -> Readable | None:
    """What a listing may show ``principal`` (None: everything), decided afresh once per listing, so a namespace
    just created or bound is listed at once on every replica."""
    if not principal.restricted:
        return None
    principal, public, names = _fresh(principal)
    source = principal.source
    assert source is not None

    def allowed(resource: str) -> bool:
        return decide(principal, Action.READ, resource, public, source.global_namespace).allowed

    return Readable(frozenset(name for name in names if allowed(name)),
                    lambda namespace, environment: allowed(f"{namespace}/{environment}"))


def readable_namespaces(principal: Principal) -> frozenset[str] | None:
    """The namespaces of :func:`readable` (None: all), for listings that show namespaces only. A binding on some
    environments of a namespace lists the namespace (see :meth:`envyard.api.auth.bindings.Binding.touches`)."""
    found = readable(principal)
    return None if found is None else found.namespaces
