"""/api/v1/usage (JSON or CSV), /metrics (Prometheus) and /api/v1/admin/retention."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from envyard.api.deps import Admin, EngineDep, SessionDep, StoreDep, get_metrics_registry, metrics_access
from envyard.api.schemas import RetentionReport, RetentionRequest
from envyard.api.services import retention, usage
from envyard.api.services.audit import record_audit
from envyard.builder.errors import UsageError

router = APIRouter(tags=["admin"])


def _iso_only(value: object) -> object:
    """Query timestamps are ISO 8601 dates or times, never numbers (which pydantic would read as epoch seconds)."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_only)]
DEFAULT_DAYS = 30


@router.get("/api/v1/usage", response_model=None)
def get_usage(session: SessionDep, _: Admin, since: Timestamp | None = None, until: Timestamp | None = None,
              format: Literal["json", "csv"] = Query(default="json")) -> Response | dict[str, object]:
    """Builds, build minutes, failures by type, storage, pulls and downloads over [since, until) (default: the
    last 30 days); admins only."""
    until = _aware(until) if until is not None else datetime.now(UTC)
    since = _aware(since) if since is not None else until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise UsageError("since must be before until", field="since", hint="e.g. ?since=2026-01-01&until=2026-02-01")
    report = usage.usage_report(session, since, until)
    if format == "csv":
        return Response(usage.usage_csv(report), media_type="text/csv; charset=utf-8")
    return report


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_access)])
async def metrics(registry: Annotated[CollectorRegistry, Depends(get_metrics_registry)]) -> Response:
    """Prometheus metrics, read from the database (``metrics_token``, ``metrics_allowed_networks`` or an admin)."""
    return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/v1/admin/retention")
def apply_retention(engine: EngineDep, store: StoreDep, session: SessionDep, principal: Admin,
                    body: RetentionRequest = Body(default_factory=RetentionRequest)) -> RetentionReport:
    """Collect the builds namespace retention does not keep (``dry_run``, the default: report them only)."""
    report = retention.apply_retention(engine, store, namespace=body.namespace, dry_run=body.dry_run)
    if not body.dry_run and report.builds:
        record_audit(session, principal, "retention.apply", f"namespace {body.namespace or '*'}", None,
                     {"builds": [b.id for b in report.builds], "blobs": len(report.blobs), "bytes": report.bytes,
                      "freed_bytes": report.freed_bytes})
        session.commit()
    return report
