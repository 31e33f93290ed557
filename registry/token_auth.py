"""``GET /v2/token``: Docker's registry token auth (https://distribution.github.io/distribution/spec/auth/token/).

A registry client that meets ``WWW-Authenticate: Bearer realm=".../v2/token",service="envyard",scope=...`` on
/v2/ asks here for a token, with Basic auth (any user name, an envyard token as password) or without
credentials. The reply grants pull of the requested repositories the caller may read (a public namespace's
for anyone), nothing else: push is never granted, unknown or unreadable repositories are left out. Wrong
credentials are a 401. The token (a signed JWT, see :func:`api.registry_tokens.sign_registry_token`) is then sent as
``Authorization: Bearer`` on /v2/ until it expires.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request

from envyard.api.auth import Action, Principal, may
from envyard.api.auth.registry_tokens import REGISTRY_TOKEN_SECONDS, registry_token_key, sign_registry_token
from envyard.api.deps import authorize
from envyard.api.schemas import RegistryToken

router = APIRouter(prefix="/v2", tags=["registry"])
TOKEN = Depends(authorize(Action.READ, anonymous=True))
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{COMPONENT}/{COMPONENT}$")  # <namespace>/<environment>, as /v2/ serves them
PULL = frozenset({"pull", "*"})


def requested_pulls(scopes: list[str]) -> list[str]:
    """Repository names whose pull a list of ``scope`` parameters asks for (``repository:NAME:ACTIONS``; several
    per parameter when separated by spaces); other resource types and malformed scopes are ignored."""
    names: list[str] = []
    for scope in (s for value in scopes for s in value.split()):
        resource, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if resource == "repository" and REPOSITORY.match(name) and PULL & set(actions.split(",")):
            names.append(name)
    return names


def granted(request: Request, principal: Principal, names: list[str]) -> list[str]:
    """The names in ``names`` ``principal`` may pull (within its own registry token's scope, if it used one)."""
    allowed = []
    for name in dict.fromkeys(names):
        if principal.repositories is not None and name not in principal.repositories:
            continue
        if may(request, principal, Action.READ, name.partition("/")[0]):
            allowed.append(name)
    return allowed


@router.get("/token")
def token(request: Request, scope: list[str] = Query(default=[], description="repository:NAMESPACE/ENV:pull"),
          service: str | None = Query(default=None, description="envyard"),
          principal: Principal = TOKEN) -> RegistryToken:
    """A registry token for the repositories of ``scope`` the caller may pull."""
    repositories = granted(request, principal, requested_pulls(scope))
    now = int(datetime.now(UTC).timestamp())
    signed = sign_registry_token(registry_token_key(request.app.state.secret_key), principal.token_id,
                                 repositories, issued_at=now)
    issued = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return RegistryToken(token=signed, access_token=signed, expires_in=REGISTRY_TOKEN_SECONDS, issued_at=issued)
