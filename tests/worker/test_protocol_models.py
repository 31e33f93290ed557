"""The worker protocol's models (envyard.worker.protocol) are the API's and the worker's: what the API builds parses
as what the worker reads, every body survives JSON, and the child's job.json comes from one constructor.

The same calls through a real server: tests/service/test_protocol.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from envyard.api.db import make_engine, migrate
from envyard.api.ids import MAX_SIZE as API_MAX_SIZE
from envyard.api.models import Build, Environment, Namespace, Spec
from envyard.api.routers import jobs as job_routes
from envyard.api.services import jobs
from envyard.worker import protocol
from envyard.worker.job_io import ArtifactFile, JobManifest, JobSpec, LockedPackageRow
from envyard.worker.protocol import (
    ArtifactEntry,
    BuildOptions,
    ClaimRequest,
    CompleteRequest,
    Completion,
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
from envyard.worker.settings import WorkerSettings

DIGEST = "ab" * 32
POLICY = jobs.LeasePolicy(lease_seconds=30, time_limit_seconds=600, max_attempts=3, backoff_seconds=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'protocol.db'}")
    migrate(made)
    yield made
    made.dispose()


def queue_build(engine: Engine, options: dict[str, object], *, allow_sdists: bool = False) -> int:
    with Session(engine) as session:
        namespace = Namespace(name="team", allow_sdists=allow_sdists)
        spec = Spec(sha256=uuid.uuid4().hex * 2, filename="pixi.toml.yml", content="dependencies: [zlib]\n")
        session.add_all([namespace, spec])
        session.flush()
        assert namespace.id is not None and spec.id is not None
        environment = Environment(namespace_id=namespace.id, name="env")
        session.add(environment)
        session.flush()
        assert environment.id is not None
        build = Build(environment_id=environment.id, spec_id=spec.id, status="queued", platforms=["linux-64"],
                      options=options)
        session.add(build)
        session.commit()
        assert build.id is not None
        return build.id


def test_the_apis_job_answer_parses_as_the_workers_job_and_makes_the_childs_spec(engine: Engine) -> None:
    build_id = queue_build(engine, BuildOptions(image=False, sbom="cyclonedx").model_dump(), allow_sdists=True)
    with Session(engine) as session:
        build = jobs.claim_build(session, "w1", ["linux-64"], POLICY)
        assert build is not None and build.id == build_id
        answer = json.dumps(jsonable_encoder(jobs.job_for(session, build, POLICY, heartbeat_seconds=1.5)))
    job = Job.model_validate_json(answer)  # what the worker's client does with the claim's answer
    assert (job.build_id, job.attempt, job.heartbeat_seconds, job.lease_seconds) == (build_id, 1, 1.5, 30)
    assert job.image_name == f"team/env:build-{build_id}" and job.allow_sdists is True
    assert job.options == BuildOptions(image=False, archive=True, sbom="cyclonedx", channel_alias=None)

    spec = JobSpec.from_job(job, WorkerSettings(env_prefix="/srv/env", _env_file=None))  # type: ignore[call-arg]
    assert spec == JobSpec(build_id=build_id, spec_text="dependencies: [zlib]\n", spec_filename="pixi.toml.yml",
                           platforms=["linux-64"], image=False, archive=True, sbom="cyclonedx",
                           image_name=f"team/env:build-{build_id}", env_prefix="/srv/env", allow_sdists=True)
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec  # job.json, read back by the child


def test_a_jobs_spec_takes_the_build_option_defaults_stated_once() -> None:
    defaults = BuildOptions()
    spec = JobSpec(build_id=1, spec_text="")
    assert (spec.image, spec.archive, spec.sbom, spec.channel_alias) == (
        defaults.image, defaults.archive, defaults.sbom, defaults.channel_alias)
    assert spec.env_prefix == WorkerSettings(_env_file=None).env_prefix  # type: ignore[call-arg]


ARTIFACT = ArtifactEntry(kind="conda-lock", name="conda-lock.yml", platform=None, sha256=DIGEST, size=3,
                         media_type="application/yaml")
BODIES: list[BaseModel] = [
    ClaimRequest(worker="w1", platforms=["linux-64"], wait_seconds=2.5),
    Job.example(),
    LeaseRef(lease_id="l1"),
    HeartbeatReply(cancel_requested=True, lease_expires_at=Job.example().deadline),
    StageUpdate(lease_id="l1", stage="installing"),
    UploadRequest(lease_id="l1", sha256=DIGEST, size=3),
    UploadTicket(present=False, upload_id="u1", url="https://s3.example/put"),
    UploadFinish(lease_id="l1", upload_id="u1", sha256=DIGEST, size=3),
    UploadedBlob(digest=f"sha256:{DIGEST}", size=3, present=True),
    Completion(artifacts=[ARTIFACT], packages=[]).request("l1"),
    FailRequest(lease_id="l1", code="unsatisfiable", stage="solving", message="no", hint=None, artifacts=[ARTIFACT]),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda body: type(body).__name__)
def test_every_body_survives_json(body: BaseModel) -> None:
    assert type(body).model_validate_json(body.model_dump_json()) == body


def test_request_bodies_are_strict() -> None:
    with pytest.raises(ValidationError):
        ClaimRequest.model_validate_json('{"worker": "w", "wait_seconds": "1"}')
    with pytest.raises(ValidationError):
        StageUpdate.model_validate_json('{"lease_id": "l", "stage": "dancing"}')
    assert protocol.MAX_SIZE == API_MAX_SIZE


def test_a_manifest_becomes_the_completion_the_api_accepts() -> None:
    """pypi packages have no build string: the completion sends an empty one (the API's column is not null)."""
    manifest = JobManifest(
        artifacts=[ArtifactFile(kind="conda-lock", name="conda-lock.yml", path="out/lock/conda-lock.yml",
                                sha256=DIGEST, size=3, media_type="application/yaml")],
        packages=[LockedPackageRow(platform="linux-64", manager="conda", name="zlib", version="1.3", build="h0"),
                  LockedPackageRow(platform="linux-64", manager="pypi", name="attrs", version="24.1")],
        platforms=["linux-64"], image_digest=None, lock_sha256=DIGEST)
    request = manifest.completion().request("l1")
    parsed = CompleteRequest.model_validate_json(request.model_dump_json())  # as the API's route reads it
    assert parsed.artifacts == [ARTIFACT]
    assert [(p.manager, p.name, p.build) for p in parsed.packages] == [("conda", "zlib", "h0"), ("pypi", "attrs", "")]


def test_the_job_routes_take_and_give_the_protocols_models() -> None:
    routes = [r for r in job_routes.router.routes if isinstance(r, APIRoute)]
    assert len(routes) == 10
    bodies = {r.path: param.field_info.annotation for r in routes for param in r.dependant.body_params}
    assert len(bodies) == 8 and all(model.__module__ == protocol.__name__ for model in bodies.values()), bodies
    answers = {r.path: r.response_model for r in routes if r.response_model is not None}
    for path, model in answers.items():
        assert model.__module__ == protocol.__name__ or model.__name__ == "BuildRead", (path, model)
    assert Job in {model for r in routes for model in [r.responses.get(200, {}).get("model")]}
