"""One real envyard server (uvicorn on loopback, one in-process worker) with completed builds from the test
channels: ``team/app`` (the e2e environment), ``team/gpu`` (with the ``cuda-version`` marker: a CUDA build) and
``secret/hidden``; and a reader token that may read namespace ``team`` only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envyard.builder.localchannel import build_channel
from tests.packages import build_e2e_channel
from tests.service import conftest as service_fixtures
from tests.service.conftest import Service, start_service

HERE = Path(__file__).parent
e2e_alias = service_fixtures.e2e_alias  # the service tests' session fixtures, shared
service_env = service_fixtures.service_env


@dataclass
class Cluster:
    service: Service
    builds: dict[str, dict[str, Any]]
    reader_token: str  # a reader token with the viewer role on namespace "team" only


def _spec(name: str, deps: list[str]) -> str:
    return f"name: {name}\nchannels:\n  - e2e\n  - gpu\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Cluster]:
    channels = tmp_path_factory.mktemp("k8s-channels")
    build_e2e_channel(channels)
    build_channel([HERE / "fixtures" / "gpu.yaml"], channels / "gpu")
    env = {**service_env, "ENVYARD_CHANNEL_ALIAS": f"file://{channels}/"}
    service = start_service(tmp_path_factory.mktemp("k8s-service"), env, "--workers", "1")
    try:
        builds: dict[str, dict[str, Any]] = {}
        with service.client() as http:
            for namespace, name, deps in (("team", "app", ["e2e-env"]), ("team", "gpu", ["e2e-env", "cuda-version"]),
                                          ("secret", "hidden", ["busybox"])):
                reply = http.post("/api/v1/environments", json={"namespace": namespace, "name": name,
                                                                "spec": _spec(name, deps)})
                assert reply.status_code in (200, 201), reply.text
                builds[f"{namespace}/{name}"] = reply.json()
            for key, build in builds.items():
                done = service.wait_for(build["id"], timeout=180)
                assert done["status"] == "completed", http.get(f"/api/v1/builds/{build['id']}/logs").text
                builds[key] = done
            created = http.post("/api/v1/tokens", json={"name": "team reader", "role": "reader"}).json()
            granted = http.put(f"/api/v1/namespaces/team/grants/{created['id']}", json={"role": "viewer"})
            assert granted.status_code == 200, granted.text
        yield Cluster(service, builds, created["token"])
    finally:
        service.stop()
