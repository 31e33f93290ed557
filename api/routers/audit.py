"""/api/v1/admin/audit: the audit log (admins only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from envyard.api.deps import Admin, SessionDep
from envyard.api.schemas import AuditRead, Page
from envyard.api.services import audit

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/audit")
def list_audit(session: SessionDep, _: Admin, actor: str | None = Query(default=None, max_length=200),
               action: str | None = Query(default=None, max_length=100, description="a prefix: token, binding.delete"),
               since: datetime | None = None, until: datetime | None = None, cursor: str | None = None,
               limit: int = Query(default=50, ge=1, le=500)) -> Page[AuditRead]:
    """Changes of permissions, policies, quotas, tokens, promotions and deletions, oldest first."""
    rows, next_cursor = audit.list_audit(session, actor=actor, action=action, since=since, until=until,
                                         cursor=cursor, limit=limit)
    return Page[AuditRead](items=[AuditRead.model_validate(row, from_attributes=True) for row in rows],
                           next_cursor=next_cursor)
