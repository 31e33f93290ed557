"""The OCI distribution endpoint (pull side) over the artifact store: ``/v2/<namespace>/<environment>/...``.

Tags are build ids (``:7``) and ``:latest`` (the environment's current build); manifests and blobs are
served by digest, only within the repository whose builds reference them. A tag is a build id only when spelled
in canonical ASCII digits (:func:`api.ids.parse_id`: not ``02``, ``²`` or ``２``). Same tokens and the same
authorization decision as the API (:func:`api.auth.check`, through the :func:`repository` dependency): an
envyard token as Bearer or as a Basic password, or a registry token from the Docker bearer-token flow
(:mod:`registry.token_auth`); reading needs the viewer role on the namespace, unless an admin made it public.
Callers without it get DENIED whether or not the repository exists, anonymous ones a 401 challenge.

The referrers API lists the manifests of the repository's completed builds whose ``subject`` is a digest
(recorded at completion by :mod:`api.services.referrers`). Content is addressed by sha256 only: a malformed
digest is 400 ``DIGEST_INVALID``, a well-formed digest of another algorithm (sha512) 400 ``UNSUPPORTED``.
With ``ENVYARD_REGISTRY_BLOB_REDIRECT`` a blob GET answers 307 to a presigned store URL (S3); HEAD and
stores without presigned URLs are answered directly, streamed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import bindparam, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from envyard.api.auth import Action, Principal, check
from envyard.api.deps import authorize, current_principal, get_session, get_settings, get_store
from envyard.api.ids import parse_id
from envyard.api.models import Build, BuildArtifact, BuildStatus, Environment, Namespace
from envyard.api.problems import oci_error_response
from envyard.api.services import catalog, referrers
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import EnvyardError, NotFoundError, PermissionDeniedError
from envyard.builder.oci.model import MEDIA_TYPE_INDEX

router = APIRouter(prefix="/v2", tags=["registry"])
READ = Depends(authorize(Action.READ))
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
NAME = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha384": re.compile(r"[a-f0-9]{96}"),
           "sha512": re.compile(r"[a-f0-9]{128}")}
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
REDIRECT_SECONDS = 900


class RangeError(EnvyardError):
    code = "range-invalid"
    title = "Range not satisfiable"
    status = 416


class DigestError(EnvyardError):
    code = "digest-invalid"
    title = "Invalid digest"
    status = 400


def _unknown(what: str, message: str, hint: str) -> NotFoundError:
    return NotFoundError(message, hint=hint, details={"oci": what})


def _sha256(digest: str) -> str:
    """The hex of a sha256 digest; DigestError (DIGEST_INVALID, or UNSUPPORTED for other algorithms) otherwise."""
    algorithm, _, encoded = digest.partition(":")
    pattern = ENCODED.get(algorithm)
    if not DIGEST.fullmatch(digest) or (pattern is not None and not pattern.fullmatch(encoded)):
        raise DigestError(f"'{digest}' is not a valid digest", hint="digests are sha256:<64 lowercase hex digits>",
                          details={"oci": "DIGEST_INVALID"})
    if algorithm != "sha256":
        raise DigestError(f"'{algorithm}' digests are not supported: envyard addresses content by sha256 only",
                          hint="ask for the content by its sha256 digest", details={"oci": "UNSUPPORTED"})
    return encoded


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository name as the grammar allows it: ``<namespace>/<environment>``."""

    name: str
    namespace: str
    environment: str


def _repository(name: str) -> Repository:
    """The repository ``name`` denotes, validated by the name grammar before any lookup."""
    namespace, _, env_name = name.partition("/")
    if not NAME.fullmatch(name) or "/" in env_name or not env_name:
        raise _unknown("NAME_INVALID", f"'{name}' is not a repository envyard serves",
                       "repositories are <namespace>/<environment> in lower case")
    return Repository(name, namespace, env_name)


def repository(request: Request, name: str, principal: Principal = Depends(current_principal)) -> Repository:
    """The dependency of every repository route: the parsed repository, if the caller may pull it. Callers who
    may not read its namespace get DENIED whether or not it exists (anonymous ones a 401 challenge)."""
    found = _repository(name)

    def denied() -> PermissionDeniedError:
        return PermissionDeniedError(f"token '{principal.name}' may not pull '{found.name}'",
                                     hint="ask an admin for a grant: envyard namespace grant NAMESPACE TOKEN_ID",
                                     details={"oci": "DENIED"})

    check(request, principal, Action.READ, frozenset({found.namespace}), hidden=denied, repository=found.name)
    return found


