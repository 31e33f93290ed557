"""/api/v1/admin/audit: the audit log (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from envyard.api.deps import Admin, SessionDep
from envyard.api.schemas import AuditRead, Page
from envyard.api.services import audit

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"


@router.get("/audit")
def list_audit(session: SessionDep, _: Admin, actor: str | None = Query(default=None, max_length=200),
               action: str | None = Query(default=None, max_length=100, description="a prefix: token, binding.delete"),
               since: str | None = Query(default=None, pattern=ISO_TIME, description="ISO 8601, inclusive"),
               until: str | None = Query(default=None, pattern=ISO_TIME, description="ISO 8601, exclusive"),
               cursor: str | None = None,
               limit: int = Query(default=50, ge=1, le=500)) -> Page[AuditRead]:
    """Changes of permissions, policies, quotas, tokens, promotions and deletions, oldest first."""
    rows, next_cursor = audit.list_audit(session, actor=actor, action=action, since=audit.parse_time(since, "since"),
                                         until=audit.parse_time(until, "until"),
                                         cursor=cursor, limit=limit)
    return Page[AuditRead](items=[AuditRead.model_validate(row, from_attributes=True) for row in rows],
                           next_cursor=next_cursor)
