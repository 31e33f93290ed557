"""/api/v1/namespaces/{namespace}/environments/{name}/kubernetes/{pod,job}, the pull Secret of a namespace, and
/api/v1/jupyterhub/profiles. Readers may fetch Pods, Jobs and profiles; a pull Secret (a new token) needs the admin
role on the namespace."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request

from envyard.api.auth.principals import Action
from envyard.api.auth.scope import readable
from envyard.api.deps import Reader, SessionDep, SettingsDep, StoreDep
from envyard.api.ids import Id
from envyard.api.kubernetes import generate, service
from envyard.api.kubernetes.model import (
    EnvironmentImage,
    Resources,
    SessionOptions,
    Variant,
    parse_quantity,
)
from envyard.api.models import Namespace
from envyard.api.resources import EnvironmentRef, environment_for, namespace_for
from envyard.builder.errors import ConflictError, ManifestError
from envyard.builder.run_manifest import RunManifest

__all__ = ["parse_run", "router"]

router = APIRouter(prefix="/api/v1", tags=["kubernetes"])
READ_ENVIRONMENT = Depends(environment_for(Action.READ))
ADMIN_NAMESPACE = Depends(namespace_for(Action.ADMIN))
MANIFEST_LIMIT = 64 * 1024
MANIFEST_BODY = Body(description="A run manifest (envyard.dev/run-manifest/v1).")
QUERY_MANIFEST_LIMIT = 4096  # a URL stays well below the server's request-line limit


def parse_run(text: str, source: str = "manifest") -> RunManifest:
    """A run manifest's JSON text, validated (:class:`RunManifest`); its errors name the field."""
    if len(text) > MANIFEST_LIMIT:
        raise ManifestError(f"the {source} has {len(text)} characters, more than {MANIFEST_LIMIT}", field="manifest",
                            hint="a run manifest names its data and code; it does not carry them")
    return RunManifest.parse(text, source=source)


def _options(request: Request, settings: Any, image: EnvironmentImage, variant: Variant, cpu: str | None,
             memory: str | None, gpu: int, pull_secret: str | None, base_image: str | None, platform: str,
             kube_namespace: str | None) -> SessionOptions:
    if pull_secret is None:
        pull_secret = generate.pull_secret_name(image.namespace) if image.from_envyard else ""
    return SessionOptions(
        variant=variant, resources=Resources(parse_quantity(cpu, "cpu"), parse_quantity(memory, "memory"), gpu),
        pull_secret=pull_secret or None, base_image=base_image or settings.kubernetes_base_image,
        tools_image=settings.kubernetes_tools_image, api_url=str(request.base_url).rstrip("/"), platform=platform,
        kube_namespace=kube_namespace,
    )


class SessionQuery:
    """The query parameters of the Pod and Job routes (the options of ``envyard k8s pod``)."""

    def __init__(self, build: Id | None = None, variant: Variant = "image",
                 cpu: str | None = None, memory: str | None = None, gpu: int = Query(default=0, ge=0, le=64),
                 pull_secret: str | None = Query(default=None, description="The Secret's name; empty: none."),
                 base_image: str | None = None, platform: str = Query(default="linux-64", pattern=r"^linux-"),
                 target: str | None = Query(default=None, description="A registry target the build was pushed to."),
                 kube_namespace: str | None = None,
                 manifest: str | None = Query(default=None, max_length=QUERY_MANIFEST_LIMIT,
                                              description="A run manifest (JSON); longer ones: POST it as the body.")
                 ) -> None:
        self.build, self.variant, self.cpu, self.memory, self.gpu = build, variant, cpu, memory, gpu
        self.pull_secret, self.base_image, self.platform, self.target = pull_secret, base_image, platform, target
        self.kube_namespace, self.manifest = kube_namespace, manifest


def _prepare(request: Request, session: Any, store: Any, settings: Any, ref: EnvironmentRef,
             query: SessionQuery, body: dict[str, Any] | None = None
             ) -> tuple[EnvironmentImage, SessionOptions, RunManifest | None]:
    if body is not None and query.manifest:
        raise ManifestError("a run manifest both in the body and in ?manifest=", field="manifest",
                            hint="send it once: POST it as the body")
    text = json.dumps(body) if body is not None else query.manifest
    run = parse_run(text) if text else None
    build = query.build
    if run is not None:
        named = run.environment
        if (named.namespace, named.name) not in ((None, None), (ref.namespace, ref.name)):
            raise ConflictError(f"the run manifest is for {named.namespace}/{named.name}, not "
                                f"{ref.namespace}/{ref.name}",
                                field="manifest.environment", hint="generate it for the manifest's environment")
        if build is not None and named.build_id is not None and build != named.build_id:
            raise ConflictError(f"the run manifest pins build {named.build_id}, not {build}", field="build",
                                hint="drop ?build= to use the manifest's build")
        build = build if build is not None else named.build_id
    image = service.environment_image(session, store, ref.namespace, ref.environment, build,
                                      request.url.netloc, str(request.base_url).rstrip("/"), query.target)
    options = _options(request, settings, image, query.variant, query.cpu, query.memory, query.gpu,
                       query.pull_secret, query.base_image, query.platform, query.kube_namespace)
    return image, options, run


