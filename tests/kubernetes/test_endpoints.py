"""The Pod, Job and pull-Secret routes and ``envyard k8s`` against a real server with real builds: digests pinned,
uid/gid from the image config, GPUs only for the CUDA build, a pull-only token that pulls its namespace and nothing
else, the archive variant's init command run for real, ``--apply`` through the kubernetes client."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import yaml

from envyard.builder.data import DataPath, DataSnapshot
from envyard.builder.run_manifest import DataMount, EnvironmentRef, LockRef, RunManifest
from tests.commands import ENVYARD
from tests.kubernetes.conftest import Cluster
from tests.kubernetes.recording import recording_api_server

K8S_VERSION = "1.34.0"


def run_manifest(served: Cluster, environment: str, build: bool = True) -> str:
    """A run manifest (canonical JSON) for ``environment``'s build, with one data snapshot."""
    done = served.builds[environment]
    namespace, name = environment.split("/")
    snapshot = DataSnapshot(repo="https://git.example.org/team/data.git", commit="1" * 40, rev="v1",
                            paths=[DataPath(path="train", hash_name="md5", hash="2" * 32 + ".dir", is_dir=True)])
    return RunManifest(
        environment=EnvironmentRef(namespace=namespace, name=name, build_id=done["id"] if build else None,
                                   lock=LockRef(sha256=done["lock_sha256"] or "0" * 64)),
        data=[DataMount(snapshot=snapshot, mount="/data/train")], command=["python", "-c", "print(1)"],
    ).canonical_bytes().decode()


def pod_url(environment: str, kind: str = "pod") -> str:
    namespace, name = environment.split("/")
    return f"/api/v1/namespaces/{namespace}/environments/{name}/kubernetes/{kind}"


def host(served: Cluster) -> str:
    return served.service.url.removeprefix("http://")


def image_config(http: httpx.Client, repository: str, digest: str) -> dict[str, Any]:
    manifest = http.get(f"/v2/{repository}/manifests/{digest}").json()
    if "manifests" in manifest:
        manifest = http.get(f"/v2/{repository}/manifests/{manifest['manifests'][0]['digest']}").json()
    return dict(http.get(f"/v2/{repository}/blobs/{manifest['config']['digest']}").json()["config"])


def test_pod_is_pinned_by_digest_with_the_image_user(served: Cluster) -> None:
    build = served.builds["team/app"]
    with served.service.client(served.reader_token) as http:  # readers may fetch
        pod = http.get(pod_url("team/app"), params={"cpu": "500m", "memory": "1Gi"}).json()
        config = image_config(served.service.client(), "team/app", build["image_digest"])
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"{host(served)}/team/app@{build['image_digest']}"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "envyard-pull-team"}]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}
    assert config["User"] == "0:0"  # the worker's images say root: sessions then run as 1000, never as root
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000 and pod["spec"]["securityContext"]["runAsNonRoot"]
    prefix = config["Labels"]["dev.envyard.env-prefix"]
    assert {"name": "CONDA_PREFIX", "value": prefix} in container["env"]
    with served.service.client() as http:
        again = http.get(pod_url("team/app"), params={"build": build["id"], "cpu": "500m", "memory": "1Gi"}).json()
    assert again == pod


def test_gpu_only_for_the_cuda_build(served: Cluster) -> None:
    with served.service.client() as http:
        pod = http.get(pod_url("team/gpu"), params={"gpu": 1}).json()
        refused = http.get(pod_url("team/app"), params={"gpu": 1})
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert refused.status_code == 400
    problem = refused.json()
    assert "is not a CUDA build" in problem["detail"] and problem["field"] == "gpu"