PULL = Depends(repository)


def _build_id(reference: str) -> int | None:
    """The build id a tag names: canonical ASCII decimal digits within the id column (not ``02``, ``²``, ``２``)."""
    return parse_id(reference)


def _environment(session: Session, repo: Repository) -> Environment:
    """The environment a repository denotes."""
    try:
        return catalog.get_environment(session, repo.namespace, repo.environment)
    except NotFoundError:
        raise _unknown("NAME_UNKNOWN", f"repository '{repo.name}' does not exist",
                       "list environments with `envyard env list`") from None


def _image_builds(session: Session, environment: Environment) -> list[Build]:
    return list(session.exec(
        select(Build).where(Build.environment_id == environment.id, Build.status == BuildStatus.COMPLETED,
                            col(Build.image_digest).is_not(None)).order_by(col(Build.id))
    ).all())


def _artifact(session: Session, environment: Environment, hexdigest: str, manifests_only: bool) -> BuildArtifact:
    query = (select(BuildArtifact).join(Build, col(Build.id) == BuildArtifact.build_id)
             .where(Build.environment_id == environment.id, Build.status == BuildStatus.COMPLETED,
                    BuildArtifact.sha256 == hexdigest, col(BuildArtifact.kind).in_(("oci-index", "oci-blob"))))
    if manifests_only:
        query = query.where(col(BuildArtifact.media_type).in_(referrers.MANIFEST_TYPES))
    found = session.exec(query.limit(1)).first()
    if found is None:
        what = "MANIFEST_UNKNOWN" if manifests_only else "BLOB_UNKNOWN"
        raise _unknown(what, f"{'manifest' if manifests_only else 'blob'} sha256:{hexdigest} is not in this "
                       "repository", "pull by a tag (a build id or latest) or a digest its builds reference")
    return found


def _manifest_digest(session: Session, environment: Environment, reference: str) -> str:
    if ":" in reference:  # tags have no colon: a digest
        return _sha256(reference)
    if not TAG.fullmatch(reference):
        raise _unknown("MANIFEST_UNKNOWN", f"'{reference}' is neither a tag nor a digest",
                       "tags are build ids or 'latest'")
    if reference == "latest":
        build = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    else:
        build_id = _build_id(reference)
        build = session.get(Build, build_id) if build_id is not None else None
        if build is not None and build.environment_id != environment.id:
            build = None
    if build is None or build.status != BuildStatus.COMPLETED or not build.image_digest:
        raise _unknown("MANIFEST_UNKNOWN", f"tag '{reference}' is not a completed build with an image",
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
                    Build.status == BuildStatus.COMPLETED, col(BuildArtifact.kind).in_(("oci-index", "oci-blob")),
                    col(BuildArtifact.media_type).in_(referrers.MANIFEST_TYPES)))
    if by == "digest":
        query = query.where(BuildArtifact.sha256 == bindparam("hex"))
    else:
        query = query.where(tagged.status == BuildStatus.COMPLETED,
                            BuildArtifact.sha256 == func.substr(tagged.image_digest, 8))
    return query.limit(1)


_MANIFEST_QUERIES = {by: _manifest_query(by) for by in ("digest", "latest", "build")}


def _fast_manifest(session: Session, repo: Repository, reference: str) -> tuple[str, int, str] | None:
    """The manifest in one query; None when there is none (then the step-by-step path names the error)."""
    params: dict[str, object] = {"namespace": repo.namespace, "environment": repo.environment}
    if ":" in reference:
        by, params["hex"] = "digest", _sha256(reference)
    elif reference == "latest":
        by = "latest"
    elif (build_id := _build_id(reference)) is not None:
        by, params["build_id"] = "build", build_id
    else:
        return None
    row = session.execute(_MANIFEST_QUERIES[by], params).first()
    return (row[0], row[1], row[2]) if row is not None else None


@router.get("/")
def base(_: Principal = READ) -> Response:
    return Response("{}", media_type="application/json", headers=HEADERS)


