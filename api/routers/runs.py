"""/api/v1/namespaces/{namespace}/secrets, /data-snapshots and /manifests: what reproducible runs are made of.

Secrets are set, listed (names and dates only) and deleted by the namespace's editors; their values never leave
the server. Data snapshots and run manifests are immutable: created by editors, read by viewers.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from envyard.api.auth.principals import Action
from envyard.api.deps import CurrentPrincipal, EngineDep, SecretKeyDep, SessionDep, SettingsDep, StoreDep
from envyard.api.models import DataSnapshotRecord, Namespace, NamespaceSecret, RunManifestRecord
from envyard.api.resources import manifest_for, namespace_for, snapshot_for
from envyard.api.run_schemas import (
    MANIFEST_MEDIA_TYPE,
    DataSnapshotCreate,
    DataSnapshotRead,
    ManifestCreate,
    ManifestRead,
    SecretRead,
    SecretSet,
)
from envyard.api.services import manifests, secrets, snapshots
from envyard.builder.url_policy import UrlPolicy

router = APIRouter(prefix="/api/v1", tags=["runs"])
READ_NAMESPACE = Depends(namespace_for(Action.READ))
WRITE_NAMESPACE = Depends(namespace_for(Action.WRITE))
READ_SNAPSHOT = Depends(snapshot_for(Action.READ))
READ_MANIFEST = Depends(manifest_for(Action.READ))


def _secret_view(row: NamespaceSecret, namespace: str) -> SecretRead:
    return SecretRead(namespace=namespace, name=row.name, created_at=row.created_at, updated_at=row.updated_at)


def _snapshot_view(row: DataSnapshotRecord, namespace: str) -> DataSnapshotRead:
    return DataSnapshotRead(id=row.id or 0, namespace=namespace, repo=row.repo, rev=row.rev, commit=row.commit,
                            remote=row.remote, snapshot=row.document, created_by=row.created_by,
                            created_at=row.created_at)


def _manifest_view(row: RunManifestRecord, namespace: str) -> ManifestRead:
    return ManifestRead(namespace=namespace, digest=f"sha256:{row.sha256}", build_id=row.build_id, size=row.size,
                        referrer=f"sha256:{row.referrer_sha256}" if row.referrer_sha256 else None,
                        created_by=row.created_by, created_at=row.created_at)


# --- secrets ---------------------------------------------------------------------------------------------------------


@router.put("/namespaces/{namespace}/secrets/{name}")
def set_secret(name: str, body: SecretSet, session: SessionDep, secret_key: SecretKeyDep,
               found: Namespace = WRITE_NAMESPACE) -> SecretRead:
    """Create or replace a secret (stored encrypted; the value is never returned)."""
    row, _ = secrets.set_secret(session, secret_key, found.name, name, body.value)
    session.commit()
    return _secret_view(row, found.name)


@router.get("/namespaces/{namespace}/secrets")
def list_secrets(session: SessionDep, found: Namespace = WRITE_NAMESPACE) -> list[SecretRead]:
    """The namespace's secrets: names and dates, never values."""
    return [_secret_view(row, found.name) for row in secrets.list_secrets(session, found.name)]


@router.delete("/namespaces/{namespace}/secrets/{name}", status_code=204)
def delete_secret(name: str, session: SessionDep, found: Namespace = WRITE_NAMESPACE) -> Response:
    secrets.delete_secret(session, found.name, name)
    session.commit()
    return Response(status_code=204)


# --- data snapshots --------------------------------------------------------------------------------------------------


@router.post("/namespaces/{namespace}/data-snapshots", status_code=201)
def create_snapshot(body: DataSnapshotCreate, engine: EngineDep, settings: SettingsDep, secret_key: SecretKeyDep,
                    principal: CurrentPrincipal, found: Namespace = WRITE_NAMESPACE) -> DataSnapshotRead:
    """Resolve DVC-tracked paths of a git repository at a revision (pinned to its commit) and store the snapshot."""
    row = snapshots.create_snapshot(
        engine, UrlPolicy.from_settings(settings), secret_key, found.name, repo=body.repo, rev=body.rev,
        paths=body.paths, remote=body.remote, remote_secret=body.remote_secret, created_by=principal.name,
        timeout_seconds=settings.snapshot_timeout_seconds)
    return _snapshot_view(row, found.name)


@router.get("/namespaces/{namespace}/data-snapshots")
def list_snapshots(session: SessionDep, found: Namespace = READ_NAMESPACE) -> list[DataSnapshotRead]:
    return [_snapshot_view(row, found.name) for row in snapshots.list_snapshots(session, found.name)]


@router.get("/namespaces/{namespace}/data-snapshots/{snapshot_id}")
def get_snapshot(namespace: str, snapshot: DataSnapshotRecord = READ_SNAPSHOT) -> DataSnapshotRead:
    return _snapshot_view(snapshot, namespace)


# --- run manifests ---------------------------------------------------------------------------------------------------


@router.post("/namespaces/{namespace}/manifests", status_code=201)
def create_manifest(body: ManifestCreate, request: Request, engine: EngineDep, store: StoreDep,
                    principal: CurrentPrincipal, found: Namespace = WRITE_NAMESPACE) -> ManifestRead:
    """Store a run manifest (made from a build and snapshots, or given whole) by digest, and attach it to the
    build's image as an OCI referrer."""
    row = manifests.create_manifest(engine, store, principal, found, body, registry_host=request.url.netloc)
    return _manifest_view(row, found.name)


@router.get("/namespaces/{namespace}/manifests")
def list_manifests(session: SessionDep, found: Namespace = READ_NAMESPACE) -> list[ManifestRead]:
    return [_manifest_view(row, found.name) for row in manifests.list_manifests(session, found.name)]


@router.get("/namespaces/{namespace}/manifests/{digest}", response_class=Response)
def get_manifest(store: StoreDep, record: RunManifestRecord = READ_MANIFEST) -> Response:
    """The manifest's exact canonical bytes (their sha256 is the digest)."""
    return Response(manifests.read_manifest(store, record), media_type=MANIFEST_MEDIA_TYPE,
                    headers={"Docker-Content-Digest": f"sha256:{record.sha256}"})
