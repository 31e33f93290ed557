"""The queries of the /v2/ endpoint: manifests by tag or digest, blobs, the tag list and referrers, each answered
only within the repository (``<namespace>/<environment>``) whose completed builds reference the content.

Tags are build ids (``:7``) and ``:latest`` (the environment's current build). A function here takes a session
and never commits (the endpoint only reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from envyard.api.distribution.references import TAG, Repository, build_id, is_digest, sha256_hex, unknown
from envyard.api.models import Build, BuildArtifact, BuildStatus, Environment, Namespace
from envyard.api.services import catalog, referrers
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import NotFoundError

__all__ = ["Manifest", "TagPage", "find_blob", "find_manifest", "list_referrers", "list_tags"]

OCI_KINDS = ("oci-index", "oci-blob")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest a reference names: its sha256 (hex), size and media type."""

    sha256: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class TagPage:
    """One page of a repository's tags; ``last`` is set when more follow (the ``last`` of the next page's URL)."""

    name: str
    tags: list[str]
    last: str | None


def _environment(session: Session, repo: Repository) -> Environment:
    """The environment a repository denotes."""
    try:
        return catalog.get_environment(session, repo.namespace, repo.environment)
    except NotFoundError:
        raise unknown("NAME_UNKNOWN", f"repository '{repo.name}' does not exist",
                      "list environments with `envyard env list`") from None


def _image_builds(session: Session, environment: Environment) -> list[Build]:
    return list(session.exec(
        select(Build).where(Build.environment_id == environment.id, Build.status == BuildStatus.COMPLETED,
                            col(Build.image_digest).is_not(None)).order_by(col(Build.id))
    ).all())


def _artifact(session: Session, environment: Environment, hexdigest: str, manifests_only: bool) -> BuildArtifact:
    query = (select(BuildArtifact).join(Build, col(Build.id) == BuildArtifact.build_id)
             .where(Build.environment_id == environment.id, Build.status == BuildStatus.COMPLETED,
                    BuildArtifact.sha256 == hexdigest, col(BuildArtifact.kind).in_(OCI_KINDS)))
    if manifests_only:
        query = query.where(col(BuildArtifact.media_type).in_(referrers.MANIFEST_TYPES))
    found = session.exec(query.limit(1)).first()
    if found is None:
        what = "MANIFEST_UNKNOWN" if manifests_only else "BLOB_UNKNOWN"
        raise unknown(what, f"{'manifest' if manifests_only else 'blob'} sha256:{hexdigest} is not in this "
                      "repository", "pull by a tag (a build id or latest) or a digest its builds reference")
    return found


def _manifest_digest(session: Session, environment: Environment, reference: str) -> str:
    if is_digest(reference):
        return sha256_hex(reference)
    if not TAG.fullmatch(reference):
        raise unknown("MANIFEST_UNKNOWN", f"'{reference}' is neither a tag nor a digest",
                      "tags are build ids or 'latest'")
    if reference == "latest":
        build = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    else:
        tagged = build_id(reference)
        build = session.get(Build, tagged) if tagged is not None else None
        if build is not None and build.environment_id != environment.id:
            build = None
    if build is None or build.status != BuildStatus.COMPLETED or not build.image_digest:
        raise unknown("MANIFEST_UNKNOWN", f"tag '{reference}' is not a completed build with an image",
                      "list the tags: GET /v2/<namespace>/<environment>/tags/list")
    return build.image_digest.removeprefix("sha256:")