def test_job_from_a_run_manifest_and_its_errors(served: Cluster) -> None:
    run = run_manifest(served, "team/app")
    with served.service.client() as http:
        job = http.get(pod_url("team/app", "job"), params={"manifest": run}).json()
        missing = http.get(pod_url("team/app", "job"))
        bad = http.get(pod_url("team/app", "job"), params={"manifest": run.replace('"/data/train"', '"rel"')})
        other = http.get(pod_url("team/gpu", "job"), params={"manifest": run})
        pinned = http.get(pod_url("team/app", "job"), params={"manifest": run, "build": 99999})
        unknown = http.get(pod_url("team/app"), params={"build": 99999})
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["name"] == "fetch-data"
    assert spec["containers"][0]["command"] == ["python", "-c", "print(1)"]
    assert job["metadata"]["labels"]["envyard.dev/build"] == str(served.builds["team/app"]["id"])
    assert missing.status_code == 422 and "none given" in missing.json()["detail"]
    assert bad.status_code == 422 and bad.json()["field"] == "data.0.mount"
    assert other.status_code == 409 and "is for team/app, not team/gpu" in other.json()["detail"]
    assert pinned.status_code == 409 and pinned.json()["field"] == "build"
    assert unknown.status_code == 404 and "has no build 99999" in unknown.json()["detail"]


def test_hidden_namespaces_are_not_found_for_a_reader(served: Cluster) -> None:
    with served.service.client(served.reader_token) as http:
        hidden = http.get(pod_url("secret/hidden"))
        secret = http.post("/api/v1/namespaces/team/kubernetes/pull-secret")
    assert hidden.status_code == 404
    assert secret.status_code == 403  # a pull Secret makes a token: the admin role on the namespace


def test_pull_secret_token_pulls_its_namespace_only(served: Cluster) -> None:
    with served.service.client() as http:
        secret = http.post("/api/v1/namespaces/team/kubernetes/pull-secret", params={"kube_namespace": "s"}).json()
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    user, _, password = base64.b64decode(config["auths"][host(served)]["auth"]).decode().partition(":")
    auth = httpx.BasicAuth(user, password)
    app, hidden = served.builds["team/app"], served.builds["secret/hidden"]
    with httpx.Client(base_url=served.service.url, auth=auth) as registry:
        pulled = registry.get(f"/v2/team/app/manifests/{app['image_digest']}")
        denied = registry.get(f"/v2/secret/hidden/manifests/{hidden['image_digest']}")
    assert pulled.status_code == 200
    assert denied.status_code in (403, 404)
    with served.service.client(password) as api:
        write = api.post("/api/v1/environments/team/app/builds", json={"spec": "name: x\ndependencies: [busybox]\n"})
        assert write.status_code == 403
    with served.service.client() as http:
        token = http.get("/api/v1/namespaces/team/grants").json()
    assert any(g["token_id"] == int(secret["metadata"]["labels"]["envyard.dev/token-id"]) and g["role"] == "viewer"
               and g["token_role"] == "reader" for g in token)


