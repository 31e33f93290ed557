"""/api/v1/namespaces/{namespace}/registry-targets (admin) and /api/v1/builds/{build_id}/publications."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request, Response

from envyard.api.auth.principals import Action
from envyard.api.deps import SecretKeyDep, SessionDep
from envyard.api.models import Build, Namespace, Publication, RegistryTarget
from envyard.api.resources import build_for, namespace_for
from envyard.api.schemas import PublicationRead, PublishRequest, RegistryTargetCreate, RegistryTargetRead
from envyard.api.services import publish, targets

router = APIRouter(prefix="/api/v1", tags=["publishing"])
ADMIN_NAMESPACE = Depends(namespace_for(Action.ADMIN))
READ_BUILD = Depends(build_for(Action.READ))
ADMIN_BUILD = Depends(build_for(Action.ADMIN))


def _target_view(target: RegistryTarget, namespace: str) -> RegistryTargetRead:
    return RegistryTargetRead(namespace=namespace, name=target.name, url=target.url, repository=target.repository,
                              username=target.username, has_password=bool(target.secret_ciphertext),
                              tls_verify=target.tls_verify, enabled=target.enabled, created_at=target.created_at)


def _publication_view(publication: Publication, target: RegistryTarget, namespace: str) -> PublicationRead:
    return PublicationRead(
        id=publication.id or 0, build_id=publication.build_id, namespace=namespace, target=target.name,
        status=publication.status, attempt=publication.attempt, not_before=publication.not_before,
        reference=publication.reference, digest=publication.digest, uploaded_blobs=publication.uploaded_blobs,
        uploaded_bytes=publication.uploaded_bytes, mounted_blobs=publication.mounted_blobs,
        existing_blobs=publication.existing_blobs, error=publication.error_message,
        created_at=publication.created_at, finished_at=publication.finished_at,
    )


@router.post("/namespaces/{namespace}/registry-targets", status_code=201)
def create_target(body: RegistryTargetCreate, request: Request, session: SessionDep, secret_key: SecretKeyDep,
                  found: Namespace = ADMIN_NAMESPACE) -> RegistryTargetRead:
    """A registry the namespace's completed builds are pushed to; the password is stored encrypted."""
    target = targets.create_target(
        session, secret_key, found.name, name=body.name, url=body.url,
        repository=body.repository, username=body.username, password=body.password, tls_verify=body.tls_verify,
        enabled=body.enabled,
    )
    session.commit()
    return _target_view(target, found.name)


@router.get("/namespaces/{namespace}/registry-targets")
def list_targets(session: SessionDep,
                 found: Namespace = ADMIN_NAMESPACE) -> list[RegistryTargetRead]:
    return [_target_view(t, found.name) for t in targets.list_targets(session, found.name)]


@router.get("/namespaces/{namespace}/registry-targets/{name}")
def get_target(name: str, session: SessionDep,
               found: Namespace = ADMIN_NAMESPACE) -> RegistryTargetRead:
    return _target_view(targets.get_target(session, found.name, name), found.name)


@router.delete("/namespaces/{namespace}/registry-targets/{name}", status_code=204)
def delete_target(name: str, session: SessionDep,
                  found: Namespace = ADMIN_NAMESPACE) -> Response:
    """Delete the target and the record of its publications (what was pushed stays in the registry)."""
    targets.delete_target(session, found.name, name)
    session.commit()
    return Response(status_code=204)


@router.get("/builds/{build_id}/publications")
def list_publications(session: SessionDep, build: Build = READ_BUILD) -> list[PublicationRead]:
    return [_publication_view(p, t, n) for p, t, n in publish.list_publications(session, build.id or 0)]


@router.post("/builds/{build_id}/publications", status_code=202)
def publish_build(session: SessionDep, body: PublishRequest | None = Body(default=None),
                  build: Build = ADMIN_BUILD) -> list[PublicationRead]:
    """Publish (again) now, to one target or every enabled target of the build's namespace."""
    build_id = build.id or 0
    requested = {p.id for p in publish.request_publications(session, build_id, body.target if body else None)}
    session.commit()
    return [_publication_view(p, t, n) for p, t, n in publish.list_publications(session, build_id)
            if p.id in requested]
