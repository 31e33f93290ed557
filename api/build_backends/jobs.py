"""The Kubernetes Job (and its token Secret) for one build attempt, as the ``kubernetes`` client's typed models.

One Job per build attempt: the worker protocol leases a whole build (all its platforms) to one worker, so the
Job's pod claims the build and solves every platform of it. Its name is deterministic (``envyard-build-<id>-<n>``
for attempt n), so a second Job for one attempt can never be created: the API server answers 409.

>>> from envyard.api.settings import ServiceSettings
>>> settings = ServiceSettings(api_url="http://envyard:8080", _env_file=None)
>>> job, secret = build_job(BuildTarget(7, 1, "team", ["linux-aarch64"]), settings, "TOKEN")
>>> job.metadata.name, job.spec.backoff_limit, job.spec.template.spec.node_selector["kubernetes.io/arch"]
('envyard-build-7-1', 0, 'arm64')
>>> secret.string_data
{'token': 'TOKEN'}
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client as k8s

from envyard.api.settings import ServiceSettings
from envyard.builder.errors import ConfigError

__all__ = ["ARCHES", "ATTEMPT_LABEL", "BUILD_LABEL", "JOB_SELECTOR", "BuildTarget", "build_job", "job_name",
           "node_arch", "to_dict"]

BUILD_LABEL = "envyard.dev/build-id"
ATTEMPT_LABEL = "envyard.dev/attempt"
COMMON_LABELS = {"app.kubernetes.io/name": "envyard", "app.kubernetes.io/component": "build",
                 "app.kubernetes.io/managed-by": "envyard"}
JOB_SELECTOR = ",".join(f"{k}={v}" for k, v in COMMON_LABELS.items())
#: conda platform -> the node label ``kubernetes.io/arch`` of nodes that run it
ARCHES = {"linux-64": "amd64", "linux-aarch64": "arm64", "linux-ppc64le": "ppc64le", "linux-s390x": "s390x"}
CONTAINER = "worker"
RUN_AS = 1000  # envyard's image runs as this uid/gid (deploy/image/)


@dataclass(frozen=True, slots=True)
class BuildTarget:
    """What the Job of a build attempt depends on."""

    build_id: int
    attempt: int  # the attempt the Job's pod will claim (the build's attempts so far + 1)
    namespace: str  # envyard's namespace of the build (its resource requests)
    platforms: list[str]


def job_name(build_id: int, attempt: int) -> str:
    return f"envyard-build-{build_id}-{attempt}"


def node_arch(platforms: list[str]) -> str:
    """The ``kubernetes.io/arch`` of the node a build runs on: that of its first Linux platform (the others are
    solved and assembled there too: installing into an image runs no code of the packages); amd64 for builds with
    none (noarch, osx-*, win-*: solved only)."""
    for platform in platforms:
        if platform in ARCHES:
            return ARCHES[platform]
    return "amd64"


def _requests(settings: ServiceSettings, namespace: str) -> dict[str, str]:
    table = settings.kubernetes_build_resources
    requests = table.get(namespace, table.get("*", {}))
    unknown = sorted(set(requests) - {"cpu", "memory", "ephemeral-storage"})
    if unknown:
        raise ConfigError(f"kubernetes_build_resources['{namespace}'] names {', '.join(unknown)}",
                          field="kubernetes_build_resources", hint="use cpu, memory and ephemeral-storage")
    return dict(requests)


def build_job(target: BuildTarget, settings: ServiceSettings, token: str) -> tuple[k8s.V1Job, k8s.V1Secret]:
    """The Job running ``envyard worker --once`` for ``target``, and the Secret holding its build token."""
    if not settings.api_url:
        raise ConfigError("the kubernetes build backend needs the URL build pods reach the API at",
                          field="api_url", hint="set ENVYARD_API_URL, e.g. http://envyard.envyard.svc:8080")
    name = job_name(target.build_id, target.attempt)
    labels = {**COMMON_LABELS, BUILD_LABEL: str(target.build_id), ATTEMPT_LABEL: str(target.attempt)}
    env = [
        k8s.V1EnvVar(name="ENVYARD_API_URL", value=settings.api_url),
        k8s.V1EnvVar(name="ENVYARD_TOKEN", value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=name, key="token"))),
        k8s.V1EnvVar(name="ENVYARD_CACHE_DIR", value=settings.kubernetes_cache_path),
        k8s.V1EnvVar(name="ENVYARD_WORK_ROOT", value=settings.kubernetes_work_path),
        k8s.V1EnvVar(name="ENVYARD_BUILD_SANDBOX", value="none"),  # the pod is the sandbox
        *(k8s.V1EnvVar(name=key, value=value) for key, value in sorted(settings.kubernetes_worker_env.items())),
    ]
    cache = (k8s.V1Volume(name="cache", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
        claim_name=settings.kubernetes_cache_pvc)) if settings.kubernetes_cache_pvc
        else k8s.V1Volume(name="cache", empty_dir=k8s.V1EmptyDirVolumeSource()))
    container = k8s.V1Container(
        name=CONTAINER, image=settings.kubernetes_worker_image,
        command=["envyard", "worker", "--once", "--name", name,
                 "--claim-timeout", str(settings.kubernetes_job_start_seconds)],
        env=env, resources=k8s.V1ResourceRequirements(requests=_requests(settings, target.namespace)),
        volume_mounts=[k8s.V1VolumeMount(name="cache", mount_path=settings.kubernetes_cache_path),
                       k8s.V1VolumeMount(name="work", mount_path=settings.kubernetes_work_path)],
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])),
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never", containers=[container], volumes=[
            cache, k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource())],
        node_selector={"kubernetes.io/os": "linux", "kubernetes.io/arch": node_arch(target.platforms)},
        service_account_name=settings.kubernetes_service_account, automount_service_account_token=False,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS, fs_group=RUN_AS,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
    )
    deadline = int(settings.kubernetes_job_start_seconds + settings.build_time_limit_seconds)
    job = k8s.V1Job(
        api_version="batch/v1", kind="Job", metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1JobSpec(
            backoff_limit=0,  # envyard's leases retry builds, not Kubernetes
            ttl_seconds_after_finished=settings.kubernetes_job_ttl_seconds,
            active_deadline_seconds=deadline,
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )
    secret = k8s.V1Secret(api_version="v1", kind="Secret", type="Opaque",
                          metadata=k8s.V1ObjectMeta(name=name, labels=labels), string_data={"token": token})
    return job, secret


def to_dict(obj: object) -> dict[str, object]:
    """A client model as the API server's JSON (camelCase keys, no nulls)."""
    result: dict[str, object] = k8s.ApiClient().sanitize_for_serialization(obj)
    return result
