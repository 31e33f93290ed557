"""Curated environments (promote a build by reference, deprecate with a successor) and pinned builds."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from envyard.api.auth.policy import require
from envyard.api.auth.principals import Action
from envyard.api.deps import CurrentPrincipal, SessionDep
from envyard.api.models import Build
from envyard.api.resources import EnvironmentRef, build_for, environment_for
from envyard.api.schemas import BuildRead, DeprecationRead, DeprecationSet, PromotionRequest
from envyard.api.services import builds, curation
from envyard.api.services.audit import record_audit

router = APIRouter(prefix="/api/v1", tags=["admin"])
READ_BUILD = Depends(build_for(Action.READ))
WRITE_BUILD = Depends(build_for(Action.WRITE))
ADMIN_ENVIRONMENT = Depends(environment_for(Action.ADMIN))


@router.post("/builds/{build_id}/promote", status_code=201)
def promote(body: PromotionRequest, request: Request, session: SessionDep, principal: CurrentPrincipal,
            source: Build = READ_BUILD) -> BuildRead:
    """Promote the build into the curated environment ``namespace/name`` (admin of that namespace): same
    artifacts, same image digest, nothing rebuilt; it becomes that environment's current build."""
    require(request, principal, Action.ADMIN, body.namespace)
    name = body.name or builds.environment_names(session, {source.environment_id})[source.environment_id][1]
    build = curation.promote(session, source, body.namespace, name, principal.name)
    record_audit(session, principal, "build.promote", f"build {source.id}", None,
                 {"environment": f"{body.namespace}/{name}", "build": build.id, "image_digest": build.image_digest})
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.put("/builds/{build_id}/pin")
def pin(request: Request, session: SessionDep, principal: CurrentPrincipal, build: Build = WRITE_BUILD) -> BuildRead:
    """Keep the build whatever the namespace's retention says."""
    before = build.pinned
    curation.set_pinned(session, build, True)
    record_audit(session, principal, "build.pin", f"build {build.id}", {"pinned": before}, {"pinned": True})
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.delete("/builds/{build_id}/pin")
def unpin(request: Request, session: SessionDep, principal: CurrentPrincipal,
          build: Build = WRITE_BUILD) -> BuildRead:
    before = build.pinned
    curation.set_pinned(session, build, False)
    record_audit(session, principal, "build.pin", f"build {build.id}", {"pinned": before}, {"pinned": False})
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


def _deprecation_view(ref: EnvironmentRef, row: curation.Deprecation) -> DeprecationRead:
    return DeprecationRead(environment=f"{ref.namespace}/{ref.name}", successor=row.successor, message=row.message,
                           deprecated_at=row.deprecated_at)


@router.put("/environments/{namespace}/{name}/deprecation")
def deprecate(body: DeprecationSet, session: SessionDep, principal: CurrentPrincipal,
              ref: EnvironmentRef = ADMIN_ENVIRONMENT) -> DeprecationRead:
    """Deprecate the environment (listings and ``env show`` say so, and name the successor)."""
    row = curation.deprecate(session, ref.namespace, ref.name, body.successor, body.message, principal.name)
    view = _deprecation_view(ref, row)
    record_audit(session, principal, "environment.deprecate", f"environment {ref.namespace}/{ref.name}", None, view)
    session.commit()
    return view


@router.delete("/environments/{namespace}/{name}/deprecation", status_code=204)
def undeprecate(session: SessionDep, principal: CurrentPrincipal,
                ref: EnvironmentRef = ADMIN_ENVIRONMENT) -> Response:
    row = curation.undeprecate(session, ref.namespace, ref.name)
    record_audit(session, principal, "environment.undeprecate", f"environment {ref.namespace}/{ref.name}",
                 None if row is None else _deprecation_view(ref, row), None)
    session.commit()
    return Response(status_code=204)