@router.api_route("/{name:path}/manifests/{reference}", methods=["GET", "HEAD"], response_class=Response)
def manifest(reference: str, request: Request, session: Session = Depends(get_session),
             store: ArtifactStore = Depends(get_store), repo: Repository = PULL) -> Response:
    found = _fast_manifest(session, repo, reference)
    if found is None:
        environment = _environment(session, repo)
        artifact = _artifact(session, environment, _manifest_digest(session, environment, reference), True)
        found = (artifact.sha256, artifact.size, artifact.media_type)
    sha256, size, media_type = found
    headers = {**HEADERS, "Docker-Content-Digest": f"sha256:{sha256}", "Content-Length": str(size),
               "ETag": f'"sha256:{sha256}"'}
    if request.method == "HEAD":
        return Response(status_code=200, media_type=media_type, headers=headers)
    return Response(b"".join(store.read(sha256)), media_type=media_type, headers=headers)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``bytes=a-b`` range; None for the whole blob: no header, another unit or
    several ranges (a server must ignore units it does not know and may ignore any Range, RFC 9110 14.2)."""
    header = header.strip()
    if not header.lower().startswith("bytes=") or "," in header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header, re.IGNORECASE)
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeError(f"Range '{header}' is not one bytes=START-END range", details={"oci": "RANGE_INVALID"})
    if match.group(1) == "":
        suffix = min(int(match.group(2)), size)
        if suffix == 0:
            raise RangeError(f"Range '{header}' selects no bytes of the blob's {size}",
                             details={"oci": "RANGE_INVALID"})
        return size - suffix, suffix
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    if start >= size or end < start:
        raise RangeError(f"Range '{header}' is outside the blob's {size} bytes", details={"oci": "RANGE_INVALID"})
    return start, end - start + 1


@router.api_route("/{name:path}/blobs/{digest}", methods=["GET", "HEAD"], response_class=Response)
def blob(digest: str, request: Request, range_header: str = Header(default="", alias="range"),
         session: Session = Depends(get_session), store: ArtifactStore = Depends(get_store),
         settings: ServiceSettings = Depends(get_settings), repo: Repository = PULL) -> Response:
    environment = _environment(session, repo)
    artifact = _artifact(session, environment, _sha256(digest), False)
    headers = {**HEADERS, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    if request.method == "GET" and settings.registry_blob_redirect:
        url = store.presigned_get(artifact.sha256, REDIRECT_SECONDS)
        if url is not None:
            return Response(status_code=307, headers={**headers, "Location": url})
    try:
        wanted = _byte_range(range_header, artifact.size)
    except RangeError as exc:
        refused = oci_error_response(exc)
        refused.headers["Content-Range"] = f"bytes */{artifact.size}"
        return refused
    if wanted is None:
        headers["Content-Length"] = str(artifact.size)
        if request.method == "HEAD":
            return Response(status_code=200, media_type=artifact.media_type, headers=headers)
        return StreamingResponse(store.read(artifact.sha256), media_type=artifact.media_type, headers=headers)
    start, length = wanted
    headers["Content-Length"] = str(length)
    headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{artifact.size}"
    if request.method == "HEAD":
        return Response(status_code=206, media_type=artifact.media_type, headers=headers)
    return StreamingResponse(store.read(artifact.sha256, start, length), status_code=206,
                             media_type=artifact.media_type, headers=headers)


@router.get("/{name:path}/tags/list")
def tags(request: Request, n: int | None = Query(default=None, ge=0), last: str | None = None,
         session: Session = Depends(get_session), repo: Repository = PULL) -> Response:
    """Tags in lexical order: the ids of completed builds with an image, and ``latest`` when it is one of them."""
    name = repo.name
    environment = _environment(session, repo)
    ids = [b.id for b in _image_builds(session, environment)]
    names = sorted([str(i) for i in ids] + (["latest"] if environment.current_build_id in ids else []))
    if last is not None:
        names = [t for t in names if t > last]
    headers = dict(HEADERS)
    if n is not None and len(names) > n:
        names = names[:n]
        if names:  # n=0 asks for an empty list and no Link
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={names[-1]}>; rel="next"'
    return Response(json.dumps({"name": name, "tags": names}), media_type="application/json", headers=headers)


@router.get("/{name:path}/referrers/{digest}")
def referrers_list(digest: str, artifact_type: str | None = Query(default=None, alias="artifactType"),
                   session: Session = Depends(get_session), store: ArtifactStore = Depends(get_store),
                   repo: Repository = PULL) -> Response:
    """An image index of the manifests in this repository whose subject is ``digest`` (empty when none)."""
    environment = _environment(session, repo)
    subject = f"sha256:{_sha256(digest)}"
    assert environment.id is not None
    found = referrers.list_referrers(session, store, environment.id, subject, artifact_type or None)
    headers = {**HEADERS, "OCI-Filters-Applied": "artifactType"} if artifact_type else dict(HEADERS)
    return Response(json.dumps(referrers.index(found)), media_type=MEDIA_TYPE_INDEX, headers=headers)
