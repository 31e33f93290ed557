"""/api/v1/builds: read, list, cancel, rebuild, diff, logs (text or Server-Sent Events), artifacts."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlmodel import col, select

from envyard.api.auth.principals import Action
from envyard.api.auth.scope import readable
from envyard.api.deps import CurrentPrincipal, EngineDep, LoadDep, Reader, SessionDep, SettingsDep, StoreDep
from envyard.api.ids import EventId
from envyard.api.limits import Slot
from envyard.api.models import Build, BuildArtifact, BuildStatus, Spec
from envyard.api.resources import BuildPair, blob_for, build_for, build_pair_for, visible_environment
from envyard.api.schemas import ArtifactRead, BuildDiff, BuildRead, Page
from envyard.api.services import builds, logs
from envyard.api.services.quotas import QuotaSettings
from envyard.api.services.usage import record_usage
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["builds"])
READ_BUILD = Depends(build_for(Action.READ))
WRITE_BUILD = Depends(build_for(Action.WRITE))
READ_PAIR = Depends(build_pair_for(Action.READ))
READ_BLOB = Depends(blob_for(Action.READ))
KEEPALIVE_SECONDS = 10.0


@router.get("/builds")
def list_builds(request: Request, engine: EngineDep, session: SessionDep, principal: Reader,
                environment: str | None = Query(default=None, description="NAMESPACE/NAME"),
                status: BuildStatus | None = None, cursor: str | None = None,
                limit: int = Query(default=50, ge=1, le=500)) -> Page[BuildRead]:
    if environment:  # unknown and unreadable environments alike: 404
        namespace, _, name = environment.partition("/")
        visible_environment(request, engine, principal, Action.READ, namespace, name)
    scope = readable(principal)
    rows, next_cursor = builds.list_builds(session, environment=environment, status=status, cursor=cursor,
                                           limit=limit, readable=None if scope is None else scope.namespaces)
    items = builds.to_read(session, rows, request.url.netloc)
    if scope is not None:  # bindings on some environments of a namespace
        items = [item for item in items if scope.environment(*item.environment.split("/", 1))]
    return Page[BuildRead](items=items, next_cursor=next_cursor)


@router.get("/builds/{build_id}")
def get_build(request: Request, session: SessionDep, build: Build = READ_BUILD) -> BuildRead:
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/builds/{build_id}/cancel")
def cancel_build(request: Request, session: SessionDep, target: Build = WRITE_BUILD) -> BuildRead:
    build = builds.cancel_build(session, target.id or 0)
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/builds/{build_id}/rebuild", status_code=201)
def rebuild(request: Request, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal,
            old: Build = WRITE_BUILD) -> BuildRead:
    build = builds.rebuild(session, old.id or 0, principal.name, quotas=QuotaSettings.of(settings))
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.get("/builds/{build_id}/diff/{other_id}")
def diff(session: SessionDep, pair: BuildPair = READ_PAIR) -> BuildDiff:
    """What changed from build ``build_id`` to build ``other_id``."""
    return builds.diff_builds(session, pair.build.id or 0, pair.other.id or 0)


@router.get("/builds/{build_id}/spec", response_class=Response)
def get_spec(session: SessionDep, build: Build = READ_BUILD) -> Response:
    spec = session.get(Spec, build.spec_id)
    assert spec is not None
    return Response(spec.content, media_type="text/yaml",
                    headers={"Content-Disposition": f'inline; filename="{spec.filename}"'})


@router.get("/builds/{build_id}/logs", response_class=Response)
def get_logs(request: Request, load: LoadDep, engine: EngineDep, principal: CurrentPrincipal, follow: bool = False,
             accept: str = Header(default=""),
             last_event_id: Annotated[EventId, Header()] = 0, build: Build = READ_BUILD) -> Response:
    """The log as text; as Server-Sent Events (``?follow=true`` or ``Accept: text/event-stream``) while running.
    A token may hold ``max_log_streams_per_token`` streams open (429 beyond). No database connection is held:
    the log is read in short sessions."""
    build_id = build.id or 0
    if follow or "text/event-stream" in accept:
        slot = load.stream_slot(request, principal)
        events = _log_events(load.log_hub, build_id, last_event_id, slot)
        weakref.finalize(events, slot.release)  # also when the stream never starts (the client left at once)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return StreamingResponse(logs.iter_log(engine, build_id),
                             media_type="text/plain; charset=utf-8")


async def _log_events(hub: logs.LogHub, build_id: int, after: int, slot: Slot) -> AsyncIterator[str]:
    """Server-Sent Events from the build's shared poller; a disconnect cancels this generator (Starlette)."""
    last_status = ""
    try:
        async for batch in hub.follow(build_id, after, KEEPALIVE_SECONDS):
            if not (batch.chunks or batch.status or batch.end):
                yield ": keepalive\n\n"  # a comment: keeps proxies and clients from timing out a queued build
            for chunk_id, text in batch.chunks:
                data = "\n".join(f"data: {line}" for line in text.rstrip("\n").split("\n"))
                yield f"id: {chunk_id}\nevent: log\n{data}\n\n"
            if batch.status and batch.status != last_status:
                last_status = batch.status
                yield f"event: status\ndata: {json.dumps({'status': batch.status})}\n\n"
            if batch.end:
                yield f"event: end\ndata: {json.dumps({'status': batch.status})}\n\n"
                return
    finally:
        slot.release()


