"""CI triggers: push webhooks (/api/v1/hooks/github, /api/v1/hooks/gitlab), environment sources and relock
schedules, and running due relocks now (admin).

The hook routes take no token: they authenticate by the request's signature (:mod:`envyard.api.services.hooks`),
as /healthz is public by taking no principal (see :mod:`envyard.api.auth.policy`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from envyard.api.auth.principals import Action
from envyard.api.deps import Admin, EngineDep, SessionDep, SettingsDep, StoreDep
from envyard.api.models import Build
from envyard.api.resources import EnvironmentRef, build_for, environment_for
from envyard.api.schemas import RequestModel
from envyard.api.services import hooks, relock
from envyard.builder.errors import NotFoundError, SpecError
from envyard.builder.url_policy import UrlPolicy

router = APIRouter(prefix="/api/v1", tags=["ci"])
READ_ENVIRONMENT = Depends(environment_for(Action.READ))
WRITE_ENVIRONMENT = Depends(environment_for(Action.WRITE))
READ_BUILD = Depends(build_for(Action.READ))
MAX_HOOK_BODY = 5 * 1024 * 1024


class SourceSet(RequestModel):
    repo_url: str = Field(min_length=1, max_length=500, description="Absolute path or http(s) URL of a git repo.")
    path: str = Field(min_length=1, max_length=500, description="The spec's path in the repository.")
    branch: str | None = Field(default=None, max_length=200, description="Only pushes to this branch (None: any).")


class SourceRead(BaseModel):
    environment: str
    repo_url: str
    path: str
    branch: str | None


class ScheduleSet(RequestModel):
    cron: str = Field(min_length=1, max_length=100, description="When to relock, e.g. '0 6 * * 1' (UTC).")
    notify_url: str | None = Field(default=None, max_length=500, description="POSTed a signed JSON on a change.")


class ScheduleRead(BaseModel):
    environment: str
    cron: str
    notify_url: str | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_result: str | None


class RelockRun(RequestModel):
    force: bool = Field(default=False, description="Relock every scheduled environment, due or not.")


class LockDiffRead(BaseModel):
    build_id: int
    previous_build_id: int | None
    diff: dict[str, Any]
    created_at: datetime


async def _delivery(request: Request) -> tuple[dict[str, str], bytes]:
    body = await request.body()
    if len(body) > MAX_HOOK_BODY:
        raise SpecError(f"the webhook body is larger than {MAX_HOOK_BODY} bytes", hint="send push events only")
    return {k.lower(): v for k, v in request.headers.items()}, body


HOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Bad or missing signature (or the hook is not enabled): nothing was read or built"},
    422: {"description": "A signed body that is not a push event (no JSON, no repository or commit)"},
}


@router.post("/hooks/github", responses=HOOK_RESPONSES)
async def github_hook(request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """A GitHub push webhook (signed with X-Hub-Signature-256; no token): rebuild the environments whose source
    spec the push changed, from the pushed commit."""
    headers, body = await _delivery(request)

    def handle() -> dict[str, Any]:
        outcome = hooks.handle_push(session, "github", headers, body, settings)
        session.commit()
        result: dict[str, Any] = outcome.to_json()
        return result

    found: dict[str, Any] = await run_in_threadpool(handle)
    return found


@router.post("/hooks/gitlab", responses=HOOK_RESPONSES)
async def gitlab_hook(request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """A GitLab push webhook (X-Gitlab-Token; no token): as the GitHub hook."""
    headers, body = await _delivery(request)

    def handle() -> dict[str, Any]:
        outcome = hooks.handle_push(session, "gitlab", headers, body, settings)
        session.commit()
        result: dict[str, Any] = outcome.to_json()
        return result

    found: dict[str, Any] = await run_in_threadpool(handle)
    return found


def _source_view(ref: EnvironmentRef, source: Any) -> SourceRead:
    return SourceRead(environment=f"{ref.namespace}/{ref.name}", repo_url=source.repo_url, path=source.spec_path,
                      branch=source.branch)


@router.put("/environments/{namespace}/{name}/source")
def set_source(body: SourceSet, session: SessionDep, settings: SettingsDep,
               ref: EnvironmentRef = WRITE_ENVIRONMENT) -> SourceRead:
    """Where the environment's spec lives: push hooks of that repository rebuild it."""
    source = hooks.set_source(session, ref.environment, body.repo_url, body.path, body.branch,
                              UrlPolicy.from_settings(settings))
    session.commit()
    return _source_view(ref, source)


@router.get("/environments/{namespace}/{name}/source")
def get_source(session: SessionDep, ref: EnvironmentRef = READ_ENVIRONMENT) -> SourceRead:
    source = hooks.get_source(session, ref.environment)
    if source is None:
        raise NotFoundError(f"{ref.namespace}/{ref.name} has no source",
                            hint=f"set one: envyard env source {ref.namespace}/{ref.name} --repo URL --path PATH")
    return _source_view(ref, source)


def _schedule_view(ref: EnvironmentRef, schedule: Any) -> ScheduleRead:
    return ScheduleRead(environment=f"{ref.namespace}/{ref.name}", cron=schedule.cron,
                        notify_url=schedule.notify_url, next_run_at=schedule.next_run_at,
                        last_run_at=schedule.last_run_at, last_result=schedule.last_result)


@router.put("/environments/{namespace}/{name}/schedule")
def set_schedule(body: ScheduleSet, session: SessionDep, settings: SettingsDep,
                 ref: EnvironmentRef = WRITE_ENVIRONMENT) -> ScheduleRead:
    """Relock the environment on a cron schedule; a build is queued only when the solve changes."""
    schedule = relock.set_schedule(session, ref.environment, body.cron, body.notify_url,
                                   UrlPolicy.from_settings(settings))
    session.commit()
    return _schedule_view(ref, schedule)


@router.get("/environments/{namespace}/{name}/schedule")
def get_schedule(session: SessionDep, ref: EnvironmentRef = READ_ENVIRONMENT) -> ScheduleRead:
    schedule = relock.get_schedule(session, ref.environment)
    if schedule is None:
        raise NotFoundError(f"{ref.namespace}/{ref.name} has no relock schedule",
                            hint=f"set one: envyard env schedule {ref.namespace}/{ref.name} --cron '0 6 * * 1'")
    return _schedule_view(ref, schedule)


@router.get("/builds/{build_id}/lock-diff")
def get_lock_diff(session: SessionDep, build: Build = READ_BUILD) -> LockDiffRead:
    """The lock diff a scheduled relock attached to the build it queued."""
    assert build.id is not None
    found = relock.get_lock_diff(session, build.id)
    return LockDiffRead(build_id=found.build_id, previous_build_id=found.previous_build_id, diff=found.diff,
                        created_at=found.created_at)


@router.post("/admin/relocks/run")
def run_relocks(engine: EngineDep, store: StoreDep, settings: SettingsDep, _: Admin,
                body: RelockRun = Body(default_factory=RelockRun)) -> dict[str, Any]:
    """Run the due scheduled relocks now (``force``: all of them); one report per schedule."""
    return {"relocks": relock.run_due(engine, store, settings, force=body.force)}
