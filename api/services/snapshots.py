"""DVC data snapshots of a namespace: resolved by the server, stored as immutable rows.

``POST /api/v1/namespaces/{ns}/data-snapshots`` names a git repository holding a DVC project, a revision and
paths. The repository URL passes the server's URL policy exactly like a channel (:mod:`builder.url_policy`:
``file://`` (or a plain path) only under an admin-allowed root, no loopback, private or metadata address unless an
admin allowed its prefix), and so does the ``endpointurl`` of the remote options. The builder's
:func:`envyard.builder.data.snapshot_data` resolves it (DVC's Python API) in a thread, off the event loop and
bounded by ``ENVYARD_SNAPSHOT_TIMEOUT_SECONDS``. Remote credentials come from a namespace secret
(:mod:`api.services.secrets`, a JSON object of DVC remote options) or, without one, from the server's standard
AWS variables; they are handed to DVC in memory and never stored with the snapshot.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from envyard.api.db import session_scope
from envyard.api.models import DataSnapshotRecord
from envyard.api.services import secrets
from envyard.api.services.lookups import get_namespace
from envyard.builder.errors import EnvyardError, ServiceError, SpecError
from envyard.builder.url_policy import UrlPolicy

__all__ = ["create_snapshot", "get_snapshots", "list_snapshots", "repository_url"]

log = logging.getLogger(__name__)

CREDENTIAL_KEYS = frozenset({"access_key_id", "secret_access_key", "session_token", "password", "token",
                             "credentialpath", "profile", "key", "secret"})


def repository_url(repo: str) -> str:
    """The URL the policy checks for a repository as given: URLs as they are, a plain path as ``file://``."""
    if "://" in repo:
        return repo
    if ":" in repo.split("/", 1)[0]:  # scp-like git@host:path
        raise SpecError(f"repository {repo!r} is in scp-like form", field="repo",
                        hint="write it as a URL: ssh://git@host/path.git, https://host/path.git or file:///path")
    return Path(repo).absolute().as_uri()


def _resolve(repo: str, rev: str, paths: Sequence[str], remote: str | None,
             remote_config: dict[str, Any] | None) -> Any:
    from envyard.builder.data import snapshot_data

    return snapshot_data(repo, rev, list(paths), remote=remote, remote_config=remote_config)


def create_snapshot(engine: Engine, policy: UrlPolicy, secret_key: bytes, namespace: str, *, repo: str, rev: str,
                    paths: Sequence[str], remote: str | None, remote_secret: str | None, created_by: str | None,
                    timeout_seconds: float) -> DataSnapshotRecord:
    """Resolve and store a snapshot (see the module docstring); each database step in its own transaction, none
    open while DVC works."""
    url = repository_url(repo)
    policy.check(url, what="repository", shown=repo, field="repo")
    with session_scope(engine) as session:
        found = get_namespace(session, namespace)
        options = secrets.json_secret(session, secret_key, namespace, remote_secret) if remote_secret else None
    if options and isinstance(options.get("endpointurl"), str):
        policy.check(options["endpointurl"], what="remote endpointurl", field="remote_secret")
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="envyard-snapshot")
    try:
        future = executor.submit(_resolve, repo, rev, paths, remote, options)
        snapshot = future.result(timeout=timeout_seconds)
    except concurrent.futures.TimeoutError:
        raise ServiceError(f"resolving the data snapshot of {repo!r} at {rev!r} took more than "
                           f"{timeout_seconds:g} s", field="repo",
                           hint="try again later, or ask the admin to raise ENVYARD_SNAPSHOT_TIMEOUT_SECONDS") from None
    except EnvyardError:
        raise
    finally:
        executor.shutdown(wait=False)
    document = snapshot.model_dump(mode="json")
    _strip_credentials(document)
    with session_scope(engine) as session:
        row = DataSnapshotRecord(namespace_id=found.id or 0, repo=repo, rev=rev, commit=str(document.get("commit")),
                                 remote=remote, document=document, created_by=created_by)
        session.add(row)
        session.flush()
    log.info("data snapshot %s of namespace %s: %s at %s", row.id, namespace, repo, row.commit)
    return row


def _strip_credentials(value: Any) -> None:
    """Remove credential-like keys anywhere in a snapshot document (it never needs them)."""
    if isinstance(value, dict):
        for key in [k for k in value if str(k).lower() in CREDENTIAL_KEYS]:
            del value[key]
        for item in value.values():
            _strip_credentials(item)
    elif isinstance(value, list):
        for item in value:
            _strip_credentials(item)


def list_snapshots(session: Session, namespace: str) -> list[DataSnapshotRecord]:
    found = get_namespace(session, namespace)
    return list(session.exec(select(DataSnapshotRecord).where(DataSnapshotRecord.namespace_id == found.id)
                             .order_by(col(DataSnapshotRecord.id))).all())


def get_snapshots(session: Session, namespace_id: int, ids: Sequence[int]) -> dict[int, DataSnapshotRecord]:
    """The snapshots of a namespace among ``ids``, by id (the missing ones are absent)."""
    rows = session.exec(select(DataSnapshotRecord).where(DataSnapshotRecord.namespace_id == namespace_id,
                                                         col(DataSnapshotRecord.id).in_(list(ids)))).all()
    return {row.id or 0: row for row in rows}