def _artifact_url(request: Request, build_id: int, name: str) -> str:
    return str(request.url_for("download_artifact", build_id=build_id, name=name))


@router.get("/builds/{build_id}/artifacts")
def list_artifacts(request: Request, session: SessionDep, kind: str | None = None,
                   build: Build = READ_BUILD) -> list[ArtifactRead]:
    build_id = build.id or 0
    query = select(BuildArtifact).where(BuildArtifact.build_id == build_id)
    if kind:
        query = query.where(BuildArtifact.kind == kind)
    rows = session.exec(query.order_by(col(BuildArtifact.id))).all()
    return [ArtifactRead(kind=a.kind, name=a.name, platform=a.platform, digest=f"sha256:{a.sha256}", size=a.size,
                         media_type=a.media_type, url=_artifact_url(request, build_id, a.name), partial=a.partial)
            for a in rows]


def _stream(store: ArtifactStore, artifact: BuildArtifact, disposition: str, presigned: bool) -> Response:
    headers = {"Content-Length": str(artifact.size), "Docker-Content-Digest": f"sha256:{artifact.sha256}",
               "Content-Disposition": disposition, "ETag": f'"sha256:{artifact.sha256}"'}
    if presigned:
        url = store.presigned_get(artifact.sha256, 900, artifact.name)
        if url is not None:
            return RedirectResponse(url, status_code=307)
    chunks: Iterator[bytes] = store.read(artifact.sha256)
    return StreamingResponse(chunks, media_type=artifact.media_type, headers=headers)


@router.get("/builds/{build_id}/artifacts/{name:path}", name="download_artifact", response_class=Response)
def download_artifact(name: str, session: SessionDep, store: StoreDep, principal: CurrentPrincipal,
                      presigned: bool = False, build: Build = READ_BUILD) -> Response:
    """The artifact's bytes (``?presigned=true``: a redirect to the object store, where it has one)."""
    build_id = build.id or 0
    artifact = session.exec(
        select(BuildArtifact).where(BuildArtifact.build_id == build_id, BuildArtifact.name == name)
    ).first()
    if artifact is None:
        raise NotFoundError(f"build {build_id} has no artifact '{name}'",
                            hint=f"list them: GET /api/v1/builds/{build_id}/artifacts")
    namespace, environment, _ = builds.environment_names(session, {build.environment_id})[build.environment_id]
    record_usage(session, "artifact", namespace, environment, None if principal.anonymous else principal.name,
                 artifact.size)
    session.commit()
    return _stream(store, artifact, f'attachment; filename="{artifact.name}"', presigned)


@router.get("/blobs/{digest}", response_class=Response)
def get_blob(store: StoreDep, presigned: bool = False, artifact: BuildArtifact = READ_BLOB) -> Response:
    """Any published artifact by its digest (``sha256:<hex>``) in a namespace the caller may read."""
    return _stream(store, artifact, f'attachment; filename="{artifact.name}"', presigned)
