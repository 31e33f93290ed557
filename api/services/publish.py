"""Publishing completed builds to their namespace's registry targets (:mod:`api.services.targets`).

Completing a build queues one pending publication per enabled target of its namespace (``enabled`` governs only
that: an admin may publish any build to any target of its namespace). A publisher claims a due publication with a
conditional UPDATE (its ``attempt`` is the fencing token: a result is only recorded while the attempt that was
claimed is current), keeps a lease on it while pushing, and records the outcome, so several API replicas can
publish side by side and a crashed one's claim is taken over when its lease expires.

The image is rebuilt from the build's artifacts (the ``oci-index`` root; ``oci-blob`` configs, layers, child
manifests and SBOM referrers, whose ``subject`` is the root) and pushed by :func:`registry.push.push_image` as the
exact stored manifest bytes, so the digest in the target is the build's ``image_digest``. Tags: the build id, and
``latest`` when the build is its environment's current build at push time. Blobs the registry lacks are mounted
from the repositories of the target's earlier pushes when it holds them there, else uploaded. Connection failures,
5xx, 408 and 429 are retried with exponential backoff up to ``publish_max_attempts``; anything else (rejected
credentials above all) fails at once with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, or_, update
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.files import PRIVATE_FILE, private_dir
from envyard.api.models import (
    Build,
    BuildArtifact,
    BuildStatus,
    Environment,
    Namespace,
    Publication,
    PublicationStatus,
    RegistryTarget,
    utcnow,
)
from envyard.api.services.referrers import MANIFEST_TYPES
from envyard.api.services.targets import get_target, render_repository, target_password
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore, LocalArtifactStore
from envyard.builder.errors import ConflictError, EnvyardError, NotFoundError, RegistryError, StorageError, TargetError
from envyard.builder.oci.model import Descriptor, ManifestBlob, OciImage, sha256_digest

if TYPE_CHECKING:
    from envyard.registry.push import PushReport

log = logging.getLogger(__name__)
DOCKER_HUB = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}
CANDIDATES = 16
MOUNT_SOURCES = 3
POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    lease_seconds: float
    max_attempts: int
    backoff_seconds: float
    timeout_seconds: float = 120.0


def policy_of(settings: ServiceSettings) -> PublishPolicy:
    return PublishPolicy(lease_seconds=settings.lease_seconds, max_attempts=settings.publish_max_attempts,
                         backoff_seconds=settings.publish_backoff_seconds)


# --- publications -------------------------------------------------------------------------------------------------


def _namespace_id(session: Session, build: Build) -> int:
    environment = session.get(Environment, build.environment_id)
    assert environment is not None
    return environment.namespace_id


def enqueue_publications(session: Session, build: Build) -> list[Publication]:
    """One pending publication per enabled target of the namespace of a just-completed build with an image.
    Adds them to the session; the caller commits (with the completion)."""
    if not build.image_digest or build.id is None:
        return []
    targets = session.exec(select(RegistryTarget).where(RegistryTarget.namespace_id == _namespace_id(session, build),
                                                        col(RegistryTarget.enabled).is_(True))).all()
    added = [Publication(build_id=build.id, target_id=t.id or 0) for t in targets]
    session.add_all(added)
    return added


def request_publications(session: Session, build_id: int, target: str | None = None) -> list[Publication]:
    """Publish (again) now: the named target of the build's namespace, else every enabled one. Finished
    publications start over; pending or running ones are left as they are."""
    build = session.get(Build, build_id)
    if build is None:
        raise NotFoundError(f"build {build_id} does not exist")
    if build.status != BuildStatus.COMPLETED or not build.image_digest:
        raise ConflictError(f"build {build_id} is {build.status}" + ("" if build.image_digest else " without an image")
                            + "; only completed builds with an image are published",
                            hint="publish a completed build that was built with an image")
    namespace = session.get(Namespace, _namespace_id(session, build))
    assert namespace is not None
    if target is not None:
        targets = [get_target(session, namespace.name, target)]
    else:
        targets = list(session.exec(select(RegistryTarget).where(RegistryTarget.namespace_id == namespace.id,
                                                                 col(RegistryTarget.enabled).is_(True))).all())
    if not targets:
        raise ConflictError(f"namespace '{namespace.name}' has no enabled registry target", field="target",
                            hint=f"add one: envyard target add {namespace.name} NAME URL")
    result = []
    for item in targets:
        publication = session.exec(select(Publication).where(Publication.build_id == build_id,
                                                             Publication.target_id == item.id)).first()
        if publication is None:
            publication = Publication(build_id=build_id, target_id=item.id or 0)
            session.add(publication)
        elif publication.status in (PublicationStatus.PUSHED, PublicationStatus.FAILED):
            publication.status, publication.attempt, publication.not_before = PublicationStatus.PENDING, 0, None
            publication.error_message = publication.finished_at = publication.lease_expires_at = None
        result.append(publication)
    session.flush()
    return result


def list_publications(session: Session, build_id: int) -> list[tuple[Publication, RegistryTarget, str]]:
    """The build's publications with their target and the target's namespace name."""
    if session.get(Build, build_id) is None:
        raise NotFoundError(f"build {build_id} does not exist")
    rows = session.exec(select(Publication, RegistryTarget, Namespace.name)
                        .join(RegistryTarget, col(RegistryTarget.id) == Publication.target_id)
                        .join(Namespace, col(Namespace.id) == RegistryTarget.namespace_id)
                        .where(Publication.build_id == build_id).order_by(col(Publication.id))).all()
    return [(p, t, n) for p, t, n in rows]


def claim_publication(engine: Engine, policy: PublishPolicy, now: datetime | None = None) -> Publication | None:
    """Take the oldest due publication (pending and past its backoff, or pushing with an expired lease) or None.
    A conditional UPDATE decides between concurrent claimers on several servers; one transaction per candidate."""
    now = now or utcnow()
    due = or_(and_(col(Publication.status) == PublicationStatus.PENDING,
                   or_(col(Publication.not_before).is_(None), col(Publication.not_before) <= now)),
              and_(col(Publication.status) == PublicationStatus.PUSHING, col(Publication.lease_expires_at) < now))
    with session_scope(engine) as session:
        candidates = session.exec(select(Publication).where(due).order_by(col(Publication.id)).limit(CANDIDATES)).all()
    for candidate in candidates:
        same = update(Publication).where(col(Publication.id) == candidate.id,
                                         col(Publication.status) == candidate.status,
                                         col(Publication.attempt) == candidate.attempt)
        if candidate.status == PublicationStatus.PUSHING:
            same = same.where(col(Publication.lease_expires_at) < now)
            if candidate.attempt >= policy.max_attempts:
                with session_scope(engine) as session:
                    session.execute(same.values(
                        status=PublicationStatus.FAILED, finished_at=now, lease_expires_at=None,
                        error_message=f"the server pushing it stopped responding, {candidate.attempt} times"))
                continue
        with session_scope(engine) as session:
            won = session.execute(same.values(status=PublicationStatus.PUSHING, attempt=candidate.attempt + 1,
                                              lease_expires_at=now + timedelta(seconds=policy.lease_seconds),
                                              not_before=None))
            claimed = session.get(Publication, candidate.id) if won.rowcount else None  # type: ignore[attr-defined]
        if claimed is not None:
            return claimed
    return None


def _finish(engine: Engine, publication: Publication, **values: Any) -> bool:
    """Record a result, if the attempt that was claimed is still the publication's."""
    with session_scope(engine) as session:
        done = session.execute(update(Publication).where(col(Publication.id) == publication.id,
                                                         col(Publication.status) == PublicationStatus.PUSHING,
                                                         col(Publication.attempt) == publication.attempt)
                               .values(lease_expires_at=None, **values))
    if not done.rowcount:  # type: ignore[attr-defined]
        log.warning("publication %s: attempt %s lost its claim (lease expired, or the target was removed); "
                    "its result is dropped", publication.id, publication.attempt)
        return False
    return True


