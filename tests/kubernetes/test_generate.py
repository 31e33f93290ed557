"""Every generated object (each variant, with and without a run, with GPUs, pull Secrets, JupyterHub profiles) is
valid for a current Kubernetes (kubernetes-validate --strict) and checked field by field."""

from __future__ import annotations

import base64
import json

import kubernetes_validate
import pytest

from envyard.api.kubernetes import generate
from envyard.api.kubernetes.model import Archive, EnvironmentImage, Resources, SessionOptions
from envyard.api.kubernetes.routes import parse_run
from envyard.builder.data import DataPath, DataSnapshot
from envyard.builder.errors import EnvyardError, ManifestError, SpecError, UsageError
from envyard.builder.run_manifest import DataMount, EnvironmentRef, LockRef, RunManifest
from envyard.builder.run_manifest import Resources as RunResources

K8S_VERSION = "1.34.0"  # image volumes: beta since 1.33
DIGEST = "sha256:" + "ab" * 32
ARCHIVE_SHA = "cd" * 32


def manifest(data: bool = True, **resources: object) -> RunManifest:
    snapshot = DataSnapshot(repo="https://git.example.org/team/data.git", commit="1" * 40, rev="v1",
                            paths=[DataPath(path="train", hash_name="md5", hash="2" * 32 + ".dir", is_dir=True)],
                            remote="storage", remote_url="s3://bucket/dvc")
    mounts = [DataMount(snapshot=snapshot, mount="/data/train"), DataMount(snapshot=snapshot, mount="/data/labels")]
    return RunManifest(environment=EnvironmentRef(namespace="team", name="app", build_id=7,
                                                  lock=LockRef(sha256="3" * 64)),
                       data=mounts if data else [], command=["python", "train.py", "--epochs", "3"], workdir="/work",
                       env={"SEED": "42"}, resources=RunResources(**resources))


RUN = manifest(cpu="2", memory="4Gi")


def image(cuda: bool = False, uid: int = 1000, gid: int = 100) -> EnvironmentImage:
    return EnvironmentImage(
        namespace="team", name="app", build_id=7, registry="envyard.example.org:8443", repository="team/app",
        digest=DIGEST, uid=uid, gid=gid, env_prefix="/opt/env", cuda=cuda,
        archives={"linux-64": Archive("linux-64", "https://envyard.example.org/api/v1/builds/7/artifacts/env.tar.zst",
                                      ARCHIVE_SHA)})


def options(variant: str = "image", gpu: int = 0) -> SessionOptions:
    return SessionOptions(variant=variant, resources=Resources("1", "2Gi", gpu),  # type: ignore[arg-type]
                          pull_secret="envyard-pull-team", base_image="quay.io/jupyter/minimal-notebook:2025-01-01",
                          tools_image="ghcr.io/envyard/envyard@" + "sha256:" + "ef" * 32,
                          api_url="https://envyard.example.org", kube_namespace="sessions")


def valid(obj: dict) -> dict:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    return obj


def main_container(spec: dict) -> dict:
    return spec["containers"][0]


