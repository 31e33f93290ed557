"""The policy: the one authorization decision (:func:`check`) every route goes through, applying the verdict of
:func:`envyard.api.auth.decision.decide` over roles, role bindings and grants.

A token has a global role; user and reader tokens also have roles on namespaces and environments: the role
bindings (:class:`~envyard.api.models.RoleBinding`, ``namespace/environment`` globs) of their user, their user's
groups and themselves, their grants (:class:`~envyard.api.models.NamespaceGrant`, bindings to ``namespace/*``),
their user's personal namespace, and the curated namespace every signed-in caller reads (docs/identity.md):

* ``admin``: everything; ``worker``: read and work everywhere (a remote worker reads any build);
* ``user`` and ``reader``: on namespace N what their strongest binding allows (viewer: read; editor: read and
  write; admin: also administer N), within the token's limits (a reader token never writes). A user token that
  creates a namespace is its editor;
* a namespace an admin made public is readable by everyone, requests without credentials included.
  ``/healthz``, ``/readyz`` and the sign-in routes (/api/v1/auth) are the only other routes served without a
  token, with the documentation (``/docs``, ``/redoc``, ``/openapi.json``) where ``ServiceSettings.public_docs``
  opens it (see api/openapi.py), and the push webhooks ``/api/v1/hooks/github`` and ``/api/v1/hooks/gitlab``: they
  take no principal (so neither :func:`check` nor :func:`permit` is asked) and authenticate the request by its
  signature instead (HMAC-SHA256 / the GitLab token, :mod:`envyard.api.services.hooks`); a bad one is a 401 before
  anything is read.

:func:`check` decides, on the resource a request names *as the route will use it*: each kind of resource has a
dependency in :mod:`envyard.api.resources` (builds, environments, namespaces, blobs, tokens; the registry's
repositories in the /v2/ routes) that validates the strict ids of :mod:`envyard.api.ids`, loads the resource and then
asks :func:`check` about its namespaces (:mod:`envyard.api.auth.scope`). What cannot be resolved is denied (fail
closed). Callers who may not read a resource get the same 404 as for a resource that does not exist (on ``/v2/``:
DENIED alike), anonymous callers a 401; routes that name no resource check the role only (:func:`permit`, behind
:func:`envyard.api.deps.authorize`) and list only what the caller may read
(:func:`envyard.api.auth.scope.readable_namespaces`). A namespace given in a request body is checked with
:func:`require`. Who the caller is comes from :mod:`envyard.api.auth.principals`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

from fastapi import Request
from sqlmodel import col

from envyard.api.auth.decision import ALLOWED, NEEDS, Verdict, decide, role_forbids
from envyard.api.auth.principals import (
    TOKEN_HINT,
    Action,
    Principal,
    PrincipalSource,
    load_principal,
    public_namespaces,
    unauthenticated,
)
from envyard.api.auth.scope import denied_details, in_registry_scope, out_of_scope, unresolved
from envyard.api.models import ApiToken
from envyard.builder.errors import EnvyardError, NotFoundError, PermissionDeniedError

__all__ = ["ALLOWED", "NEEDS", "Hidden", "Verdict", "allows", "check", "decide", "may", "permit", "require",
           "role_forbids"]

Hidden = Callable[[], EnvyardError]


def allows(principal: Principal, action: Action, namespace: str | None, public: Collection[str] = ()) -> bool:
    """What the principal's role and bindings allow on ``namespace`` (or ``namespace/environment``; None: a route
    without one): :func:`decide`."""
    source = principal.source
    return decide(principal, action, namespace, public, source.global_namespace if source else None).allowed


def _source(principal: Principal) -> PrincipalSource:
    assert principal.source is not None, "principals of a request come from envyard.api.deps.current_principal"
    return principal.source


def _not_visible(request: Request) -> NotFoundError:
    return NotFoundError(f"'{request.url.path}' names nothing this token may see",
                         hint="check the ids and names in the path; list what you may see with GET /api/v1/...")


def _verdict(request: Request, principal: Principal, action: Action, namespaces: Collection[str] | None,
             hidden: Hidden, label: str, repository: str | None, fresh: bool) -> EnvyardError | None:
    """None when ``principal`` may do ``action`` (see :func:`check`), else the error to answer with."""
    if principal.role is not None and role_forbids(principal, action, namespaces is not None):
        return PermissionDeniedError(f"a {principal.role} token may not {action}",
                                     hint="ask an admin for a token with a wider role",
                                     details=denied_details(request))
    if namespaces is None:  # a route that names no resource: the role decides
        if principal.repositories is not None:  # a registry token (only /v2/ takes them): the /v2/ ping
            return None if action == Action.READ else out_of_scope(request, repository)
        if allows(principal, action, None):
            return None
        return unauthenticated(request, "this route needs a token", TOKEN_HINT)
    public: Collection[str] = (public_namespaces(_source(principal), fresh)
                               if namespaces and principal.restricted else ())
    own = any(allows(principal, action, namespace, public) for namespace in namespaces)
    if own and in_registry_scope(principal, action, repository):
        return None
    if principal.anonymous and principal.repositories is None:
        return unauthenticated(request, "this needs a token (or a namespace an admin made public)", TOKEN_HINT)
    if own or principal.anonymous:
        return out_of_scope(request, repository)
    if action != Action.READ and any(allows(principal, Action.READ, ns, public) for ns in namespaces):
        return PermissionDeniedError(
            f"token '{principal.name}' may read but not {action} {label}",
            hint="ask an admin for the editor role: envyard namespace grant NAMESPACE TOKEN_ID --role editor",
            details=denied_details(request),
        )
    return hidden()  # unknown, or not readable: the same answer


def check(request: Request, principal: Principal, action: Action, namespaces: Collection[str] | None, *,
          hidden: Hidden | None = None, label: str = "here", repository: str | None = None) -> Principal:
    """The one decision: ``principal`` (possibly reloaded) if it may do ``action`` on a resource in
    ``namespaces``, else raise.

    ``namespaces``: the namespaces of the resource a request names, resolved from the same validated values the
    route uses (one namespace for a build or an environment; every namespace holding a blob); empty when the
    resource does not exist or cannot be resolved, which nobody may act on (fail closed); None for a route that
    names no resource (the role decides). ``repository``: the /v2/ repository, for a registry token's scope.

    Answers: 401 for anonymous requests (alike for unknown and private resources), 403 when the role forbids
    ``action`` or the caller may read the resource but not ``action`` it (naming nothing but ``label``), and
    ``hidden()`` (the resource kind's 404) when the caller may not read it: unknown and forbidden look alike.
    A denial on cached data is checked once more against the database (new grants work at once).
    """
    error = _verdict(request, principal, action, namespaces, hidden or (lambda: _not_visible(request)), label,
                     repository, fresh=False)
    if error is None:
        return principal
    if principal.role is not None and role_forbids(principal, action, namespaces is not None):
        raise error  # roles never change
    if principal.token_id is not None and principal.restricted:
        reloaded = load_principal(_source(principal), f"id:{principal.token_id}",
                                  col(ApiToken.id) == principal.token_id, fresh=True)
        if reloaded is None:
            raise unauthenticated(request, "the token was revoked", "ask an admin for a new token", "invalid_token")
        principal = replace(reloaded, repositories=principal.repositories)
    elif not (principal.anonymous and namespaces):
        raise error  # nothing cached could change the answer
    error = _verdict(request, principal, action, namespaces, hidden or (lambda: _not_visible(request)), label,
                     repository, fresh=True)
    if error is not None:
        raise error
    return principal


def permit(request: Request, principal: Principal, action: Action, *, anonymous: bool = False) -> Principal:
    """The verdict for a route that names no resource (listings, submissions with the namespace in the body, the
    worker's claim, admin operations): ``principal`` if its role allows ``action``.

    A route with path parameters names a resource and must authorize through its resource dependency
    (:mod:`envyard.api.resources`): here, a restricted principal is refused on any request with path parameters
    (fail closed), so a route that forgot its resource dependency leaks nothing.

    ``anonymous=True`` (the registry's token endpoint): requests without credentials get the anonymous
    principal, the route decides what that may see; wrong credentials are still a 401.
    """
    if anonymous and principal.anonymous and principal.repositories is None:
        return principal
    if unresolved(request) and principal.restricted:
        return check(request, principal, action, frozenset())  # a resource nobody resolved: denied
    return check(request, principal, action, None)


def require(request: Request, principal: Principal, action: Action, namespace: str) -> Principal:
    """:func:`check` for a namespace the caller named in a request body (e.g. creating an environment): its
    refusal names that namespace (the caller gave it; whether it exists shows anyway when creating it)."""
    return check(request, principal, action, frozenset({namespace}), label=f"namespace '{namespace}'",
                 hidden=lambda: PermissionDeniedError(
                     f"token '{principal.name}' may not {action} namespace '{namespace}'",
                     hint="ask an admin for a grant: envyard namespace grant NAMESPACE TOKEN_ID --role viewer|editor",
                     details=denied_details(request)))


def may(request: Request, principal: Principal, action: Action, namespace: str) -> bool:
    """Whether ``principal`` may do ``action`` on ``namespace`` (registry token scopes aside), without raising."""
    if allows(principal, action, namespace):
        return True
    try:
        require(request, replace(principal, repositories=None), action, namespace)
    except EnvyardError:
        return False
    return True