def _manifest_query(by: str) -> Any:
    """One prebuilt statement: (sha256, size, media_type) of the manifest a repository's reference names, by
    ``digest`` (:hex), ``latest`` or ``build`` (:build_id); built once, so a request pays no statement
    construction, only the compiled-cache lookup and one round trip."""
    tagged = aliased(Build)
    query = (select(BuildArtifact.sha256, BuildArtifact.size, BuildArtifact.media_type)
             .select_from(Namespace).join(Environment, col(Environment.namespace_id) == Namespace.id))
    if by == "latest":
        query = query.join(tagged, col(tagged.id) == Environment.current_build_id)
    elif by == "build":
        query = query.join(tagged, (col(tagged.id) == bindparam("build_id")) & (
            col(tagged.environment_id) == Environment.id))
    query = (query.join(Build, col(Build.environment_id) == Environment.id)
             .join(BuildArtifact, col(BuildArtifact.build_id) == Build.id)
             .where(Namespace.name == bindparam("namespace"), Environment.name == bindparam("environment"),
                    Build.status == BuildStatus.COMPLETED, col(BuildArtifact.kind).in_(OCI_KINDS),
                    col(BuildArtifact.media_type).in_(referrers.MANIFEST_TYPES)))
    if by == "digest":
        query = query.where(BuildArtifact.sha256 == bindparam("hex"))
    else:
        query = query.where(tagged.status == BuildStatus.COMPLETED,
                            BuildArtifact.sha256 == func.substr(tagged.image_digest, 8))
    return query.limit(1)


_MANIFEST_QUERIES = {by: _manifest_query(by) for by in ("digest", "latest", "build")}


def _fast_manifest(session: Session, repo: Repository, reference: str) -> Manifest | None:
    """The manifest in one query; None when there is none (then the step-by-step path names the error)."""
    params: dict[str, object] = {"namespace": repo.namespace, "environment": repo.environment}
    if is_digest(reference):
        by, params["hex"] = "digest", sha256_hex(reference)
    elif reference == "latest":
        by = "latest"
    elif (tagged := build_id(reference)) is not None:
        by, params["build_id"] = "build", tagged
    else:
        return None
    row = session.execute(_MANIFEST_QUERIES[by], params).first()
    return Manifest(row[0], row[1], row[2]) if row is not None else None


def find_manifest(session: Session, repo: Repository, reference: str) -> Manifest:
    """The manifest ``reference`` (a tag or a digest) names in ``repo``: one query when it exists; otherwise the
    step-by-step lookup raises the error that names what is missing (NAME_UNKNOWN, MANIFEST_UNKNOWN, ...)."""
    found = _fast_manifest(session, repo, reference)
    if found is not None:
        return found
    environment = _environment(session, repo)
    artifact = _artifact(session, environment, _manifest_digest(session, environment, reference), True)
    return Manifest(artifact.sha256, artifact.size, artifact.media_type)


def find_blob(session: Session, repo: Repository, digest: str) -> BuildArtifact:
    """The blob (or manifest) ``digest`` names, if one of ``repo``'s completed builds references it."""
    environment = _environment(session, repo)
    return _artifact(session, environment, sha256_hex(digest), False)


def list_tags(session: Session, repo: Repository, n: int | None = None, last: str | None = None) -> TagPage:
    """Tags in lexical order: the ids of completed builds with an image, and ``latest`` when it is one of them;
    those after ``last``, at most ``n`` (``n=0`` asks for an empty list, with no next page)."""
    environment = _environment(session, repo)
    ids = [b.id for b in _image_builds(session, environment)]
    names = sorted([str(i) for i in ids] + (["latest"] if environment.current_build_id in ids else []))
    if last is not None:
        names = [t for t in names if t > last]
    more = None
    if n is not None and len(names) > n:
        names = names[:n]
        more = names[-1] if names else None
    return TagPage(repo.name, names, more)


def list_referrers(session: Session, store: ArtifactStore, repo: Repository, digest: str,
                   artifact_type: str | None) -> dict[str, Any]:
    """An image index of the manifests in ``repo`` whose subject is ``digest`` (empty when none), only those of
    ``artifact_type`` if given."""
    environment = _environment(session, repo)
    subject = f"sha256:{sha256_hex(digest)}"
    assert environment.id is not None
    return referrers.index(referrers.list_referrers(session, store, environment.id, subject, artifact_type or None))
