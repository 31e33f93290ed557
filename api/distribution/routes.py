"""The routes of ``/v2/``: the token endpoint, the ping, manifests, blobs, tags and referrers.

Each route validates its parameters, authorizes through a dependency (:func:`envyard.api.distribution.access.
repository` for repository routes) and calls one function of :mod:`envyard.api.distribution.service`; errors
are raised and rendered in the distribution spec's error body by :mod:`envyard.api.problems`. With
``ENVYARD_REGISTRY_BLOB_REDIRECT`` a blob GET answers 307 to a presigned store URL (S3); HEAD and stores without
presigned URLs are answered directly, streamed.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine

from envyard.api.auth import Action, Principal
from envyard.api.deps import (
    CurrentPrincipal,
    EngineDep,
    Reader,
    SecretKeyDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    authorize,
)
from envyard.api.distribution.access import granted, issue_token, repository
from envyard.api.distribution.references import Repository, byte_range, requested_pulls
from envyard.api.distribution.service import find_blob, find_manifest, list_referrers, list_tags
from envyard.api.problems import REGISTRY_HEADERS
from envyard.api.schemas import RegistryToken
from envyard.api.services.usage import count_download
from envyard.builder.oci.model import MEDIA_TYPE_INDEX

__all__ = ["REDIRECT_SECONDS", "router"]

router = APIRouter(prefix="/v2", tags=["registry"])
TOKEN = Depends(authorize(Action.READ, anonymous=True))
PULL = Depends(repository)
REDIRECT_SECONDS = 900


@router.get("/token")
def token(request: Request, secret_key: SecretKeyDep,
          scope: list[str] = Query(default=[], description="repository:NAMESPACE/ENV:pull"),
          service: str | None = Query(default=None, description="envyard"),
          principal: Principal = TOKEN) -> RegistryToken:
    """A registry token for the repositories of ``scope`` the caller may pull."""
    return issue_token(secret_key, principal,
                       granted(request, principal, requested_pulls(scope)))


@router.get("/")
def base(_: Reader) -> Response:
    return Response("{}", media_type="application/json", headers=REGISTRY_HEADERS)


@router.api_route("/{name:path}/manifests/{reference}", methods=["GET", "HEAD"], response_class=Response)
def manifest(reference: str, request: Request, session: SessionDep, engine: EngineDep, store: StoreDep,
             principal: CurrentPrincipal, repo: Repository = PULL) -> Response:
    found = find_manifest(session, repo, reference)
    if request.method == "GET":
        _count(engine, "manifest", repo, principal, found.size)
    headers = {**REGISTRY_HEADERS, "Docker-Content-Digest": f"sha256:{found.sha256}",
               "Content-Length": str(found.size), "ETag": f'"sha256:{found.sha256}"'}
    if request.method == "HEAD":
        return Response(status_code=200, media_type=found.media_type, headers=headers)
    return Response(b"".join(store.read(found.sha256)), media_type=found.media_type, headers=headers)


@router.api_route("/{name:path}/blobs/{digest}", methods=["GET", "HEAD"], response_class=Response)
def blob(digest: str, request: Request, session: SessionDep, engine: EngineDep, store: StoreDep, settings: SettingsDep,
         principal: CurrentPrincipal, range_header: str = Header(default="", alias="range"),
         repo: Repository = PULL) -> Response:
    artifact = find_blob(session, repo, digest)
    if request.method == "GET":
        _count(engine, "blob", repo, principal, artifact.size)
    headers = {**REGISTRY_HEADERS, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    if request.method == "GET" and settings.registry_blob_redirect:
        url = store.presigned_get(artifact.sha256, REDIRECT_SECONDS)
        if url is not None:
            return Response(status_code=307, headers={**headers, "Location": url})
    wanted = byte_range(range_header, artifact.size)  # a RangeError is a 416 with Content-Range
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


def _count(engine: Engine, kind: str, repo: Repository, principal: Principal, size: int) -> None:
    """One usage row per GET (``/api/v1/usage``, ``/metrics``)."""
    count_download(engine, kind, repo.namespace, repo.environment, None if principal.anonymous else principal.name,
                   size)


@router.get("/{name:path}/tags/list")
def tags(request: Request, session: SessionDep, n: int | None = Query(default=None, ge=0), last: str | None = None,
         repo: Repository = PULL) -> Response:
    """Tags in lexical order: the ids of completed builds with an image, and ``latest`` when it is one of them."""
    page = list_tags(session, repo, n, last)
    headers = dict(REGISTRY_HEADERS)
    if page.last is not None:
        headers["Link"] = f'</v2/{page.name}/tags/list?n={n}&last={page.last}>; rel="next"'
    return Response(json.dumps({"name": page.name, "tags": page.tags}), media_type="application/json",
                    headers=headers)


@router.get("/{name:path}/referrers/{digest}")
def referrers_list(digest: str, session: SessionDep, store: StoreDep,
                   artifact_type: str | None = Query(default=None, alias="artifactType"),
                   repo: Repository = PULL) -> Response:
    """An image index of the manifests in this repository whose subject is ``digest`` (empty when none)."""
    index = list_referrers(session, store, repo, digest, artifact_type)
    headers = {**REGISTRY_HEADERS, "OCI-Filters-Applied": "artifactType"} if artifact_type else dict(REGISTRY_HEADERS)
    return Response(json.dumps(index), media_type=MEDIA_TYPE_INDEX, headers=headers)
