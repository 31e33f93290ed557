"""/api/v1/tokens (created, listed and revoked by their owner or an admin) and /api/v1/whoami."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from envyard.api.auth.tokens import token_key
from envyard.api.deps import CurrentPrincipal, Reader, SecretKeyDep, SessionDep, TokenCacheDep
from envyard.api.models import ApiToken
from envyard.api.resources import own_token_for
from envyard.api.schemas import TokenCreate, TokenCreated, TokenRead
from envyard.api.services import catalog, identity

router = APIRouter(prefix="/api/v1", tags=["tokens"])
OWN_TOKEN = Depends(own_token_for())


@router.get("/whoami")
def whoami(session: SessionDep, principal: Reader) -> dict[str, object]:
    """The caller's token: name, role, owner and groups, its roles on namespaces, its bindings and limits."""
    grants = catalog.grants_of_token(session, principal.token_id) if principal.token_id is not None else {}
    return {"name": principal.name, "role": principal.role, "token_id": principal.token_id, "grants": grants,
            "user": principal.user, "kind": principal.kind, "groups": sorted(principal.groups),
            "bindings": [b.describe() for b in principal.bindings],
            "expires_at": principal.expires_at.isoformat() if principal.expires_at else None,
            "max_role": principal.max_role, "read_only": principal.read_only,
            "namespaces": list(principal.scope) if principal.scope is not None else None}


@router.post("/tokens", status_code=201, responses={404: {"description": "The owner named does not exist"}})
def new_token(body: TokenCreate, session: SessionDep, secret_key: SecretKeyDep, principal: Reader) -> TokenCreated:
    """A new token; its text is shown only in this reply. Admins make tokens of any role for anybody; a user
    makes tokens for themself, with their own role, limits and expiry at most."""
    created = identity.create_token(session, principal, token_key(secret_key), body)
    session.commit()
    return created


@router.get("/tokens")
def list_tokens(session: SessionDep, principal: Reader) -> list[TokenRead]:
    """Every token (admins), else the caller's user's tokens; never their secrets."""
    return identity.list_tokens(session, principal)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(session: SessionDep, cache: TokenCacheDep, principal: CurrentPrincipal,
                 token: ApiToken = OWN_TOKEN) -> None:
    """Revoke a token (its owner or an admin): refused at once on every replica."""
    identity.revoke_token(session, principal, token)
    session.commit()
    cache.clear()
