"""/api/v1/admin: operations for admins only (garbage collection of the artifact store)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Request

from envyard.api.deps import Admin, EngineDep, SettingsDep, StoreDep
from envyard.api.schemas import GcReport, GcRequest
from envyard.api.services import gc

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/gc")
def collect_garbage(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep, _: Admin,
                    body: GcRequest = Body(default_factory=GcRequest)) -> GcReport:
    """Delete the blobs no retained build references and no running build holds (409 while another collection
    runs); ``dry_run`` reports what would be deleted."""
    grace = settings.gc_grace_seconds if body.grace_seconds is None else body.grace_seconds
    return gc.collect(engine, store, grace_seconds=grace, dry_run=body.dry_run)
