"""/api/v1/admin: operations for admins only (garbage collection of the artifact store)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request

from envyard.api.auth import Action, Principal, authorize
from envyard.api.deps import get_settings, get_store
from envyard.api.schemas import GcReport, GcRequest
from envyard.api.services import gc
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
ADMIN = Depends(authorize(Action.ADMIN))


@router.post("/gc")
def collect_garbage(request: Request, body: GcRequest = Body(default_factory=GcRequest),
                    settings: ServiceSettings = Depends(get_settings), store: ArtifactStore = Depends(get_store),
                    _: Principal = ADMIN) -> GcReport:
    """Delete the blobs no retained build references and no running build holds (409 while another collection
    runs); ``dry_run`` reports what would be deleted."""
    grace = settings.gc_grace_seconds if body.grace_seconds is None else body.grace_seconds
    return gc.collect(request.app.state.engine, store, grace_seconds=grace, dry_run=body.dry_run)
