"""Who may pull what on /v2/: the repository dependency of every repository route, and the registry tokens of
Docker's token auth (https://distribution.github.io/distribution/spec/auth/token/).

Same tokens and the same authorization decision as the API (:func:`envyard.api.auth.check`): an envyard token
as Bearer or as a Basic password, or a registry token; reading needs the viewer role on the namespace, unless an
admin made it public. Callers without it get DENIED whether or not the repository exists, anonymous ones a 401
challenge.

A registry client that meets ``WWW-Authenticate: Bearer realm=".../v2/token",service="envyard",scope=...`` on
/v2/ asks ``GET /v2/token`` for a token, with Basic auth (any user name, an envyard token as password) or without
credentials. The reply grants pull of the requested repositories the caller may read (a public namespace's for
anyone), nothing else: push is never granted, unknown or unreadable repositories are left out. Wrong credentials
are a 401. The token (a signed JWT, see :func:`envyard.api.auth.registry_tokens.sign_registry_token`) is then sent as
``Authorization: Bearer`` on /v2/ until it expires.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Depends, Request

from envyard.api.auth import Action, Principal, check, may
from envyard.api.auth.bindings import qualified
from envyard.api.auth.registry_tokens import REGISTRY_TOKEN_SECONDS, registry_token_key, sign_registry_token
from envyard.api.deps import current_principal
from envyard.api.distribution.references import Repository, parse_repository
from envyard.api.schemas import RegistryToken
from envyard.builder.errors import PermissionDeniedError

__all__ = ["granted", "issue_token", "repository"]


def repository(request: Request, name: str, principal: Principal = Depends(current_principal)) -> Repository:
    """The dependency of every repository route: the parsed repository, if the caller may pull it. Callers who
    may not read its namespace get DENIED whether or not it exists (anonymous ones a 401 challenge)."""
    found = parse_repository(name)

    def denied() -> PermissionDeniedError:
        return PermissionDeniedError(f"token '{principal.name}' may not pull '{found.name}'",
                                     hint="ask an admin for a binding: envyard access bind viewer NS/ENV --user NAME",
                                     details={"oci": "DENIED"})

    check(request, principal, Action.READ, frozenset({qualified(found.namespace, found.environment)}), hidden=denied,
          repository=found.name)
    return found


def granted(request: Request, principal: Principal, names: list[str]) -> list[str]:
    """The names in ``names`` ``principal`` may pull (within its own registry token's scope, if it used one)."""
    allowed = []
    for name in dict.fromkeys(names):
        if principal.repositories is not None and name not in principal.repositories:
            continue
        namespace, _, environment = name.partition("/")
        if may(request, principal, Action.READ, qualified(namespace, environment or None)):
            allowed.append(name)
    return allowed


def issue_token(secret_key: bytes, principal: Principal, repositories: list[str]) -> RegistryToken:
    """A registry token for ``principal`` granting pull of ``repositories``, valid from now."""
    now = int(datetime.now(UTC).timestamp())
    signed = sign_registry_token(registry_token_key(secret_key), principal.token_id, repositories, issued_at=now)
    issued = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    return RegistryToken(token=signed, access_token=signed, expires_in=REGISTRY_TOKEN_SECONDS, issued_at=issued)
