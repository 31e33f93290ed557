"""Pods, Jobs, pull Secrets and KubeSpawner profiles for a built environment: pure functions from the typed inputs
of :mod:`envyard.api.kubernetes.model` to the official client's models, serialized with
``ApiClient().sanitize_for_serialization`` (plain dicts, ready for YAML, JSON or ``create_namespaced_pod``).

Three variants put the environment into the session's container:

* ``image``: the container runs the environment's image, pinned by digest, pulled with a pull-only token;
* ``image-volume``: any session image (``base_image``) with the environment image mounted read-only at the env
  prefix as a Kubernetes image volume (``volumes[].image``, beta since 1.33);
* ``archive``: an init container (envyard's own image) downloads the build's relocatable archive, checks its
  sha256, unpacks it into an emptyDir mounted at the env prefix and runs ``conda-unpack``.

With a run, an init container runs ``envyard data fetch`` (which verifies the data's hashes) into a shared
emptyDir; the run's command, working directory, variables and resources go into the main container.

>>> from envyard.api.kubernetes.model import EnvironmentImage, SessionOptions
>>> image = EnvironmentImage("team", "app", 7, "envyard.example.org", "team/app", "sha256:" + "a" * 64, 1000, 100)
>>> pod(image, SessionOptions(pull_secret="envyard-pull-team"))["spec"]["containers"][0]["image"] == image.reference
True
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Capabilities,
    V1Container,
    V1EmptyDirVolumeSource,
    V1EnvVar,
    V1EnvVarSource,
    V1ImageVolumeSource,
    V1Job,
    V1JobSpec,
    V1LocalObjectReference,
    V1ObjectMeta,
    V1Pod,
    V1PodSecurityContext,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ResourceRequirements,
    V1SeccompProfile,
    V1Secret,
    V1SecretKeySelector,
    V1SecurityContext,
    V1Volume,
    V1VolumeMount,
)

from envyard.api.kubernetes.model import DEFAULT_UID, EnvironmentImage, Resources, SessionOptions
from envyard.builder.errors import SpecError, UsageError
from envyard.builder.run_manifest import RunManifest

__all__ = ["ENV_VOLUME", "DATA_VOLUME", "GPU_RESOURCE", "check_gpu", "job", "object_name", "pod", "profile_list",
           "pull_secret", "pull_secret_name", "run_name", "serialize"]

GPU_RESOURCE = "nvidia.com/gpu"
ENV_VOLUME = "envyard-env"
DATA_VOLUME = "envyard-data"
MANIFEST_VOLUME = "envyard-run-manifest"
MANIFEST_DIR = "/envyard-run"
ARCH = {"linux-64": "amd64", "linux-aarch64": "arm64", "linux-ppc64le": "ppc64le", "linux-s390x": "s390x"}
LABELS = ("app.kubernetes.io/managed-by", "envyard.dev/namespace", "envyard.dev/environment", "envyard.dev/build")


def serialize(obj: Any) -> Any:
    """A client model as the plain JSON-able dict the API server takes."""
    return ApiClient().sanitize_for_serialization(obj)


def pull_secret_name(namespace: str) -> str:
    """The Secret that holds the pull-only token of envyard namespace ``namespace``.

    >>> pull_secret_name("Data_Science")
    'envyard-pull-data-science'
    """
    return "envyard-pull-" + _dns(namespace)


def object_name(image: EnvironmentImage, suffix: str = "") -> str:
    """A DNS-1123 name for the Pod or Job of ``image`` (at most 63 characters).

    >>> from envyard.api.kubernetes.model import EnvironmentImage
    >>> object_name(EnvironmentImage("team", "My_App", 12, "h", "team/my_app", "sha256:0"))
    'team-my-app-12'
    """
    base = _dns(f"{image.namespace}-{image.name}")[: 52 - len(suffix)].rstrip("-")
    return f"{base}-{image.build_id}{suffix}"


def _dns(value: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in value.lower())
    return "-".join(part for part in out.split("-") if part) or "env"


def check_gpu(image: EnvironmentImage, gpu: int) -> None:
    """Refuse GPUs for a build without CUDA packages (it would hold a GPU it cannot use)."""
    if gpu < 0:
        raise UsageError(f"--gpu {gpu}: the number of GPUs cannot be negative", field="gpu", hint="--gpu 1")
    if gpu and not image.cuda:
        raise UsageError(
            f"{image.namespace}/{image.name}@{image.build_id} is not a CUDA build: it has no CUDA packages "
            "(cuda-version, cudatoolkit, cuda-*), so --gpu would reserve GPUs it cannot use", field="gpu",
            hint="drop --gpu, or build the environment with CUDA packages (e.g. add cuda-version to the spec)")


def _labels(image: EnvironmentImage) -> dict[str, str]:
    return dict(zip(LABELS, ("envyard", _dns(image.namespace)[:63], _dns(image.name)[:63], str(image.build_id)),
                    strict=True))


def _resources(resources: Resources) -> V1ResourceRequirements | None:
    amounts = {k: v for k, v in (("cpu", resources.cpu), ("memory", resources.memory)) if v}
    limits: dict[str, str] = dict(amounts)
    if resources.gpu:
        limits[GPU_RESOURCE] = str(resources.gpu)
    if not limits:
        return None
    return V1ResourceRequirements(requests=amounts or None, limits=limits)


def _user(image: EnvironmentImage) -> tuple[int, int]:
    """The image config's uid/gid; a root image runs as :data:`DEFAULT_UID` (sessions never run as root)."""
    return (image.uid or DEFAULT_UID), (image.gid if image.uid else (image.gid or DEFAULT_UID))


