"""/api/v1/builds: read, list, cancel, rebuild, diff, logs (text or Server-Sent Events), artifacts."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Iterator

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlmodel import Session, col, select

from api.auth import Action, Principal, authorize, readable_namespaces
from api.deps import get_session, get_store
from api.limits import LoadControls, Slot
from api.models import BuildArtifact, BuildStatus, Spec
from api.schemas import ArtifactRead, BuildDiff, BuildRead, Page
from api.services import builds, logs
from api.storage import ArtifactStore
from builder.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["builds"])
READ = Depends(authorize(Action.READ))
WRITE = Depends(authorize(Action.WRITE))
KEEPALIVE_SECONDS = 10.0


@router.get("/builds")
def list_builds(request: Request, environment: str | None = Query(default=None, description="NAMESPACE/NAME"),
                status: BuildStatus | None = None, cursor: str | None = None,
                limit: int = Query(default=50, ge=1, le=500), session: Session = Depends(get_session),
                principal: Principal = READ) -> Page[BuildRead]:
    rows, next_cursor = builds.list_builds(session, environment=environment, status=status, cursor=cursor,
                                           limit=limit, readable=readable_namespaces(request, principal))
    return Page[BuildRead](items=builds.to_read(session, rows, request.url.netloc), next_cursor=next_cursor)


@router.get("/builds/{build_id}")
def get_build(build_id: int, request: Request, session: Session = Depends(get_session),
              _: Principal = READ) -> BuildRead:
    return builds.to_read(session, [builds.get_build(session, build_id)], request.url.netloc)[0]


@router.post("/builds/{build_id}/cancel")
def cancel_build(build_id: int, request: Request, session: Session = Depends(get_session),
                 _: Principal = WRITE) -> BuildRead:
    build = builds.cancel_build(session, build_id)
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/builds/{build_id}/rebuild", status_code=201)
def rebuild(build_id: int, request: Request, session: Session = Depends(get_session),
            principal: Principal = WRITE) -> BuildRead:
    build = builds.rebuild(session, build_id, principal.name)
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.get("/builds/{build_id}/diff/{other_id}")
def diff(build_id: int, other_id: int, session: Session = Depends(get_session), _: Principal = READ) -> BuildDiff:
    """What changed from build ``build_id`` to build ``other_id``."""
    return builds.diff_builds(session, build_id, other_id)


@router.get("/builds/{build_id}/spec", response_class=Response)
def get_spec(build_id: int, session: Session = Depends(get_session), _: Principal = READ) -> Response:
    spec = session.get(Spec, builds.get_build(session, build_id).spec_id)
    assert spec is not None
    return Response(spec.content, media_type="text/yaml",
                    headers={"Content-Disposition": f'inline; filename="{spec.filename}"'})


@router.get("/builds/{build_id}/logs", response_class=Response)
def get_logs(build_id: int, request: Request, follow: bool = False, accept: str = Header(default=""),
             last_event_id: int = Header(default=0), session: Session = Depends(get_session),
             principal: Principal = READ) -> Response:
    """The log as text; as Server-Sent Events (``?follow=true`` or ``Accept: text/event-stream``) while running.
    A token may hold ``max_log_streams_per_token`` streams open (429 beyond)."""
    builds.get_build(session, build_id)
    session.close()  # a stream holds no database connection: the log is read in short sessions
    if follow or "text/event-stream" in accept:
        load: LoadControls = request.app.state.load
        slot = load.stream_slot(request, principal)
        events = _log_events(load.log_hub, build_id, last_event_id, slot)
        weakref.finalize(events, slot.release)  # also when the stream never starts (the client left at once)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return StreamingResponse(logs.iter_log(request.app.state.engine, build_id),
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
def list_artifacts(build_id: int, request: Request, kind: str | None = None,
                   session: Session = Depends(get_session), _: Principal = READ) -> list[ArtifactRead]:
    builds.get_build(session, build_id)
    query = select(BuildArtifact).where(BuildArtifact.build_id == build_id)
    if kind:
        query = query.where(BuildArtifact.kind == kind)
    rows = session.exec(query.order_by(col(BuildArtifact.id))).all()
    return [ArtifactRead(kind=a.kind, name=a.name, platform=a.platform, digest=f"sha256:{a.sha256}", size=a.size,
                         media_type=a.media_type, url=_artifact_url(request, build_id, a.name)) for a in rows]


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
def download_artifact(build_id: int, name: str, presigned: bool = False, session: Session = Depends(get_session),
                      store: ArtifactStore = Depends(get_store), _: Principal = READ) -> Response:
    """The artifact's bytes (``?presigned=true``: a redirect to the object store, where it has one)."""
    artifact = session.exec(
        select(BuildArtifact).where(BuildArtifact.build_id == build_id, BuildArtifact.name == name)
    ).first()
    if artifact is None:
        raise NotFoundError(f"build {build_id} has no artifact '{name}'",
                            hint=f"list them: GET /api/v1/builds/{build_id}/artifacts")
    return _stream(store, artifact, f'attachment; filename="{artifact.name}"', presigned)


@router.get("/blobs/{digest}", response_class=Response)
def get_blob(digest: str, presigned: bool = False, session: Session = Depends(get_session),
             store: ArtifactStore = Depends(get_store), _: Principal = READ) -> Response:
    """Any published artifact by its digest (``sha256:<hex>``)."""
    algorithm, _sep, hexdigest = digest.partition(":")
    artifact = session.exec(select(BuildArtifact).where(BuildArtifact.sha256 == hexdigest)).first()
    if algorithm != "sha256" or artifact is None:
        raise NotFoundError(f"no published artifact has digest '{digest}'", field="digest",
                            hint="digests look like sha256:<64 hex digits>; see a build's artifact list")
    return _stream(store, artifact, f'attachment; filename="{artifact.name}"', presigned)
