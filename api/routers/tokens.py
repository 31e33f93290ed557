"""/api/v1/tokens and /api/v1/whoami."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlmodel import select

from envyard.api.auth.principals import Action
from envyard.api.auth.tokens import create_token, hash_token
from envyard.api.deps import Admin, CurrentPrincipal, Reader, SessionDep, TokenCacheDep
from envyard.api.models import ApiToken, Role
from envyard.api.resources import token_for
from envyard.api.schemas import TokenCreate, TokenCreated
from envyard.api.services import catalog
from envyard.api.services.audit import record_audit
from envyard.builder.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["tokens"])
REVOKED = Depends(token_for(Action.ADMIN))


@router.get("/whoami")
def whoami(session: SessionDep, principal: Reader) -> dict[str, object]:
    """The caller's token: name, role and its roles on namespaces."""
    grants = catalog.grants_of_token(session, principal.token_id) if principal.token_id is not None else {}
    return {"name": principal.name, "role": principal.role, "token_id": principal.token_id, "grants": grants}


@router.post("/tokens", status_code=201)
def new_token(body: TokenCreate, session: SessionDep,
              principal: Admin) -> TokenCreated:
    """A new token; its text is shown only in this reply."""
    token = create_token(session, body.name, Role(body.role))
    row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).one()
    record_audit(session, principal, "token.create", f"token {row.id}", None, {"name": row.name, "role": row.role})
    session.commit()
    assert row.id is not None
    return TokenCreated(id=row.id, name=row.name, role=row.role, token=token)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(request: Request, session: SessionDep, cache: TokenCacheDep, principal: CurrentPrincipal,
                 token: ApiToken = REVOKED) -> None:
    row = session.get(ApiToken, token.id)
    if row is None:  # deleted meanwhile
        raise NotFoundError(f"token {token.id} does not exist")
    before = {"name": row.name, "role": row.role, "revoked": row.revoked}
    row.revoked = True
    record_audit(session, principal, "token.revoke", f"token {row.id}", before, {**before, "revoked": True})
    session.commit()
    cache.clear()  # here at once; other replicas within auth.CACHE_SECONDS
