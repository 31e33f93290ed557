"""The OCI distribution endpoint (pull side) over the artifact store: ``/v2/<namespace>/<environment>/...``.

Tags are build ids (``:7``) and ``:latest`` (the environment's current build); manifests and blobs are
served by digest, only within the repository whose builds reference them. Same tokens as the API
(registry clients send them as the Basic-auth password), same authorization dependency.
"""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from api.auth import Action, Principal, authorize
from api.deps import get_session, get_store
from api.models import Build, BuildArtifact, BuildStatus, Environment
from api.services import catalog
from api.storage import ArtifactStore
from builder.errors import EnvyardError, NotFoundError
from builder.oci.model import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES

router = APIRouter(prefix="/v2", tags=["registry"])
READ = Depends(authorize(Action.READ))
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
NAME = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
MANIFEST_TYPES = (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES)
HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


class RangeError(EnvyardError):
    code = "range-invalid"
    title = "Range not satisfiable"
    status = 416


def _unknown(what: str, message: str, hint: str) -> NotFoundError:
    return NotFoundError(message, hint=hint, details={"oci": what})


def _environment(session: Session, name: str) -> Environment:
    """The environment a repository name denotes (``namespace/environment``), validated before any lookup."""
    namespace, _, env_name = name.partition("/")
    if not NAME.match(name) or "/" in env_name or not env_name:
        raise _unknown("NAME_INVALID", f"'{name}' is not a repository envyard serves",
                       "repositories are <namespace>/<environment> in lower case")
    try:
        return catalog.get_environment(session, namespace, env_name)
    except NotFoundError:
        raise _unknown("NAME_UNKNOWN", f"repository '{name}' does not exist",
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
        query = query.where(col(BuildArtifact.media_type).in_(MANIFEST_TYPES))
    found = session.exec(query.limit(1)).first()
    if found is None:
        what = "MANIFEST_UNKNOWN" if manifests_only else "BLOB_UNKNOWN"
        raise _unknown(what, f"{'manifest' if manifests_only else 'blob'} sha256:{hexdigest} is not in this "
                       "repository", "pull by a tag (a build id or latest) or a digest its builds reference")
    return found


def _manifest_digest(session: Session, environment: Environment, reference: str) -> str:
    if DIGEST.match(reference):
        return reference[7:]
    if not TAG.match(reference):
        raise _unknown("MANIFEST_INVALID", f"'{reference}' is neither a tag nor a sha256 digest",
                       "tags are build ids or 'latest'")
    if reference == "latest":
        build = session.get(Build, environment.current_build_id) if environment.current_build_id else None
    else:
        build = session.get(Build, int(reference)) if reference.isdigit() else None
        if build is not None and build.environment_id != environment.id:
            build = None
    if build is None or build.status != BuildStatus.COMPLETED or not build.image_digest:
        raise _unknown("MANIFEST_UNKNOWN", f"tag '{reference}' is not a completed build with an image",
                       "list the tags: GET /v2/<namespace>/<environment>/tags/list")
    return build.image_digest.removeprefix("sha256:")


@router.get("/")
def base(_: Principal = READ) -> Response:
    return Response("{}", media_type="application/json", headers=HEADERS)


@router.api_route("/{name:path}/manifests/{reference}", methods=["GET", "HEAD"], response_class=Response)
def manifest(name: str, reference: str, request: Request, session: Session = Depends(get_session),
             store: ArtifactStore = Depends(get_store), _: Principal = READ) -> Response:
    environment = _environment(session, name)
    artifact = _artifact(session, environment, _manifest_digest(session, environment, reference), True)
    headers = {**HEADERS, "Docker-Content-Digest": f"sha256:{artifact.sha256}", "Content-Length": str(artifact.size),
               "ETag": f'"sha256:{artifact.sha256}"'}
    if request.method == "HEAD":
        return Response(status_code=200, media_type=artifact.media_type, headers=headers)
    body = b"".join(store.read(artifact.sha256))
    return Response(body, media_type=artifact.media_type, headers=headers)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``bytes=a-b`` range; None for no header."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeError(f"Range '{header}' is not one bytes=START-END range", details={"oci": "RANGE_INVALID"})
    if match.group(1) == "":
        suffix = min(int(match.group(2)), size)
        return size - suffix, suffix
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    if start >= size or end < start:
        raise RangeError(f"Range '{header}' is outside the blob's {size} bytes", details={"oci": "RANGE_INVALID"})
    return start, end - start + 1


@router.api_route("/{name:path}/blobs/{digest}", methods=["GET", "HEAD"], response_class=Response)
def blob(name: str, digest: str, request: Request, range_header: str = Header(default="", alias="range"),
         session: Session = Depends(get_session), store: ArtifactStore = Depends(get_store),
         _: Principal = READ) -> Response:
    environment = _environment(session, name)
    if not DIGEST.match(digest):
        raise _unknown("DIGEST_INVALID", f"'{digest}' is not a sha256 digest", "digests are sha256:<64 hex>")
    artifact = _artifact(session, environment, digest[7:], False)
    headers = {**HEADERS, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    wanted = _byte_range(range_header, artifact.size)
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
def tags(name: str, request: Request, n: int | None = Query(default=None, ge=0), last: str | None = None,
         session: Session = Depends(get_session), _: Principal = READ) -> Response:
    """Tags in lexical order: the ids of completed builds with an image, and ``latest``."""
    environment = _environment(session, name)
    builds = _image_builds(session, environment)
    names = sorted([str(b.id) for b in builds] + (["latest"] if environment.current_build_id else []))
    if last is not None:
        names = [t for t in names if t > last]
    headers = dict(HEADERS)
    if n is not None and len(names) > n:
        names = names[:n]
        headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={names[-1] if names else ""}>; rel="next"'
    return Response(json.dumps({"name": name, "tags": names}), media_type="application/json", headers=headers)
