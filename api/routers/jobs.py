"""/api/v1/jobs: the worker protocol (claim, heartbeat, stage, logs, uploads, complete, fail, canceled).

A worker needs only a token with the ``worker`` role and this HTTP protocol: no database credentials.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from envyard.api.auth.principals import Action
from envyard.api.db import session_scope
from envyard.api.deps import EngineDep, LeasePolicyDep, SessionDep, SettingsDep, StoreDep, Worker
from envyard.api.ids import MAX_SIZE, Id
from envyard.api.models import Build, BuildStatus
from envyard.api.resources import build_for
from envyard.api.schemas import BuildRead
from envyard.api.services import builds, gc, jobs, logs
from envyard.builder.errors import NotFoundError
from envyard.worker.protocol import (
    BlobReceipt,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatReply,
    Job,
    LeaseRef,
    StageUpdate,
    UploadedBlob,
    UploadFinish,
    UploadRequest,
    UploadTicket,
)

router = APIRouter(prefix="/api/v1/jobs", tags=["worker protocol"])
WORK_BUILD = Depends(build_for(Action.WORK))  # the build of the path, which must exist, for worker tokens
CLAIM_POLL_SECONDS = 0.25
UPLOAD_BATCH = 1024 * 1024


@router.post("/claim", response_model=None, responses={200: {"model": Job}, 204: {"description": "nothing queued"}})
async def claim(body: ClaimRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                policy: LeasePolicyDep, principal: Worker) -> Job | Response:
    """The oldest queued build this worker can run, leased to it; 204 when none came within wait_seconds. A
    build-scoped token claims its own build only, and only as the attempt it was issued for."""
    heartbeat_seconds = settings.heartbeat_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_seconds

    def attempt() -> Job | None:
        with session_scope(engine) as session:  # a transaction per attempt
            only = None if principal.build is None else (principal.build.build_id, principal.build.attempt)
            build = jobs.claim_build(session, body.worker, body.platforms, policy, only=only)
            if build is None:
                return None
            logs.append_log(session, build.id or 0,
                            f"envyard: attempt {build.attempt} claimed by worker {body.worker}\n")
            return jobs.job_for(session, build, policy, heartbeat_seconds)

    while True:
        job = await run_in_threadpool(attempt)
        if job is not None:
            return job
        if loop.time() >= deadline or await request.is_disconnected():
            return Response(status_code=204)
        await asyncio.sleep(CLAIM_POLL_SECONDS)


@router.post("/{build_id}/heartbeat")
def heartbeat(build_id: Id, body: LeaseRef, session: SessionDep,
              policy: LeasePolicyDep, _: Build = WORK_BUILD) -> HeartbeatReply:
    build = jobs.heartbeat(session, build_id, body.lease_id, policy)
    session.commit()
    assert build.lease_expires_at is not None
    return HeartbeatReply(cancel_requested=build.cancel_requested, lease_expires_at=build.lease_expires_at)


@router.post("/{build_id}/stage")
def stage(build_id: Id, body: StageUpdate, request: Request, session: SessionDep,
          _: Build = WORK_BUILD) -> BuildRead:
    build = jobs.set_stage(session, build_id, body.lease_id, BuildStatus(body.stage))
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/{build_id}/logs", status_code=204)
async def append_logs(build_id: Id, request: Request, engine: EngineDep, lease_id: str = Query(),
                      _: Build = WORK_BUILD) -> Response:
    """Append the request body (UTF-8 lines) to the build's log."""
    text = (await request.body()).decode("utf-8", errors="replace")

    def append() -> None:
        with session_scope(engine) as session:
            jobs.leased_build(session, build_id, lease_id)
            logs.append_log(session, build_id, text)

    await run_in_threadpool(append)
    return Response(status_code=204)


