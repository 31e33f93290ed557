"""Liveness and readiness: served without a token (like the documentation where public_docs opens it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from envyard.api.deps import EngineDep, StoreDep
from envyard.api.problems import problem_response
from envyard.builder.errors import EnvyardError, ServiceError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Answered on the event loop: no thread, no database connection, whatever the load."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(request: Request, engine: EngineDep, store: StoreDep) -> dict[str, str] | object:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        store.stat("0" * 64)
    except EnvyardError as exc:
        return problem_response(exc.to_problem(request.url.path), 503)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        error = ServiceError(f"not ready: {type(exc).__name__}: {exc}", hint="check the database and storage")
        return problem_response(error.to_problem(request.url.path), 503)
    return {"status": "ready"}
