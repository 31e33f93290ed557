"""deploy/jupyterhub/jupyterhub_config.py against a real KubeSpawner and a real envyard server: the snippet's
``profile_list`` callable fetches /api/v1/jupyterhub/profiles with the user's token, KubeSpawner's own
``load_user_options``/``_load_profile`` apply the chosen environment, and the pod KubeSpawner would create runs the
digest-pinned image (or mounts it as an image volume) and is valid for Kubernetes."""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any

import kubernetes_asyncio.config.kube_config
import kubernetes_validate
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner

from tests.kubernetes.conftest import Cluster

SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "jupyterhub" / "jupyterhub_config.py"
K8S_VERSION = "1.34.0"


class HubUser:
    """The part of jupyterhub.user.User KubeSpawner and the snippet use (as kubespawner's tests stub it)."""

    def __init__(self, name: str, auth_state: dict[str, Any] | None) -> None:
        self.name = self.escaped_name = name
        self.id = 7
        self.url = f"/user/{name}/"
        self._auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self._auth_state


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KubeSpawner loads a kubeconfig when created; nothing here reaches the (absent) cluster."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "hub",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "hub", "context": {"cluster": "c", "user": "u", "namespace": "jhub"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(path))  # read by kubernetes_asyncio at import: set its default too
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def load_snippet(served: Cluster, monkeypatch: pytest.MonkeyPatch, variant: str = "image",
                 hub_token: str | None = None) -> Any:
    monkeypatch.setenv("ENVYARD_URL", served.service.url)
    monkeypatch.setenv("ENVYARD_PROFILE_VARIANT", variant)
    if hub_token:
        monkeypatch.setenv("ENVYARD_HUB_TOKEN", hub_token)
    else:
        monkeypatch.delenv("ENVYARD_HUB_TOKEN", raising=False)
    return runpy.run_path(str(SNIPPET))["envyard_profile_list"]


def spawner_for(profile_list: Any, token: str | None, options: dict[str, str]) -> KubeSpawner:
    spawner = KubeSpawner(_mock=True, user=HubUser("ada", {"envyard_token": token} if token else None))
    spawner.profile_list = profile_list
    spawner.user_options = options
    return spawner


async def pod_manifest(spawner: KubeSpawner) -> dict[str, Any]:
    return dict(ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest()))


async def spawned(profile_list: Any, token: str | None, options: dict[str, str]) -> KubeSpawner:
    """A KubeSpawner (made inside the event loop, as JupyterHub does) after load_user_options."""
    spawner = spawner_for(profile_list, token, options)
    await spawner.load_user_options()
    return spawner


def test_chosen_environment_runs_its_pinned_image(served: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    profile_list = load_snippet(served, monkeypatch)

    async def scenario() -> tuple[KubeSpawner, dict[str, Any]]:
        spawner = await spawned(profile_list, served.service.token, {"profile": "team", "environment": "gpu"})
        return spawner, await pod_manifest(spawner)

    spawner, pod = asyncio.run(scenario())
    host = served.service.url.removeprefix("http://")
    expected = f"{host}/team/gpu@{served.builds['team/gpu']['image_digest']}"
    assert spawner.image == expected
    assert spawner.image_pull_secrets == ["envyard-pull-team"]
    assert pod["spec"]["containers"][0]["image"] == expected
    assert pod["spec"]["imagePullSecrets"] == [{"name": "envyard-pull-team"}]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_image_volume_variant_mounts_the_environment(served: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    profile_list = load_snippet(served, monkeypatch, variant="image-volume")

    async def scenario() -> tuple[str, KubeSpawner, dict[str, Any]]:
        default_image = spawner_for(profile_list, None, {}).image
        spawner = await spawned(profile_list, served.service.token, {"profile": "team", "environment": "app"})
        return default_image, spawner, await pod_manifest(spawner)

    default_image, spawner, pod = asyncio.run(scenario())
    host = served.service.url.removeprefix("http://")
    reference = f"{host}/team/app@{served.builds['team/app']['image_digest']}"
    assert spawner.image == default_image  # the hub's notebook image, with the environment mounted into it
    assert spawner.volumes == [{"name": "envyard-env", "image": {"reference": reference,
                                                                 "pullPolicy": "IfNotPresent"}}]
    assert {"name": "envyard-env", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}} \
        in pod["spec"]["volumes"]
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "envyard-env")
    assert mount["readOnly"] is True and mount["mountPath"] == "/opt/env"
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_a_user_sees_only_namespaces_they_may_read(served: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    profile_list = load_snippet(served, monkeypatch)

    async def scenario() -> tuple[list[Any], list[Any]]:
        return (await profile_list(spawner_for(profile_list, served.service.token, {})),
                await profile_list(spawner_for(profile_list, served.reader_token, {})))

    admin, reader = asyncio.run(scenario())
    assert [p["slug"] for p in admin] == ["secret", "team"]
    assert [p["slug"] for p in reader] == ["team"]
    assert sorted(reader[0]["profile_options"]["environment"]["choices"]) == ["app", "gpu"]
    with pytest.raises(ValueError, match="No such profile: secret"):
        asyncio.run(spawned(profile_list, served.reader_token, {"profile": "secret", "environment": "hidden"}))


def test_hub_token_fallback_and_its_refusal(served: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    profile_list = load_snippet(served, monkeypatch, hub_token=served.reader_token)
    spawner = asyncio.run(spawned(profile_list, None, {"profile": "team", "environment": "app"}))
    assert spawner.image.endswith(served.builds["team/app"]["image_digest"])
    monkeypatch.setenv("ENVYARD_REQUIRE_USER_TOKEN", "1")
    with pytest.raises(RuntimeError, match="has no envyard token in auth_state"):
        asyncio.run(spawned(profile_list, None, {}))
    monkeypatch.delenv("ENVYARD_REQUIRE_USER_TOKEN")
    monkeypatch.delenv("ENVYARD_HUB_TOKEN")
    with pytest.raises(RuntimeError, match="no envyard token"):
        asyncio.run(spawned(profile_list, None, {}))


def test_unknown_tokens_are_refused(served: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from tornado.httpclient import HTTPClientError

    profile_list = load_snippet(served, monkeypatch)
    with pytest.raises(HTTPClientError, match="401"):
        asyncio.run(spawned(profile_list, "ey_not-a-token", {}))