def check_security(spec: dict, uid: int = 1000, gid: int = 100) -> None:
    assert spec["securityContext"] == {"fsGroup": gid, "runAsGroup": gid, "runAsNonRoot": True, "runAsUser": uid,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    for container in spec["containers"] + spec.get("initContainers", []):
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsGroup": gid,
            "runAsNonRoot": True, "runAsUser": uid, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("variant", ["image", "image-volume", "archive"])
@pytest.mark.parametrize("with_run", [False, True])
def test_pods_of_every_variant_are_valid_and_pinned(variant: str, with_run: bool) -> None:
    run = RUN if with_run else None
    pod = valid(generate.pod(image(), options(variant), run))
    spec = pod["spec"]
    container = main_container(spec)
    assert pod["metadata"]["namespace"] == "sessions"
    assert spec["imagePullSecrets"] == [{"name": "envyard-pull-team"}]
    assert spec["automountServiceAccountToken"] is False
    check_security(spec)
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "1",
                                                                                              "memory": "2Gi"}}
    reference = f"envyard.example.org:8443/team/app@{DIGEST}"
    inits = {c["name"]: c for c in spec.get("initContainers", [])}
    if variant == "image":
        assert container["image"] == reference
        assert "volumes" not in spec or all(v["name"] != generate.ENV_VOLUME for v in spec["volumes"])
    else:
        assert container["image"] == "quay.io/jupyter/minimal-notebook:2025-01-01"
        env_volume = next(v for v in spec["volumes"] if v["name"] == generate.ENV_VOLUME)
        assert {"name": generate.ENV_VOLUME, "mountPath": "/opt/env", "readOnly": True} in container["volumeMounts"]
        if variant == "image-volume":
            assert env_volume == {"name": generate.ENV_VOLUME, "image": {"reference": reference,
                                                                          "pullPolicy": "IfNotPresent"}}
        else:
            assert env_volume == {"name": generate.ENV_VOLUME, "emptyDir": {}}
            unpack = inits["unpack-environment"]
            assert unpack["command"] == ["envyard", "k8s", "unpack", image().archives["linux-64"].url,
                                         "--sha256", ARCHIVE_SHA, "--dest", "/opt/env"]
            assert unpack["image"].startswith("ghcr.io/envyard/envyard@sha256:")
            assert {"name": "ENVYARD_TOKEN", "valueFrom": {"secretKeyRef": {"key": "token",
                                                                             "name": "envyard-pull-team"}}} \
                in unpack["env"]
            assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    if with_run:
        fetch = inits["fetch-data"]
        assert fetch["command"][:2] == ["sh", "-c"]
        assert "envyard data fetch /envyard-run/run-manifest.json --dest /" in fetch["command"][2]
        assert {"name": "ENVYARD_RUN_MANIFEST", "value": RUN.canonical_bytes().decode()} in fetch["env"]
        assert RunManifest.parse(fetch["env"][0]["value"]).digest == RUN.digest
        assert {"name": generate.DATA_VOLUME, "emptyDir": {}} in spec["volumes"]
        for index, mount in enumerate(("/data/train", "/data/labels")):
            subpath = f"data-{index}"
            assert {"name": generate.DATA_VOLUME, "mountPath": mount, "subPath": subpath, "readOnly": True} \
                in container["volumeMounts"]
            assert {"name": generate.DATA_VOLUME, "mountPath": mount, "subPath": subpath} in fetch["volumeMounts"]
        assert {"name": "ENVYARD_RUN_MANIFEST_DIGEST", "value": RUN.digest} in container["env"]
        assert container["command"] == ["python", "train.py", "--epochs", "3"]
        assert container["workingDir"] == "/work"
        assert {"name": "SEED", "value": "42"} in container["env"]
        assert spec["restartPolicy"] == "Never"
    else:
        assert "fetch-data" not in inits and "command" not in container


def test_run_resources_apply_unless_the_caller_overrides_them() -> None:
    run = RUN
    bare = SessionOptions(pull_secret=None)
    container = main_container(valid(generate.pod(image(), bare, run))["spec"])
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "2",
                                                                                              "memory": "4Gi"}}
    assert "imagePullSecrets" not in generate.pod(image(), bare, run)["spec"]


def test_gpu_limits_for_cuda_builds_and_a_clear_refusal_otherwise() -> None:
    pod = valid(generate.pod(image(cuda=True), options(gpu=2)))
    limits = main_container(pod["spec"])["resources"]["limits"]
    assert limits[generate.GPU_RESOURCE] == "2"
    assert generate.GPU_RESOURCE not in main_container(pod["spec"])["resources"]["requests"]
    with pytest.raises(UsageError, match="team/app@7 is not a CUDA build") as refused:
        generate.pod(image(cuda=False), options(gpu=1))
    assert refused.value.field == "gpu" and "drop --gpu" in (refused.value.hint or "")


