"""The audit log: every change of permissions, policies, quotas, tokens, promotions and deletions is recorded with
who made it, what it changed and the state before and after (:class:`~envyard.api.models.AuditEvent`).

:func:`record_audit` adds the event to the caller's session, so it is committed with the change it describes (or
rolled back with it); :func:`list_audit` is the admins' query (``GET /api/v1/admin/audit``, ``envyard audit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from envyard.api.auth.principals import Principal
from envyard.api.models import AuditEvent
from envyard.api.services.pagination import clamp_limit, decode_cursor, encode_cursor
from envyard.builder.errors import SpecError

__all__ = ["actor_of", "list_audit", "parse_time", "record_audit", "snapshot"]


def actor_of(principal: Principal | None) -> tuple[str, str, int | None]:
    """(kind, name, id) of who acts: a token (a user's or a service account's), nobody, or the server itself."""
    if principal is None:
        return "system", "envyard", None
    if principal.anonymous:
        return "anonymous", "anonymous", None
    kind = getattr(principal, "kind", None) or "token"
    name = getattr(principal, "user", None) or principal.name
    return str(kind), str(name), principal.token_id


def snapshot(value: Any) -> Any:
    """A JSON-compatible copy of ``value`` (a model, a mapping, a list, a scalar) for ``before``/``after``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [snapshot(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    return str(value)


def record_audit(session: Session, principal: Principal | None, action: str, target: str, before: Any = None,
                 after: Any = None, request_id: str | None = None) -> AuditEvent:
    """Add one audit event to ``session`` (committed with the change it records; services never commit).

    ``action``: dotted, object first (``token.create``, ``binding.delete``, ``policy.update``); ``target``: what
    changed, as users name it (``token 7``, ``namespace team-a``, ``binding 3``); ``before``/``after``: the state
    (anything :func:`snapshot` takes), None where there was none."""
    kind, name, actor_id = actor_of(principal)
    event = AuditEvent(actor_kind=kind, actor_name=name, actor_id=actor_id, action=action, target=target[:500],
                       before=snapshot(before), after=snapshot(after), request_id=request_id)
    session.add(event)
    return event


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 time (a date means its midnight; without a zone: UTC)."""
    if value is None:
        return None
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise SpecError(f"'{value}' is not an ISO 8601 time", field=field,
                        hint="e.g. 2026-01-31 or 2026-01-31T12:00:00Z") from None


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def list_audit(session: Session, *, actor: str | None = None, action: str | None = None,
               since: datetime | None = None, until: datetime | None = None, cursor: str | None = None,
               limit: int = 50) -> tuple[Sequence[AuditEvent], str | None]:
    """Events in the order they happened: ``actor`` (its name), ``action`` (a prefix: ``token`` matches
    ``token.create`` and ``token.revoke``), ``since`` (inclusive) and ``until`` (exclusive)."""
    limit = clamp_limit(limit)
    query = select(AuditEvent).where(col(AuditEvent.id) > decode_cursor(cursor))
    if actor:
        query = query.where(AuditEvent.actor_name == actor)
    if action:
        prefix = action.rstrip(".")
        query = query.where((col(AuditEvent.action) == prefix) | col(AuditEvent.action).startswith(prefix + ".",
                                                                                                    autoescape=True))
    since, until = _utc(since), _utc(until)
    if since is not None:
        query = query.where(col(AuditEvent.at) >= since)
    if until is not None:
        query = query.where(col(AuditEvent.at) < until)
    rows = session.exec(query.order_by(col(AuditEvent.id)).limit(limit + 1)).all()
    next_cursor = encode_cursor(rows[limit - 1].id or 0) if len(rows) > limit else None
    return rows[:limit], next_cursor
