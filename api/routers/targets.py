"""/api/v1/namespaces/{namespace}/registry-targets (admin) and /api/v1/builds/{build_id}/publications."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlmodel import Session

from api.auth import Action, Principal, authorize
from api.deps import get_session
from api.models import Publication, RegistryTarget
from api.schemas import PublicationRead, PublishRequest, RegistryTargetCreate, RegistryTargetRead
from api.services import publish, targets

router = APIRouter(prefix="/api/v1", tags=["publishing"])
READ = Depends(authorize(Action.READ))
ADMIN = Depends(authorize(Action.ADMIN))


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
def create_target(namespace: str, body: RegistryTargetCreate, request: Request,
                  session: Session = Depends(get_session), _: Principal = ADMIN) -> RegistryTargetRead:
    """A registry the namespace's completed builds are pushed to; the password is stored encrypted."""
    target = targets.create_target(
        session, request.app.state.secret_key, namespace, name=body.name, url=body.url,
        repository=body.repository, username=body.username, password=body.password, tls_verify=body.tls_verify,
        enabled=body.enabled,
    )
    session.commit()
    return _target_view(target, namespace)


@router.get("/namespaces/{namespace}/registry-targets")
def list_targets(namespace: str, session: Session = Depends(get_session),
                 _: Principal = ADMIN) -> list[RegistryTargetRead]:
    return [_target_view(t, namespace) for t in targets.list_targets(session, namespace)]


@router.get("/namespaces/{namespace}/registry-targets/{name}")
def get_target(namespace: str, name: str, session: Session = Depends(get_session),
               _: Principal = ADMIN) -> RegistryTargetRead:
    return _target_view(targets.get_target(session, namespace, name), namespace)


@router.delete("/namespaces/{namespace}/registry-targets/{name}", status_code=204)
def delete_target(namespace: str, name: str, session: Session = Depends(get_session),
                  _: Principal = ADMIN) -> Response:
    """Delete the target and the record of its publications (what was pushed stays in the registry)."""
    targets.delete_target(session, namespace, name)
    session.commit()
    return Response(status_code=204)


@router.get("/builds/{build_id}/publications")
def list_publications(build_id: int, session: Session = Depends(get_session),
                      _: Principal = READ) -> list[PublicationRead]:
    return [_publication_view(p, t, n) for p, t, n in publish.list_publications(session, build_id)]


@router.post("/builds/{build_id}/publications", status_code=202)
def publish_build(build_id: int, body: PublishRequest | None = Body(default=None),
                  session: Session = Depends(get_session), _: Principal = ADMIN) -> list[PublicationRead]:
    """Publish (again) now, to one target or every enabled target of the build's namespace."""
    requested = {p.id for p in publish.request_publications(session, build_id, body.target if body else None)}
    session.commit()
    return [_publication_view(p, t, n) for p, t, n in publish.list_publications(session, build_id)
            if p.id in requested]