def _container_security(image: EnvironmentImage) -> V1SecurityContext:
    uid, gid = _user(image)
    return V1SecurityContext(run_as_user=uid, run_as_group=gid, run_as_non_root=True,
                             allow_privilege_escalation=False, capabilities=V1Capabilities(drop=["ALL"]),
                             seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))


def _merge(options: SessionOptions, run: RunManifest | None) -> Resources:
    """The run's resources, overridden by what the caller asked for."""
    given = options.resources
    if run is None:
        return given
    wanted = run.resources
    return Resources(cpu=given.cpu or wanted.cpu, memory=given.memory or wanted.memory, gpu=given.gpu or wanted.gpus)


def _pod_spec(image: EnvironmentImage, options: SessionOptions, run: RunManifest | None,
              restart_policy: str) -> V1PodSpec:
    resources = _merge(options, run)
    check_gpu(image, resources.gpu)
    uid, gid = _user(image)
    volumes: list[V1Volume] = []
    mounts: list[V1VolumeMount] = []
    init: list[V1Container] = []
    env = [V1EnvVar(name="CONDA_PREFIX", value=image.env_prefix),
           V1EnvVar(name="PATH", value=f"{image.env_prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                       "/sbin:/bin")]
    if options.variant == "image":
        container_image = image.reference
    elif options.variant == "image-volume":
        container_image = options.base_image
        volumes.append(V1Volume(name=ENV_VOLUME, image=V1ImageVolumeSource(reference=image.reference,
                                                                           pull_policy="IfNotPresent")))
        mounts.append(V1VolumeMount(name=ENV_VOLUME, mount_path=image.env_prefix, read_only=True))
    elif options.variant == "archive":
        container_image = options.base_image
        init.append(_unpack_container(image, options))
        volumes.append(V1Volume(name=ENV_VOLUME, empty_dir=V1EmptyDirVolumeSource()))
        mounts.append(V1VolumeMount(name=ENV_VOLUME, mount_path=image.env_prefix, read_only=True))
    else:
        raise UsageError(f"unknown variant '{options.variant}'", field="variant",
                         hint="one of image, image-volume, archive")
    if run is not None and run.data:
        volumes.append(V1Volume(name=DATA_VOLUME, empty_dir=V1EmptyDirVolumeSource()))
        volumes.append(V1Volume(name=MANIFEST_VOLUME, empty_dir=V1EmptyDirVolumeSource(size_limit="1Mi")))
        init.append(_fetch_container(image, options, run))
        mounts.extend(_data_mounts(run, read_only=True))
    if run is not None:
        env.extend(V1EnvVar(name=k, value=v) for k, v in sorted(run.env.items()))
        env.append(V1EnvVar(name="ENVYARD_RUN_MANIFEST_DIGEST", value=run.digest))
    main = V1Container(
        name="environment" if run is None else "run", image=container_image,
        command=(run.command or None) if run is not None else None,
        working_dir=run.workdir if run is not None else None,
        env=env, resources=_resources(resources), volume_mounts=mounts or None,
        security_context=_container_security(image),
    )
    selector = {"kubernetes.io/arch": ARCH[options.platform]} if options.variant == "archive" else None
    secrets = [V1LocalObjectReference(name=options.pull_secret)] if options.pull_secret else None
    return V1PodSpec(
        containers=[main], init_containers=init or None, volumes=volumes or None, image_pull_secrets=secrets,
        restart_policy=restart_policy, node_selector=selector, automount_service_account_token=False,
        security_context=V1PodSecurityContext(run_as_user=uid, run_as_group=gid, fs_group=gid, run_as_non_root=True,
                                              seccomp_profile=V1SeccompProfile(type="RuntimeDefault")),
    )


def _unpack_container(image: EnvironmentImage, options: SessionOptions) -> V1Container:
    archive = image.archives.get(options.platform)
    if archive is None:
        raise SpecError(f"build {image.build_id} has no relocatable archive for {options.platform} "
                        f"(it has: {', '.join(sorted(image.archives)) or 'none'})", field="variant",
                        hint="rebuild with archives (the default), choose another --platform, or use the image "
                             "or image-volume variant")
    env = [V1EnvVar(name="ENVYARD_API_URL", value=options.api_url)]
    if options.pull_secret:
        env.append(V1EnvVar(name="ENVYARD_TOKEN", value_from=V1EnvVarSource(
            secret_key_ref=V1SecretKeySelector(name=options.pull_secret, key="token"))))
    return V1Container(
        name="unpack-environment", image=options.tools_image,
        command=["envyard", "k8s", "unpack", archive.url, "--sha256", archive.sha256, "--dest", image.env_prefix],
        env=env, volume_mounts=[V1VolumeMount(name=ENV_VOLUME, mount_path=image.env_prefix)],
        security_context=_container_security(image),
    )


def _data_mounts(run: RunManifest, read_only: bool) -> list[V1VolumeMount]:
    """Data snapshot ``i`` lives in the data volume's ``data-i`` and appears at its mount path (its files at
    ``<mount>/<path in the repository>``), in the init container that fetches it as in the run."""
    return [V1VolumeMount(name=DATA_VOLUME, mount_path=d.mount, sub_path=f"data-{i}", read_only=read_only or None)
            for i, d in enumerate(run.data)]


def _fetch_container(image: EnvironmentImage, options: SessionOptions, run: RunManifest) -> V1Container:
    """``envyard data fetch``: every snapshot of the manifest at its mount path, its hashes verified."""
    manifest = f"{MANIFEST_DIR}/run-manifest.json"
    script = (f'printf "%s" "$ENVYARD_RUN_MANIFEST" > {manifest} && '
              f"exec envyard data fetch {manifest} --dest /")
    return V1Container(
        name="fetch-data", image=options.tools_image, command=["sh", "-c", script],
        env=[V1EnvVar(name="ENVYARD_RUN_MANIFEST", value=run.canonical_bytes().decode())],
        volume_mounts=[V1VolumeMount(name=MANIFEST_VOLUME, mount_path=MANIFEST_DIR),
                       *_data_mounts(run, read_only=False)],
        security_context=_container_security(image),
    )


def run_name(run: RunManifest) -> str:
    """``run-`` and the manifest digest's first 12 hex digits: a Job's name suffix."""
    return "run-" + run.digest.removeprefix("sha256:")[:12]


def pod(image: EnvironmentImage, options: SessionOptions, run: RunManifest | None = None) -> dict[str, Any]:
    """A Pod running ``image`` (the run's command, with its data, when given)."""
    suffix = f"-{run_name(run)}" if run is not None else ""
    obj = V1Pod(api_version="v1", kind="Pod",
                metadata=V1ObjectMeta(name=object_name(image, suffix), namespace=options.kube_namespace,
                                      labels=_labels(image)),
                spec=_pod_spec(image, options, run, "Never" if run is not None else "Always"))
    return dict(serialize(obj))


def job(image: EnvironmentImage, options: SessionOptions, run: RunManifest, *, backoff_limit: int = 0,
        ttl_seconds: int = 86_400) -> dict[str, Any]:
    """A Job running the run's command once in ``image``."""
    labels = _labels(image)
    obj = V1Job(api_version="batch/v1", kind="Job",
                metadata=V1ObjectMeta(name=object_name(image, f"-{run_name(run)}"), namespace=options.kube_namespace,
                                      labels={**labels, "envyard.dev/run": run.digest.removeprefix("sha256:")[:63]}),
                spec=V1JobSpec(backoff_limit=backoff_limit, ttl_seconds_after_finished=ttl_seconds,
                               template=V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels),
                                                          spec=_pod_spec(image, options, run, "Never"))))
    return dict(serialize(obj))