@router.put("/{build_id}/blobs/{digest}", status_code=201)
async def upload_blob(build_id: Id, digest: str, request: Request, engine: EngineDep, store: StoreDep,
                      lease_id: str = Query(),
                      size: int = Query(ge=0, le=MAX_SIZE), _: Build = WORK_BUILD) -> UploadedBlob:
    """Stream a blob into the store; it is published only if its bytes hash to ``digest``."""
    algorithm, _sep, expected = digest.partition(":")
    if algorithm != "sha256" or len(expected) != 64:
        raise NotFoundError(f"'{digest}' is not a sha256 digest", field="digest", hint="use sha256:<64 hex digits>")

    def check_lease() -> None:
        with session_scope(engine) as session:
            jobs.leased_build(session, build_id, lease_id)
        gc.hold_blobs(engine, build_id, [expected.lower()])  # before the store is looked at: see api.services.gc

    await run_in_threadpool(check_lease)
    if store.stat(expected) == size:
        return UploadedBlob(digest=digest, size=size, present=True)
    writer = store.writer()
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= UPLOAD_BATCH:
                await run_in_threadpool(writer.write, bytes(pending))
                pending.clear()
        if pending:
            await run_in_threadpool(writer.write, bytes(pending))
        stored = await run_in_threadpool(writer.commit, expected, size)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return UploadedBlob(digest=stored.digest, size=stored.size, present=False)


@router.post("/{build_id}/uploads")
def start_upload(build_id: Id, body: UploadRequest, session: SessionDep, engine: EngineDep,
                 store: StoreDep, _: Build = WORK_BUILD) -> UploadTicket:
    """Whether the blob is stored already, and otherwise a presigned URL to PUT it to (S3 stores only)."""
    jobs.leased_build(session, build_id, body.lease_id)
    session.commit()
    gc.hold_blobs(engine, build_id, [body.sha256])
    if store.stat(body.sha256) == body.size:
        return UploadTicket(present=True)
    ticket = store.presigned_upload(3600)
    if ticket is None:
        return UploadTicket(present=False)
    return UploadTicket(present=False, upload_id=ticket.upload_id, url=ticket.url)


@router.post("/{build_id}/uploads/finish", status_code=201)
def finish_upload(build_id: Id, body: UploadFinish, session: SessionDep, engine: EngineDep,
                  store: StoreDep, _: Build = WORK_BUILD) -> BlobReceipt:
    """Adopt a presigned upload after checking its sha256 and size."""
    jobs.leased_build(session, build_id, body.lease_id)
    session.commit()
    gc.hold_blobs(engine, build_id, [body.sha256])
    stored = store.finish_upload(body.upload_id, body.sha256, body.size)
    return BlobReceipt(digest=stored.digest, size=stored.size)


@router.post("/{build_id}/complete")
def complete(build_id: Id, body: CompleteRequest, request: Request, session: SessionDep, engine: EngineDep,
             store: StoreDep, _: Build = WORK_BUILD) -> BuildRead:
    build = jobs.complete_build(engine, build_id, body.lease_id, store, body.artifacts, body.packages,
                                body.image_digest, body.lock_sha256)
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/{build_id}/fail")
def fail(build_id: Id, body: FailRequest, request: Request, session: SessionDep, engine: EngineDep,
         store: StoreDep, _: Build = WORK_BUILD) -> BuildRead:
    """Fail the build; ``artifacts`` (uploaded first) stay downloadable, marked partial."""
    kept = builds.keep_partial_artifacts(engine, build_id, body.lease_id, store, body.artifacts)
    try:
        build = jobs.fail_build(session, build_id, body.lease_id, code=body.code, stage=body.stage,
                                message=body.message, hint=body.hint)
        session.commit()
    except Exception:  # the lease was lost (or the database failed): the build keeps no partial artifacts
        session.rollback()
        builds.drop_artifacts(session, kept)
        session.commit()
        raise
    return builds.to_read(session, [build], request.url.netloc)[0]


@router.post("/{build_id}/canceled")
def canceled(build_id: Id, body: LeaseRef, request: Request, session: SessionDep,
             _: Build = WORK_BUILD) -> BuildRead:
    build = jobs.confirm_canceled(session, build_id, body.lease_id)
    session.commit()
    return builds.to_read(session, [build], request.url.netloc)[0]