@pytest.mark.parametrize("variant", ["image", "image-volume", "archive"])
def test_jobs_are_valid(variant: str) -> None:
    job = valid(generate.job(image(cuda=True), options(variant, gpu=1), RUN))
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"]
    spec = job["spec"]["template"]["spec"]
    check_security(spec)
    assert spec["restartPolicy"] == "Never"
    assert job["metadata"]["name"] == f"team-app-7-run-{RUN.digest[7:19]}"
    assert main_container(spec)["resources"]["limits"][generate.GPU_RESOURCE] == "1"
    assert "fetch-data" in {c["name"] for c in spec["initContainers"]}


def test_a_root_image_runs_as_an_unprivileged_user() -> None:
    spec = valid(generate.pod(image(uid=0, gid=0), options()))["spec"]
    check_security(spec, uid=1000, gid=1000)


def test_archive_variant_needs_an_archive_for_the_platform() -> None:
    with pytest.raises(SpecError, match="no relocatable archive for linux-aarch64"):
        generate.pod(image(), SessionOptions(variant="archive", platform="linux-aarch64"))


def test_pull_secret_is_a_valid_dockerconfigjson() -> None:
    secret = valid(generate.pull_secret("envyard-pull-team", "envyard.example.org:8443", "ey_secret",
                                        kube_namespace="sessions"))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"]["envyard.example.org:8443"]
    assert entry["password"] == "ey_secret"
    assert base64.b64decode(entry["auth"]).decode() == "envyard:ey_secret"
    assert base64.b64decode(secret["data"]["token"]).decode() == "ey_secret"


def test_profiles_group_by_namespace_and_pin_digests() -> None:
    other = EnvironmentImage("zoo", "lab", 3, "envyard.example.org:8443", "zoo/lab", "sha256:" + "12" * 32)
    profiles = generate.profile_list([other, image()], SessionOptions(pull_secret="envyard-pull-team"))
    assert [p["slug"] for p in profiles] == ["team", "zoo"]
    choice = profiles[0]["profile_options"]["environment"]["choices"]["app"]
    assert choice["kubespawner_override"]["image"] == f"envyard.example.org:8443/team/app@{DIGEST}"
    assert (choice["kubespawner_override"]["uid"], choice["kubespawner_override"]["gid"]) == (1000, 100)
    volumes = generate.profile_list([image()], SessionOptions(variant="image-volume"))
    override = volumes[0]["profile_options"]["environment"]["choices"]["app"]["kubespawner_override"]
    assert "image" not in override and "uid" not in override  # the hub's image, as the hub's user
    assert override["volumes"][0]["image"]["reference"].endswith(DIGEST)
    # a Pod with the override's volumes, as KubeSpawner would make it, is valid for the API server
    valid({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-someone"},
           "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/minimal-notebook:latest",
                                    "volumeMounts": override["volume_mounts"]}], "volumes": override["volumes"]}})
    with pytest.raises(UsageError, match="image and image-volume"):
        generate.profile_list([image()], SessionOptions(variant="archive"))


def test_a_job_without_data_has_no_fetch_container_and_gpus_come_from_the_run() -> None:
    run = manifest(data=False, gpus=1)
    spec = valid(generate.job(image(cuda=True), SessionOptions(), run))["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert spec["containers"][0]["resources"] == {"limits": {generate.GPU_RESOURCE: "1"}}
    with pytest.raises(UsageError, match="not a CUDA build"):
        generate.job(image(cuda=False), SessionOptions(), run)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "Invalid JSON"),
    ('{"command": ["x"]}', "Field required"),
    (RUN.canonical_bytes().decode().replace('"SEED"', '"AWS_SECRET"'), "looks like a secret"),
    (RUN.canonical_bytes().decode().replace('"/data/train"', '"data/train"'), "must be an absolute path"),
])
def test_bad_manifests_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_run(text)


def test_quantities_are_checked() -> None:
    from envyard.api.kubernetes.model import parse_quantity

    with pytest.raises(EnvyardError, match="'two' is not a Kubernetes quantity"):
        parse_quantity("two", "cpu")


def test_run_names_come_from_the_manifest_digest() -> None:
    assert generate.run_name(RUN) == "run-" + RUN.digest[7:19]