@contextlib.contextmanager
def _lease_kept(engine: Engine, publication: Publication, lease_seconds: float) -> Iterator[None]:
    """Extend the publication's lease every third of it while the push runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with session_scope(engine) as session:
                    session.execute(update(Publication).where(
                        col(Publication.id) == publication.id, col(Publication.attempt) == publication.attempt,
                        col(Publication.status) == PublicationStatus.PUSHING,
                    ).values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)))
            except Exception:  # noqa: BLE001 - a missed renewal only risks a retry elsewhere
                log.warning("publication %s: lease renewal failed", publication.id, exc_info=True)

    thread = threading.Thread(target=renew, name=f"envyard-publication-{publication.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RegistryError):
        status = exc.details.get("status")
        return "error" in exc.details if status is None else (status >= 500 or status in (408, 429))
    return isinstance(exc, StorageError) or not isinstance(exc, EnvyardError)


def _explain(exc: BaseException, target: RegistryTarget) -> str:
    status = exc.details.get("status") if isinstance(exc, RegistryError) else None
    if status in (401, 403):
        who = f"user {target.username!r}" if target.username else "no credentials (anonymous)"
        details = exc.details if isinstance(exc, RegistryError) else {}
        what = "rejected the credentials" if status == 401 else "denied the push with the credentials"
        return (f"the registry {what} of target '{target.name}' ({who}): "
                f"{details.get('method', '')} {details.get('url', '')} answered {status}; not retried "
                "(hint: remove and add the target with the right username and password or token, then "
                "`envyard build publish BUILD`)")
    return exc.one_line() if isinstance(exc, EnvyardError) else f"{type(exc).__name__}: {exc}"


def run_publication(engine: Engine, store: ArtifactStore, secret_key: bytes, publication: Publication,
                    policy: PublishPolicy, spool_dir: Path | None = None) -> Publication:
    """Push a claimed publication's build to its target and record the outcome (pushed, retry later, failed).
    No transaction stays open during the push: one per step."""
    with session_scope(engine) as session:
        target = session.get(RegistryTarget, publication.target_id)
        build = session.get(Build, publication.build_id)
    assert target is not None and build is not None
    try:
        with _lease_kept(engine, publication, policy.lease_seconds):
            report = _push(engine, store, secret_key, target, build, policy, spool_dir)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the publication
        message = _explain(exc, target)
        if not isinstance(exc, EnvyardError):
            log.exception("publication %s of build %s to target %s failed", publication.id, build.id, target.name)
        if _retryable(exc) and publication.attempt < policy.max_attempts:
            delay = policy.backoff_seconds * 2 ** max(publication.attempt - 1, 0)
            kept = _finish(engine, publication, status=PublicationStatus.PENDING,
                           not_before=utcnow() + timedelta(seconds=delay),
                           error_message=f"attempt {publication.attempt} of {policy.max_attempts} failed, "
                                         f"next in {delay:g} s: {message}")
        else:
            attempts = f"after {publication.attempt} attempts: " if _retryable(exc) else ""
            kept = _finish(engine, publication, status=PublicationStatus.FAILED, finished_at=utcnow(),
                           error_message=f"{attempts}{message}")
        log.warning("publication %s of build %s to target %s: attempt %s failed: %s", publication.id, build.id,
                    target.name, publication.attempt, message)
    else:
        kept = _finish(engine, publication, status=PublicationStatus.PUSHED, finished_at=utcnow(),
                       error_message=None, reference=report.reference, digest=report.digest,
                       uploaded_blobs=report.uploaded_blobs, uploaded_bytes=report.uploaded_bytes,
                       mounted_blobs=report.mounted_blobs, existing_blobs=report.existing_blobs)
    if kept:
        with session_scope(engine) as session:
            publication = session.get(Publication, publication.id) or publication
    return publication


def publish_due(engine: Engine, store: ArtifactStore, secret_key: bytes, policy: PublishPolicy,
                stop: threading.Event, spool_dir: Path | None = None) -> int:
    """Claim and run due publications until none is due or ``stop`` is set; how many were run."""
    count = 0
    while not stop.is_set():
        publication = claim_publication(engine, policy)
        if publication is None:
            return count
        run_publication(engine, store, secret_key, publication, policy, spool_dir)
        count += 1
    return count


# --- the push -----------------------------------------------------------------------------------------------------


class ArtifactSource:
    """Blobs of the artifact store as files for :func:`registry.push.push_image`: the stored file itself for a
    local store, else a copy spooled into a temporary directory (only for blobs the registry lacks)."""

    def __init__(self, store: ArtifactStore, spool_dir: Path | None) -> None:
        self.store = store
        self._spool_dir = spool_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        if isinstance(self.store, LocalArtifactStore):
            if self.store.stat(hexdigest) is None:
                raise NotFoundError(f"no artifact with digest {digest} in the artifact store",
                                    hint="the build's blobs were deleted; rebuild it")
            return self.store.blob_dir / hexdigest
        if self._tmp is None:
            if self._spool_dir is not None:
                private_dir(self._spool_dir)
            self._tmp = tempfile.TemporaryDirectory(prefix="envyard-publish-", dir=self._spool_dir)
        path = Path(self._tmp.name) / hexdigest
        if not path.exists():
            partial = path.with_suffix(".part")
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as handle:
                for chunk in self.store.read(hexdigest):
                    handle.write(chunk)
            partial.rename(path)
        return path

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def load_image(session: Session, store: ArtifactStore, build: Build) -> OciImage:
    """The build's image from its artifacts: the root, the manifests under it (children first) and the
    referrers whose recorded subject is the root; manifests are the exact stored bytes."""
    rows = session.exec(select(BuildArtifact).where(BuildArtifact.build_id == build.id,
                                                    col(BuildArtifact.kind).in_(("oci-index", "oci-blob")))).all()
    roots = [r for r in rows if r.kind == "oci-index"]
    if not roots:
        raise NotFoundError(f"build {build.id} has no image artifacts", hint="rebuild with an image")
    manifests = {f"sha256:{r.sha256}": r for r in rows if r.media_type in MANIFEST_TYPES}

    def read(row: BuildArtifact) -> ManifestBlob:
        data = b"".join(store.read(row.sha256))
        if sha256_digest(data) != f"sha256:{row.sha256}":
            raise StorageError(f"stored manifest sha256:{row.sha256} of build {build.id} does not match its digest",
                               hint="the artifact store copy is corrupt; rebuild")
        return ManifestBlob(Descriptor(row.media_type, f"sha256:{row.sha256}", len(data)), data)

    root = read(roots[0])
    ordered: dict[str, ManifestBlob] = {}

    def walk(manifest: ManifestBlob) -> None:
        for child in manifest.children() if manifest.is_index else []:
            if child.media_type in MANIFEST_TYPES and child.digest not in ordered:
                if child.digest not in manifests:
                    raise NotFoundError(f"build {build.id} lacks manifest {child.digest} of its image")
                found = read(manifests[child.digest])
                walk(found)
                ordered[child.digest] = found

    walk(root)
    referrers = [read(row) for row in manifests.values()  # subjects were recorded when the build completed
                 if row.subject == root.descriptor.digest and row.kind == "oci-blob"]
    return OciImage(root, (*ordered.values(), root), tuple(referrers))


def _mount_sources(session: Session, target: RegistryTarget, namespace: str, repository: str) -> list[str]:
    """Repositories the target's latest pushes went to (other than ``repository``), most recent first."""
    rows = session.exec(select(Environment.name).join(Build, col(Build.environment_id) == Environment.id)
                        .join(Publication, col(Publication.build_id) == Build.id)
                        .where(Publication.target_id == target.id, Publication.status == PublicationStatus.PUSHED)
                        .order_by(col(Publication.finished_at).desc()).limit(50)).all()
    sources: list[str] = []
    for name in rows:
        with contextlib.suppress(TargetError):
            rendered = render_repository(target.repository, namespace, name)
            if rendered != repository and rendered not in sources:
                sources.append(rendered)
    return sources[:MOUNT_SOURCES]