@router.get("/namespaces/{namespace}/environments/{name}/kubernetes/pod")
def kubernetes_pod(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                   query: SessionQuery = Depends(), ref: EnvironmentRef = READ_ENVIRONMENT) -> dict[str, Any]:
    """A Pod running the environment's image pinned by digest (``?manifest=``: a run's command and data)."""
    return generate.pod(*_prepare(request, session, store, settings, ref, query))


@router.post("/namespaces/{namespace}/environments/{name}/kubernetes/pod")
def kubernetes_pod_for_run(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                           manifest: dict[str, Any] = MANIFEST_BODY, query: SessionQuery = Depends(),
                           ref: EnvironmentRef = READ_ENVIRONMENT) -> dict[str, Any]:
    """A Pod running the run manifest of the body in the environment (readers may ask: nothing is stored)."""
    return generate.pod(*_prepare(request, session, store, settings, ref, query, manifest))


def _job(prepared: tuple[EnvironmentImage, SessionOptions, RunManifest | None]) -> dict[str, Any]:
    image, options, run = prepared
    if run is None:
        raise ManifestError("a Job runs a run manifest: none given", field="manifest",
                            hint="POST the manifest as the body (envyard k8s job RUN_MANIFEST does), or ?manifest=")
    return generate.job(image, options, run)


@router.get("/namespaces/{namespace}/environments/{name}/kubernetes/job")
def kubernetes_job(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                   query: SessionQuery = Depends(), ref: EnvironmentRef = READ_ENVIRONMENT) -> dict[str, Any]:
    """A Job running a run manifest (``?manifest=``, required) in the environment."""
    return _job(_prepare(request, session, store, settings, ref, query))


@router.post("/namespaces/{namespace}/environments/{name}/kubernetes/job")
def kubernetes_job_for_run(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                           manifest: dict[str, Any] = MANIFEST_BODY, query: SessionQuery = Depends(),
                           ref: EnvironmentRef = READ_ENVIRONMENT) -> dict[str, Any]:
    """A Job running the run manifest of the body in the environment (readers may ask: nothing is stored)."""
    return _job(_prepare(request, session, store, settings, ref, query, manifest))


@router.post("/namespaces/{namespace}/kubernetes/pull-secret", status_code=201)
def kubernetes_pull_secret(request: Request, session: SessionDep, kube_namespace: str | None = None,
                           namespace: Namespace = ADMIN_NAMESPACE) -> dict[str, Any]:
    """A dockerconfigjson Secret with a new pull-only token: a reader token with the viewer role on this namespace
    only (revoke it with DELETE /api/v1/tokens/{id}; its id is the Secret's label ``envyard.dev/token-id``)."""
    token_id, token = service.create_pull_token(session, namespace.name)
    session.commit()
    return generate.pull_secret(generate.pull_secret_name(namespace.name), request.url.netloc, token,
                                kube_namespace=kube_namespace, labels={"envyard.dev/token-id": str(token_id)})


@router.get("/jupyterhub/profiles")
def jupyterhub_profiles(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                        principal: Reader, variant: Variant = "image",
                        pull_secret: str | None = Query(default=None, description="Empty: none; default: "
                                                        "envyard-pull-<namespace>.")) -> list[dict[str, Any]]:
    """A KubeSpawner ``profile_list`` of the environments the caller may read: a profile per namespace, its
    environments as choices, each pinned by digest (``variant=image-volume``: mounted into the hub's image)."""
    scope = readable(principal)
    images = service.readable_images(session, store, None if scope is None else scope.namespaces,
                                     request.url.netloc, str(request.base_url).rstrip("/"))
    if scope is not None:  # bindings on some environments of a namespace
        images = [image for image in images if scope.environment(image.namespace, image.name)]
    by_namespace: dict[str, list[EnvironmentImage]] = {}
    for image in images:
        by_namespace.setdefault(image.namespace, []).append(image)
    profiles = []
    for namespace, members in by_namespace.items():
        secret = generate.pull_secret_name(namespace) if pull_secret is None else pull_secret
        profiles.extend(generate.profile_list(members, SessionOptions(variant=variant, pull_secret=secret or None)))
    return profiles
