"""deploy/: every kustomize overlay rendered with ``kubectl kustomize`` and each document validated with
kubernetes-validate --strict; the key fields of each overlay; deploy/compose.yaml's images, settings and commands.
Every ``ENVYARD_*`` variable the manifests set must be a real setting, and every envyard command line they run
must parse with envyard's own CLI."""

from __future__ import annotations

import subprocess
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from envyard.api.settings import ServiceSettings
from envyard.cli import cli as envyard_cli
from envyard.worker.settings import WorkerSettings
from tests.service.conftest import REPO

DEPLOY = REPO / "deploy"
OVERLAYS = ["embedded", "scale"]
IMAGE = "envyard/envyard:0.1.0"  # deploy/README.md: the name and tag deploy/image/ builds
VERSIONS = ["1.33", ".".join(latest_version().split(".")[:2])]


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "kubernetes" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def check_command(argv: list[str]) -> None:
    """``argv`` is an envyard command line envyard's CLI parses (unknown options and bad values fail)."""
    assert argv[0] == "envyard", argv
    context = envyard_cli.make_context("envyard", list(argv[1:2]), resilient_parsing=True)
    command = envyard_cli.get_command(context, argv[1])
    assert command is not None, f"no command envyard {argv[1]}"
    command.make_context(f"envyard {argv[1]}", list(argv[2:]))


def check_settings(env: dict[str, Any], settings: type[WorkerSettings]) -> None:
    for name in env:
        if name.startswith("ENVYARD_"):
            assert name[len("ENVYARD_"):].lower() in settings.model_fields, f"{name} is no {settings.__name__} field"


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"].get("namespace") == "envyard", doc["metadata"]
    deployment = by_kind(docs)[("Deployment", "envyard")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    check_command(container["command"])
    env = container_env(container)
    check_settings(env, ServiceSettings)
    assert env["ENVYARD_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "envyard", "key": "secret-key"}


def test_embedded_is_one_pod_on_sqlite_and_a_pvc() -> None:
    kinds = by_kind(render("embedded"))
    deployment = kinds[("Deployment", "envyard")]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "ENVYARD_DATABASE_URL" not in container_env(container)  # SQLite in the data directory
    assert container["command"][container["command"].index("--build-backend") + 1] == "inprocess"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "envyard-data"}}
    assert ("PersistentVolumeClaim", "envyard-data") in kinds
    assert not any(kind in ("HorizontalPodAutoscaler", "Role", "Ingress") for kind, _ in kinds)


def test_scale_runs_replicas_and_builds_as_jobs() -> None:
    kinds = by_kind(render("scale"))
    deployment = kinds[("Deployment", "envyard")]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "envyard" and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["command"][container["command"].index("--build-backend") + 1] == "kubernetes"
    env = container_env(container)
    for name, key in [("ENVYARD_DATABASE_URL", "database-url"), ("ENVYARD_S3_ACCESS_KEY", "s3-access-key"),
                      ("ENVYARD_S3_SECRET_KEY", "s3-secret-key"), ("ENVYARD_S3_ENDPOINT_URL", "s3-endpoint-url")]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "envyard", "key": key}, name
    assert env["ENVYARD_STORAGE_URL"]["value"].startswith("s3://")
    assert env["ENVYARD_KUBERNETES_WORKER_IMAGE"]["value"] == IMAGE
    pvc = env["ENVYARD_KUBERNETES_CACHE_PVC"]["value"]
    assert kinds[("PersistentVolumeClaim", pvc)]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert ("ServiceAccount", env["ENVYARD_KUBERNETES_SERVICE_ACCOUNT"]["value"]) in kinds
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = kinds[("PodDisruptionBudget", "envyard")]
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["minAvailable"] == 1
    hpa = kinds[("HorizontalPodAutoscaler", "envyard")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "envyard" and hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    role = kinds[("Role", "envyard-build-launcher")]
    assert {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("batch", "jobs"), ("", "pods"), ("", "pods/log"), ("", "secrets")}
    secrets_rule = next(rule for rule in role["rules"] if "secrets" in rule["resources"])
    assert secrets_rule["verbs"] == ["create"]
    binding = kinds[("RoleBinding", "envyard-build-launcher")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "envyard", "namespace": "envyard"}]
    assert not any(kind in ("ClusterRole", "ClusterRoleBinding") for kind, _ in kinds)
    ingress = kinds[("Ingress", "envyard")]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["name"] == "envyard"
    policies = {name: doc["spec"] for (kind, name), doc in kinds.items() if kind == "NetworkPolicy"}
    assert policies["envyard-build"]["ingress"] == [] and policies["envyard-api"]["podSelector"]["matchLabels"] == \
        selector


def test_compose_names_real_images_settings_and_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "postgres", "minio"}
    assert services["api"]["image"] == services["worker"]["image"] == IMAGE
    for name in ("postgres", "minio"):
        image = services[name]["image"]
        assert image.count("/") >= 1 and ":" in image.rsplit("/", 1)[1] and not image.endswith(":latest"), image
    check_settings(services["api"]["environment"], ServiceSettings)
    check_settings(services["worker"]["environment"], WorkerSettings)
    for name in ("api", "worker"):
        check_command(services[name]["command"])
    env = services["api"]["environment"]
    user, password = services["postgres"]["environment"]["POSTGRES_USER"], \
        services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["ENVYARD_DATABASE_URL"].startswith(f"postgresql://{user}:{password}@postgres:5432/")
    assert env["ENVYARD_S3_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert env["ENVYARD_S3_SECRET_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert services["worker"]["environment"]["ENVYARD_API_URL"] == "http://api:8080"


def test_check_command_refuses_what_envyard_refuses() -> None:
    """The command check is envyard's own parser: a flag it does not take fails."""
    with pytest.raises(click.UsageError):
        check_command(["envyard", "serve", "--no-such-flag"])
    with pytest.raises(click.BadParameter):
        check_command(["envyard", "serve", "--build-backend", "nomad"])
    with pytest.raises(AssertionError, match="ENVYARD_NOT_A_SETTING"):
        check_settings({"ENVYARD_NOT_A_SETTING": "1"}, ServiceSettings)


def test_the_image_the_manifests_use_is_the_one_readme_documents() -> None:
    assert IMAGE in (DEPLOY / "README.md").read_text()
