"""The generated build Job and Secret, field by field, validated with kubernetes-validate --strict; and
``envyard serve --build-backend kubernetes`` without a cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from envyard.api.build_backends.jobs import BuildTarget, build_job, node_arch
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import ConfigError
from tests.build_backends.conftest import validate
from tests.commands import ENVYARD

SETTINGS = ServiceSettings(
    _env_file=None, api_url="http://envyard.envyard.svc:8080", kubernetes_cache_pvc="envyard-cache",
    kubernetes_build_resources={"*": {"cpu": "1", "memory": "2Gi"}, "ml": {"cpu": "4", "memory": "16Gi"}},
    kubernetes_job_ttl_seconds=600, kubernetes_service_account="envyard-build",
    kubernetes_worker_env={"ENVYARD_CHANNEL_ALIAS": "https://conda.example/"},
)


def _job(target: BuildTarget, settings: ServiceSettings = SETTINGS) -> tuple[dict[str, Any], dict[str, Any]]:
    job, secret = build_job(target, settings, "header.payload.signature")
    return validate(job), validate(secret)


def test_job_fields() -> None:
    job, secret = _job(BuildTarget(42, 3, "ml", ["linux-aarch64", "linux-64"]))
    assert job["metadata"]["name"] == secret["metadata"]["name"] == "envyard-build-42-3"
    labels = job["metadata"]["labels"]
    assert labels["envyard.dev/build-id"] == "42" and labels["envyard.dev/attempt"] == "3"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "envyard-build"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"][:3] == ["envyard", "worker", "--once"]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["ENVYARD_TOKEN"] == {"name": "ENVYARD_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "envyard-build-42-3", "key": "token"}}}
    assert env["ENVYARD_API_URL"]["value"] == "http://envyard.envyard.svc:8080"
    assert env["ENVYARD_CHANNEL_ALIAS"]["value"] == "https://conda.example/"
    assert "header.payload.signature" not in str(job)  # the token is in the Secret only
    assert secret["stringData"] == {"token": "header.payload.signature"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "envyard-cache"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/var/cache/envyard", "/var/lib/envyard/work"}
    assert env["ENVYARD_CACHE_DIR"]["value"] == "/var/cache/envyard"


def test_per_platform_node_selector_and_default_resources() -> None:
    assert node_arch(["linux-64"]) == "amd64" and node_arch(["noarch", "linux-aarch64"]) == "arm64"
    assert node_arch(["osx-arm64"]) == "amd64"  # solved only: any Linux node
    job, _ = _job(BuildTarget(1, 1, "team", ["linux-64"]))
    assert job["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    no_pvc = SETTINGS.model_copy(update={"kubernetes_cache_pvc": None})
    job, _ = _job(BuildTarget(1, 1, "team", ["linux-64"]), no_pvc)
    assert {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}["cache"] == {"name": "cache",
                                                                                           "emptyDir": {}}


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="api_url"):
        build_job(BuildTarget(1, 1, "t", []), SETTINGS.model_copy(update={"api_url": None}), "t")
    bad = SETTINGS.model_copy(update={"kubernetes_build_resources": {"*": {"gpu": "1"}}})
    with pytest.raises(ConfigError, match="gpu") as caught:
        build_job(BuildTarget(1, 1, "t", []), bad, "t")
    assert caught.value.field == "kubernetes_build_resources"


def test_serve_without_a_cluster_fails_clearly(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    run = subprocess.run([*ENVYARD, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
                          "--build-backend", "kubernetes"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "no Kubernetes cluster is configured" in run.stderr and "KUBECONFIG" in run.stderr