def _push(engine: Engine, store: ArtifactStore, secret_key: bytes, target: RegistryTarget, build: Build,
          policy: PublishPolicy, spool_dir: Path | None) -> PushReport:
    from envyard.registry.client import RegistryClient
    from envyard.registry.push import push_image
    from envyard.registry.reference import ImageReference

    with session_scope(engine) as session:
        environment = session.get(Environment, build.environment_id)
        assert environment is not None
        namespace = session.get(Namespace, environment.namespace_id)
        assert namespace is not None
        repository = render_repository(target.repository, namespace.name, environment.name)
        image = load_image(session, store, build)
        if image.digest != build.image_digest:
            raise ConflictError(f"the stored image root of build {build.id} is {image.digest}, not the build's "
                                f"{build.image_digest}", hint="the build's artifacts are inconsistent; rebuild")
        password = target_password(target, secret_key)
        mount_from = _mount_sources(session, target, namespace.name, repository)
    scheme, _, host = target.url.partition("://")  # no transaction stays open during the push
    host = DOCKER_HUB.get(host, host)
    source = ArtifactSource(store, spool_dir)
    client = RegistryClient(host, plain_http=scheme == "http", username=target.username if password else None,
                            password=password, verify_tls=target.tls_verify, timeout=policy.timeout_seconds)
    try:
        reference = ImageReference(registry=host, repository=repository, tag=str(build.id))
        report = push_image(image, source, reference, client, mount_from=mount_from)
        with session_scope(engine) as session:
            current = session.exec(select(Environment.current_build_id)
                                   .where(Environment.id == environment.id)).first()
        if current == build.id:  # asked after the push: a build that became current meanwhile keeps latest
            client.push_manifest(repository, "latest", image.root)
    finally:
        client.close()
        source.close()
    return report
