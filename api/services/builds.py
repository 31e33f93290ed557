"""Builds as users see them: submit (reusing an identical spec's build), read, list, cancel, rebuild,
set-current (rollback) and diff."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import (
    RUNNING,
    Build,
    BuildArtifact,
    BuildPackage,
    BuildStatus,
    Environment,
    Namespace,
    Spec,
    utcnow,
)
from envyard.api.schemas import BuildDiff, BuildError, BuildRead, PackageChange
from envyard.api.services import catalog
from envyard.api.services.gc import hold_blobs
from envyard.api.services.jobs import leased_build
from envyard.api.services.logs import append_log
from envyard.api.services.pagination import clamp_limit, decode_cursor, encode_cursor
from envyard.api.services.quotas import QuotaSettings, check_quotas
from envyard.api.services.specs import SubmissionPolicy, resolve_platforms
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import ConflictError, NotFoundError, SpecError, TooManyRequestsError
from envyard.builder.policy import Policy
from envyard.worker.protocol import ArtifactEntry, BuildOptions

RUNNING_VALUES = tuple(s.value for s in RUNNING)
WAITING_VALUES = (BuildStatus.QUEUED.value, *RUNNING_VALUES)
WAITING_RETRY_SECONDS = 30
MAX_FILENAME = 200
CANCEL_TRIES = 5
REUSABLE = tuple(s.value for s in BuildStatus if s not in (BuildStatus.FAILED, BuildStatus.CANCELED))
TIMESTAMPS = ("created_at", "queued_at", "solving_at", "installing_at", "imaging_at", "pushing_at",
              "started_at", "finished_at")


@dataclass(frozen=True, slots=True)
class SubmittedBuild:
    build: Build
    reused: bool


def spec_digest(filename: str, text: str) -> str:
    return hashlib.sha256(filename.encode() + b"\0" + text.encode()).hexdigest()


def store_spec(session: Session, filename: str, text: str) -> Spec:
    """The spec row for this text, stored once by content hash."""
    return catalog.get_or_create(session, Spec, sha256=spec_digest(filename, text), filename=filename, content=text)


@dataclass(frozen=True, slots=True)
class CheckedSpec:
    """A submitted spec that parsed, and the platforms its build targets."""

    filename: str
    text: str
    platforms: list[str]
    rules: Policy = field(default_factory=Policy)


def check_spec_filename(filename: str) -> str:
    """``filename`` when it can name a file in a build's work directory; SpecError (422, field ``filename``)
    for an empty name, ``.``/``..`` (any name of dots only), path separators, NUL or other control characters."""
    problem = None
    if not filename or len(filename) > MAX_FILENAME:
        problem = f"must be 1 to {MAX_FILENAME} characters"
    elif set(filename) <= {"."}:
        problem = f"'{filename}' names a directory, not a file"
    elif any(c in filename for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in filename):
        problem = "must not contain path separators or control characters"
    if problem:
        raise SpecError(f"invalid spec file name: {problem}", field="filename",
                        hint="send a plain file name such as environment.yml or requirements.txt")
    return filename


def check_submission(filename: str, text: str, platforms: Sequence[str], policy: SubmissionPolicy,
                     channel_alias: str | None = None, rules: Policy | None = None) -> CheckedSpec:
    """Parse and validate a submitted spec (no database access: run it before any transaction opens).

    ``policy``: what the server accepts in a spec (no file includes, allowed URLs only); ``rules``: the admins'
    policy of the environment (:func:`api.services.policies.effective_policy`), carried on to the build."""
    check_spec_filename(filename)
    return CheckedSpec(filename, text, resolve_platforms(filename, text, platforms, policy=policy,
                                                         channel_alias=channel_alias, rules=rules),
                       rules=rules or Policy())


def submit_build(
    session: Session,
    namespace: str,
    name: str,
    *,
    spec: CheckedSpec,
    options: BuildOptions,
    relock: bool = False,
    create: bool = False,
    description: str = "",
    requested_by: str | None = None,
    max_waiting: int | None = None,
    quotas: QuotaSettings | None = None,
) -> SubmittedBuild:
    """Queue a build of ``spec`` (from :func:`check_submission`), or return the environment's build of the
    identical spec. ``max_waiting``: TooManyRequestsError when ``requested_by`` has that many builds queued or
    running already. A reused build that is completed becomes the environment's current build (as a new build
    would on completion), also after a rollback to another build; one still running becomes current when it
    completes. ``quotas``: hold the namespace's quotas (:func:`api.services.quotas.check_quotas`) for a new build;
    the build keeps the policy it was checked against (``spec.rules``) for its worker."""
    wanted_platforms = spec.platforms
    wanted_policy = spec.rules.model_dump(mode="json", exclude_defaults=True)
    if create:
        ns = catalog.ensure_namespace(session, namespace)
        assert ns.id is not None
        environment = catalog.get_or_create(session, Environment, namespace_id=ns.id, name=name)
        if description and not environment.description:
            environment.description = description
    else:
        environment = catalog.get_environment(session, namespace, name)
    stored = store_spec(session, spec.filename, spec.text)
    wanted_options = options.model_dump()
    if not relock:
        for existing in session.exec(
            select(Build)
            .where(Build.environment_id == environment.id, Build.spec_id == stored.id,
                   col(Build.status).in_(REUSABLE))
            .order_by(col(Build.id).desc())
        ).all():
            if (existing.platforms == wanted_platforms and existing.options == wanted_options
                    and existing.policy == wanted_policy):
                _make_current_if_completed(environment, existing)
                return SubmittedBuild(existing, reused=True)
    if max_waiting is not None and requested_by is not None:
        waiting = session.exec(select(func.count()).select_from(Build).where(
            Build.requested_by == requested_by, col(Build.status).in_(WAITING_VALUES))).one()
        if waiting >= max_waiting:
            raise TooManyRequestsError.limit_reached("builds queued or running", "max_waiting_builds_per_token",
                                                     max_waiting, waiting, WAITING_RETRY_SECONDS)
    assert environment.id is not None and stored.id is not None
    warnings = check_quotas(session, environment.namespace_id, requested_by, quotas) if quotas is not None else []
    now = utcnow()
    build = Build(environment_id=environment.id, spec_id=stored.id, platforms=wanted_platforms,
                  options=wanted_options, queued_at=now, created_at=now, requested_by=requested_by,
                  policy=wanted_policy)
    session.add(build)
    catalog.touch(environment)
    session.flush()
    assert build.id is not None
    for line in warnings:
        append_log(session, build.id, line)
    return SubmittedBuild(build, reused=False)


def _make_current_if_completed(environment: Environment, build: Build) -> None:
    if build.status == BuildStatus.COMPLETED and environment.current_build_id != build.id:
        environment.current_build_id = build.id
        catalog.touch(environment)


def get_build(session: Session, build_id: int) -> Build:
    build = session.get(Build, build_id)
    if build is None:
        raise NotFoundError(f"build {build_id} does not exist", hint="list builds with GET /api/v1/builds")
    return build


def rebuild(session: Session, build_id: int, requested_by: str | None = None,
            quotas: QuotaSettings | None = None) -> Build:
    """A new build of the same spec, platforms, options and policy (a fresh solve); ``quotas`` as in
    :func:`submit_build`."""
    old = get_build(session, build_id)
    warnings: list[str] = []
    if quotas is not None:
        environment = session.get(Environment, old.environment_id)
        assert environment is not None
        warnings = check_quotas(session, environment.namespace_id, requested_by, quotas)
    now = utcnow()
    build = Build(environment_id=old.environment_id, spec_id=old.spec_id, platforms=list(old.platforms),
                  options=dict(old.options), queued_at=now, created_at=now, requested_by=requested_by,
                  policy=dict(old.policy))
    session.add(build)
    session.flush()
    for line in warnings:
        append_log(session, build.id or 0, line)
    return build


def cancel_build(session: Session, build_id: int) -> Build:
    """Cancel now if queued; ask the worker to stop if running (it confirms within a heartbeat).

    Both are conditional UPDATEs on the status, and completion is conditional on no cancel having been asked
    (:func:`api.services.jobs.complete_build`): a cancel accepted here means the build never completes, and a
    build that completed first answers 409. The caller commits."""
    build = get_build(session, build_id)
    for _ in range(CANCEL_TRIES):  # queued -> claimed between the two UPDATEs: try again
        if BuildStatus(build.status).terminal:
            raise ConflictError(f"build {build_id} already {build.status}", hint="only queued or running builds cancel")
        done = session.execute(
            update(Build)
            .where(col(Build.id) == build_id, col(Build.status) == BuildStatus.QUEUED)
            .values(status=BuildStatus.CANCELED, finished_at=utcnow(), cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if not done.rowcount:  # type: ignore[attr-defined]
            done = session.execute(
                update(Build)
                .where(col(Build.id) == build_id, col(Build.status).in_(RUNNING_VALUES))
                .values(cancel_requested=True)
                .execution_options(synchronize_session=False)
            )
        session.flush()
        session.refresh(build)
        if done.rowcount:  # type: ignore[attr-defined]
            return build
    raise ConflictError(f"build {build_id} changed state while being canceled (now {build.status})",
                        hint="try the cancel again")


def keep_partial_artifacts(engine: Engine, build_id: int, lease_id: str, store: ArtifactStore,
                           artifacts: Sequence[ArtifactEntry]) -> list[int]:
    """Record the files a build that is failing produced before the failure (its lock files) as partial artifacts,
    while its worker still holds the lease; their row ids. Files not stored at their size, and names recorded
    already (a retried request), are left out.

    Committed before the failure (the holds, then the rows: two transactions, so it takes the engine), so garbage
    collection sees the blobs held (the build runs) and then referenced (the rows); should the failure find the
    lease lost, :func:`drop_artifacts` undoes it.
    """
    if not artifacts:
        return []
    with session_scope(engine) as session:
        leased_build(session, build_id, lease_id)
    hold_blobs(engine, build_id, [a.sha256 for a in artifacts])  # before the stat: see api.services.gc
    with session_scope(engine) as session:
        names = set(session.exec(select(BuildArtifact.name).where(BuildArtifact.build_id == build_id)).all())
        rows = []
        for artifact in artifacts:
            if artifact.name not in names and store.stat(artifact.sha256) == artifact.size:
                names.add(artifact.name)
                rows.append(BuildArtifact(build_id=build_id, **artifact.model_dump(), partial=True))
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows if row.id is not None]


def drop_artifacts(session: Session, artifact_ids: Sequence[int]) -> None:
    if artifact_ids:
        session.execute(delete(BuildArtifact).where(col(BuildArtifact.id).in_(artifact_ids)))


def set_current(session: Session, namespace: str, name: str, build_id: int) -> Environment:
    environment = catalog.get_environment(session, namespace, name)
    build = session.get(Build, build_id)
    if build is None or build.environment_id != environment.id:  # another environment's: alike, it may be hidden
        raise NotFoundError(f"environment '{namespace}/{name}' has no build {build_id}", field="build_id",
                            hint=f"list this environment's builds: GET /api/v1/builds?environment={namespace}/{name}")
    if build.status != BuildStatus.COMPLETED:
        raise ConflictError(f"build {build_id} is {build.status}, not completed", field="build_id",
                            hint="only a completed build can be current")
    environment.current_build_id = build.id
    catalog.touch(environment)
    session.flush()
    return environment


def list_builds(
    session: Session,
    *,
    environment: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    readable: Collection[str] | None = None,
) -> tuple[Sequence[Build], str | None]:
    """Builds newest first (cursor pages by descending id); ``readable``: only in these namespaces."""
    limit = clamp_limit(limit)
    query = select(Build)
    after = decode_cursor(cursor)
    if after:
        query = query.where(col(Build.id) < after)
    if environment:
        namespace, _, name = environment.partition("/")
        query = query.where(Build.environment_id == catalog.get_environment(session, namespace, name).id)
    if status:
        query = query.where(Build.status == status)
    if readable is not None:
        query = query.where(col(Build.environment_id).in_(
            select(Environment.id).join(Namespace, col(Namespace.id) == Environment.namespace_id)
            .where(col(Namespace.name).in_(list(readable)))))
    rows = session.exec(query.order_by(col(Build.id).desc()).limit(limit + 1)).all()
    next_cursor = encode_cursor(rows[limit - 1].id or 0) if len(rows) > limit else None
    return rows[:limit], next_cursor


def diff_builds(session: Session, old_id: int, new_id: int) -> BuildDiff:
    """Packages added, removed and changed between two completed builds, per platform."""
    def packages(build_id: int) -> dict[tuple[str, str, str], str]:
        build = get_build(session, build_id)
        if build.status != BuildStatus.COMPLETED:
            raise ConflictError(f"build {build_id} is {build.status}", hint="diff needs two completed builds")
        rows = session.exec(select(BuildPackage).where(BuildPackage.build_id == build_id)).all()
        return {(r.platform, r.manager, r.name): f"{r.version} {r.build}".strip() for r in rows}

    old, new = packages(old_id), packages(new_id)

    def change(key: tuple[str, str, str]) -> PackageChange:
        return PackageChange(platform=key[0], manager=key[1], name=key[2], old=old.get(key), new=new.get(key))

    return BuildDiff(
        old_build=old_id,
        new_build=new_id,
        added=[change(k) for k in sorted(new.keys() - old.keys())],
        removed=[change(k) for k in sorted(old.keys() - new.keys())],
        changed=[change(k) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]],
    )


def environment_names(session: Session, environment_ids: set[int]) -> dict[int, tuple[str, str, int | None]]:
    """environment id -> (namespace, name, current build id)."""
    if not environment_ids:
        return {}
    rows = session.exec(
        select(Environment.id, Namespace.name, Environment.name, Environment.current_build_id)
        .join(Namespace, Namespace.id == Environment.namespace_id)
        .where(col(Environment.id).in_(environment_ids))
    ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows if row[0] is not None}


def spec_digests(session: Session, spec_ids: set[int]) -> dict[int, str]:
    rows = session.exec(select(Spec.id, Spec.sha256).where(col(Spec.id).in_(spec_ids))).all()
    return {row[0]: row[1] for row in rows if row[0] is not None}


def to_read(session: Session, builds: Sequence[Build], registry_host: str | None = None,
            reused: bool = False) -> list[BuildRead]:
    """API views of ``builds`` (two queries, whatever their number)."""
    names = environment_names(session, {b.environment_id for b in builds})
    specs = spec_digests(session, {b.spec_id for b in builds})
    views = []
    for build in builds:
        namespace, name, current = names[build.environment_id]
        error = None
        if build.error_code:
            error = BuildError(code=build.error_code, stage=build.error_stage, message=build.error_message or "",
                               hint=build.error_hint)
        reference = None
        if build.image_digest and registry_host:
            reference = f"{registry_host}/{namespace}/{name}@{build.image_digest}"
        views.append(BuildRead(
            id=build.id or 0, environment=f"{namespace}/{name}", status=build.status, platforms=build.platforms,
            options=build.options, attempt=build.attempt, spec_sha256=specs[build.spec_id],
            current=current == build.id, reused=reused, cancel_requested=build.cancel_requested, error=error,
            timestamps={key: getattr(build, key) for key in TIMESTAMPS}, image_digest=build.image_digest,
            image_reference=reference, lock_sha256=build.lock_sha256, package_count=build.package_count,
            log_lines=build.log_lines, worker=build.lease_owner, pinned=build.pinned,
            collected_at=build.collected_at,
        ))
    return views