def pull_secret(name: str, registry: str, token: str, *, kube_namespace: str | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret for ``registry`` with ``token`` as password (any user name
    works with envyard's registry), and the token itself under ``token`` (the archive variant's download)."""
    auth = base64.b64encode(f"envyard:{token}".encode()).decode()
    config = {"auths": {registry: {"username": "envyard", "password": token, "auth": auth}}}
    obj = V1Secret(api_version="v1", kind="Secret", type="kubernetes.io/dockerconfigjson",
                   metadata=V1ObjectMeta(name=name, namespace=kube_namespace,
                                         labels={"app.kubernetes.io/managed-by": "envyard", **(labels or {})}),
                   data={".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode(),
                         "token": base64.b64encode(token.encode()).decode()})
    return dict(serialize(obj))


def _profile_override(image: EnvironmentImage, options: SessionOptions) -> dict[str, Any]:
    """The KubeSpawner traits a profile choice sets (``image`` or ``volumes``/``volume_mounts``)."""
    override: dict[str, Any] = {"environment": {"CONDA_PREFIX": image.env_prefix}}
    if options.pull_secret:
        override["image_pull_secrets"] = [options.pull_secret]
    if options.variant == "image":  # the environment's image runs: as its config's user (never root)
        override.update(image=image.reference, uid=_user(image)[0], gid=_user(image)[1])
    elif options.variant == "image-volume":
        override["volumes"] = [{"name": ENV_VOLUME, "image": {"reference": image.reference,
                                                              "pullPolicy": "IfNotPresent"}}]
        override["volume_mounts"] = [{"name": ENV_VOLUME, "mountPath": image.env_prefix, "readOnly": True}]
        # the hub's own image runs, as the user the hub configures for it
    else:
        raise UsageError(f"JupyterHub profiles come in the image and image-volume variants, not '{options.variant}'",
                         field="variant", hint="?variant=image or ?variant=image-volume")
    return override


def profile_list(images: list[EnvironmentImage], options: SessionOptions) -> list[dict[str, Any]]:
    """A KubeSpawner ``profile_list``: one profile per envyard namespace (sorted), whose ``environment`` option
    chooses among its environments, each pinned by digest."""
    by_namespace: dict[str, list[EnvironmentImage]] = {}
    for image in sorted(images, key=lambda i: (i.namespace, i.name)):
        by_namespace.setdefault(image.namespace, []).append(image)
    profiles = []
    for namespace, members in by_namespace.items():
        choices = {
            image.name: {
                "display_name": f"{image.name} (build {image.build_id})",
                "description": image.description,
                "kubespawner_override": _profile_override(image, options),
            } for image in members
        }
        first = next(iter(choices))
        choices[first]["default"] = True
        profiles.append({
            "display_name": namespace, "slug": namespace,
            "description": f"envyard environments of namespace {namespace} ({len(members)}), pinned by digest",
            "profile_options": {"environment": {"display_name": "Environment", "choices": choices}},
        })
    return profiles
