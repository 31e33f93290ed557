"""A build as a Kubernetes session sees it (:class:`~envyard.api.kubernetes.model.EnvironmentImage`), read from its
rows and its image config; the environments a caller may read, for JupyterHub; pull-only tokens.

The uid/gid and env prefix come from the image config (``User``, label ``dev.envyard.env-prefix``); a build is a
CUDA build when its lock has CUDA packages (``cuda-version``, ``cudatoolkit``, ``cuda-*``, a ``__cuda`` virtual
package, or builds with ``cuda`` in their build string, as conda-forge's GPU builds have).
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select

from envyard.api.auth.tokens import create_token, hash_token
from envyard.api.kubernetes.model import Archive, EnvironmentImage
from envyard.api.models import (
    ApiToken,
    Build,
    BuildArtifact,
    BuildPackage,
    BuildStatus,
    Environment,
    Namespace,
    NamespaceRole,
    Publication,
    PublicationStatus,
    RegistryTarget,
    Role,
)
from envyard.api.services import catalog
from envyard.api.storage import ArtifactStore
from envyard.builder.errors import ConflictError, NotFoundError

__all__ = ["CUDA_PACKAGES", "create_pull_token", "environment_image", "is_cuda", "readable_images"]

CUDA_PACKAGES = frozenset({"cuda-version", "cudatoolkit", "cuda", "cuda-runtime", "cuda-toolkit", "__cuda"})
PREFERRED = ("amd64", "arm64")


def is_cuda(packages: list[tuple[str, str]]) -> bool:
    """Whether a lock's ``(name, build)`` pairs make a CUDA build.

    >>> is_cuda([("numpy", "py311h0"), ("cuda-version", "h0")]), is_cuda([("pytorch", "cuda120_py311h0")])
    (True, True)
    >>> is_cuda([("numpy", "py311h0"), ("python", "h0_cpython")])
    False
    """
    return any(name in CUDA_PACKAGES or name.startswith("cuda-") or "cuda" in build.lower()
               for name, build in packages)


def _read_json(store: ArtifactStore, digest: str) -> Any:
    return json.loads(b"".join(store.read(digest.removeprefix("sha256:"))))


def _config(store: ArtifactStore, root_digest: str) -> dict[str, Any]:
    """The image config of the root manifest (of the amd64 one in an index): its ``config`` section."""
    root = _read_json(store, root_digest)
    if "manifests" in root:
        ranked = sorted(root["manifests"], key=lambda m: (
            PREFERRED.index(m.get("platform", {}).get("architecture")) if m.get("platform", {}).get("architecture")
            in PREFERRED else len(PREFERRED)))
        root = _read_json(store, ranked[0]["digest"])
    config: dict[str, Any] = _read_json(store, root["config"]["digest"]).get("config") or {}
    return config


def _user(config: dict[str, Any]) -> tuple[int, int]:
    user, _, group = str(config.get("User") or "0").partition(":")
    try:
        uid = int(user)
        return uid, int(group) if group else uid
    except ValueError:
        return 0, 0  # a user name: resolved by the session's image, not here


def _pick_build(session: Session, environment: Environment, label: str, build_id: int | None) -> Build:
    chosen = build_id if build_id is not None else environment.current_build_id
    build = session.get(Build, chosen) if chosen is not None else None
    if build is None or build.environment_id != environment.id:
        raise NotFoundError(f"{label} has no build {build_id}" if build_id is not None else f"{label} has no current "
                            "build", field="build", hint=f"list its builds: envyard build list {label}")
    if build.status != BuildStatus.COMPLETED or not build.image_digest:
        raise ConflictError(f"build {build.id} of {label} is {build.status}" + (
            "" if build.status != BuildStatus.COMPLETED else " without an image"), field="build",
            hint="wait for the build to complete, or name a completed build with an image: NS/NAME@BUILD")
    return build


def _publication(session: Session, build: Build, target: str) -> tuple[str, str, str]:
    row = session.exec(
        select(Publication, RegistryTarget).join(RegistryTarget, col(RegistryTarget.id) == Publication.target_id)
        .where(Publication.build_id == build.id, RegistryTarget.name == target)
    ).first()
    if row is None or row[0].status != PublicationStatus.PUSHED or not row[0].reference:
        raise NotFoundError(f"build {build.id} is not published to registry target '{target}'"
                            + (f" ({row[0].status})" if row else ""), field="target",
                            hint="list targets with envyard target list NAMESPACE; publications follow completion")
    reference = row[0].reference.split("@", 1)[0]
    host, _, repository = reference.partition("/")
    repository = repository.rsplit(":", 1)[0] if ":" in repository.rsplit("/", 1)[-1] else repository
    return host, repository, row[0].digest or build.image_digest or ""


def _image(session: Session, store: ArtifactStore, namespace: str, environment: Environment, build: Build,
           registry_host: str, api_url: str, target: str | None) -> EnvironmentImage:
    assert build.image_digest is not None and build.id is not None
    config = _config(store, build.image_digest)
    uid, gid = _user(config)
    packages = session.exec(select(BuildPackage.name, BuildPackage.build)
                            .where(BuildPackage.build_id == build.id)).all()
    archives = {a.platform: Archive(a.platform, f"{api_url}/api/v1/builds/{build.id}/artifacts/{a.name}", a.sha256)
                for a in session.exec(select(BuildArtifact).where(BuildArtifact.build_id == build.id,
                                                                  BuildArtifact.kind == "archive")).all()
                if a.platform}
    host, repository, digest = registry_host, f"{namespace}/{environment.name}", build.image_digest
    if target:
        host, repository, digest = _publication(session, build, target)
    return EnvironmentImage(
        namespace=namespace, name=environment.name, build_id=build.id, registry=host, repository=repository,
        digest=digest, uid=uid, gid=gid, env_prefix=(config.get("Labels") or {}).get("dev.envyard.env-prefix",
                                                                                      "/opt/env"),
        cuda=is_cuda([(n, b) for n, b in packages]), platforms=tuple(build.platforms), archives=archives,
        description=environment.description, from_envyard=target is None,
    )


def environment_image(session: Session, store: ArtifactStore, namespace: str, environment: Environment,
                      build_id: int | None, registry_host: str, api_url: str,
                      target: str | None = None) -> EnvironmentImage:
    """Build ``build_id`` (default: the current build) of the environment, completed with an image."""
    build = _pick_build(session, environment, f"{namespace}/{environment.name}", build_id)
    return _image(session, store, namespace, environment, build, registry_host, api_url, target)


def readable_images(session: Session, store: ArtifactStore, readable: frozenset[str] | None, registry_host: str,
                    api_url: str) -> list[EnvironmentImage]:
    """The current builds with an image of the environments in ``readable`` namespaces (None: all)."""
    query = (select(Environment, Namespace.name, Build)
             .join(Namespace, col(Namespace.id) == Environment.namespace_id)
             .join(Build, col(Build.id) == Environment.current_build_id)
             .where(Build.status == BuildStatus.COMPLETED, col(Build.image_digest).is_not(None))
             .order_by(col(Namespace.name), col(Environment.name)))
    if readable is not None:
        query = query.where(col(Namespace.name).in_(sorted(readable)))
    return [_image(session, store, namespace, environment, build, registry_host, api_url, None)
            for environment, namespace, build in session.exec(query).all()]


def create_pull_token(session: Session, namespace: str) -> tuple[int, str]:
    """A new reader token with the viewer role on ``namespace`` only: it can read and pull that namespace and
    nothing else (a reader token never writes). Returns its id and text (shown once)."""
    token = create_token(session, f"kubernetes pull ({namespace})"[:100], Role.READER)
    row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).one()
    assert row.id is not None
    catalog.set_grant(session, namespace, row.id, NamespaceRole.VIEWER)
    return row.id, token