def test_archive_variant_init_command_unpacks_for_real(served: Cluster, tmp_path: Path) -> None:
    with served.service.client() as http:
        pod = http.get(pod_url("team/app"), params={"variant": "archive", "base_image": "busybox:1.36"}).json()
        volume = http.get(pod_url("team/app"), params={"variant": "image-volume"}).json()
        secret = http.post("/api/v1/namespaces/team/kubernetes/pull-secret").json()
    for obj in (pod, volume):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert volume["spec"]["volumes"][0]["image"]["reference"] == \
        f"{host(served)}/team/app@{served.builds['team/app']['image_digest']}"
    unpack = pod["spec"]["initContainers"][0]
    token = base64.b64decode(secret["data"]["token"]).decode()
    dest = tmp_path / "opt-env"
    command = [a if a != unpack["command"][-1] else str(dest) for a in unpack["command"][1:]]
    env = {e["name"]: e.get("value") for e in unpack["env"]}
    done = subprocess.run([*ENVYARD, "--api", env["ENVYARD_API_URL"], "--token", token, *command],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (dest / "share" / "reloc" / "prefix.txt").read_text() == f"{dest}\n"
    tampered = [*command[:4], "0" * 64, *command[5:]]
    refused = subprocess.run([*ENVYARD, "--api", env["ENVYARD_API_URL"], "--token", token, *tampered],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3 and "expected 000000" in refused.stderr  # a hash mismatch


def test_cli_prints_and_applies_the_same_objects(served: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "run.json"
    manifest.write_text(run_manifest(served, "team/gpu"))
    base = [*ENVYARD, "--api", served.service.url, "--token", served.service.token, "k8s"]
    with served.service.client() as http:
        expected_pod = http.get(pod_url("team/gpu"), params={"gpu": 1, "kube_namespace": "lab"}).json()
        expected_job = http.get(pod_url("team/gpu", "job"), params={"manifest": manifest.read_text()}).json()
    with recording_api_server() as (url, received):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "cluster-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u", "namespace": "batch"}}]}))
        pod = subprocess.run([*base, "pod", "team/gpu", "--gpu", "1", "-n", "lab", "-o", "json", "--apply",
                              "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=60)
        job = subprocess.run([*base, "job", str(manifest), "--apply", "--kubeconfig", str(kubeconfig)],
                             capture_output=True, text=True, timeout=60)
        refused = subprocess.run([*base, "pod", "team/app", "--gpu", "1"], capture_output=True, text=True, timeout=60)
    assert pod.returncode == 0, pod.stderr
    assert job.returncode == 0, job.stderr
    assert json.loads(pod.stdout) == expected_pod
    assert yaml.safe_load(job.stdout) == expected_job
    assert [(r["method"], r["path"]) for r in received] == [("POST", "/api/v1/namespaces/lab/pods"),
                                                            ("POST", "/apis/batch/v1/namespaces/batch/jobs")]
    assert received[0]["body"] == expected_pod and received[1]["body"] == expected_job
    assert all(r["authorization"] == "Bearer cluster-token" for r in received)
    assert "created pod/team-gpu-" in pod.stderr and "in namespace lab" in pod.stderr
    assert refused.returncode != 0 and "is not a CUDA build" in refused.stderr


def test_apply_failures_are_clear(served: Cluster, tmp_path: Path) -> None:
    base = [*ENVYARD, "--api", served.service.url, "--token", served.service.token, "k8s", "pod", "team/app"]
    with recording_api_server(status=409) as (url, received):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "c", "cluster": {"server": url}}], "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}]}))
        exists = subprocess.run([*base, "--apply", "--kubeconfig", str(kubeconfig)], capture_output=True, text=True,
                                timeout=60)
    assert exists.returncode == 9 and "HTTP 409" in exists.stderr and "already exists" in exists.stderr
    assert received[0]["path"] == "/api/v1/namespaces/default/pods"
    missing = subprocess.run([*base, "--apply", "--kubeconfig", str(tmp_path / "absent")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode != 0, missing.stderr
    assert "cannot load the kubeconfig" in missing.stderr


def test_long_manifests_are_posted(served: Cluster) -> None:
    run = json.loads(run_manifest(served, "team/app"))
    run["env"] = {f"SETTING_{i}": "x" * 40 for i in range(120)}  # ~6 KB: too long for a URL
    with served.service.client(served.reader_token) as http:  # readers may ask: nothing is stored
        job = http.post(pod_url("team/app", "job"), json=run)
        pod = http.post(pod_url("team/app"), json=run, params={"cpu": "1"})
        in_url = http.get(pod_url("team/app", "job"), params={"manifest": json.dumps(run)})
        both = http.post(pod_url("team/app", "job"), json=run, params={"manifest": "{}"})
    assert job.status_code == 200, job.text
    kubernetes_validate.validate(job.json(), K8S_VERSION, strict=True)
    env = job.json()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SETTING_119", "value": "x" * 40} in env
    assert pod.status_code == 200 and pod.json()["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1"}
    assert in_url.status_code == 422
    assert both.status_code == 422 and "both in the body and in ?manifest=" in both.json()["detail"]
