"""``?target=``: a Pod for a cluster that pulls from a registry the build was published to (a real distribution
registry on loopback), pinned by the digest pushed there, without envyard's pull Secret."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import kubernetes_validate
import pytest

from tests.kubernetes.conftest import Cluster
from tests.servers import docker_registry, docker_registry_executable


def test_pod_from_a_publication_target(served: Cluster, tmp_path: Path) -> None:
    if docker_registry_executable() is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    build = served.builds["team/app"]
    path = "/api/v1/namespaces/team/environments/app/kubernetes/pod"
    with docker_registry(tmp_path) as host, served.service.client() as http:
        created = http.post("/api/v1/namespaces/team/registry-targets",
                            json={"name": "mirror", "url": f"http://{host}", "enabled": False})
        assert created.status_code == 201, created.text
        unpublished = http.get(path, params={"target": "mirror"})
        assert unpublished.status_code == 404 and "not published to registry target 'mirror'" in \
            unpublished.json()["detail"]
        requested = http.post(f"/api/v1/builds/{build['id']}/publications", json={"target": "mirror"})
        assert requested.status_code == 202, requested.text
        deadline = time.monotonic() + 90
        while (publication := http.get(f"/api/v1/builds/{build['id']}/publications").json()[0])["status"] != "pushed":
            assert publication["status"] != "failed" and time.monotonic() < deadline, publication
            time.sleep(0.2)
        pod = http.get(path, params={"target": "mirror", "variant": "image-volume"}).json()
        plain = http.get(path, params={"target": "mirror"}).json()
        pushed = httpx.head(f"http://{host}/v2/team/app/manifests/{publication['digest']}",
                            headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                                               "application/vnd.oci.image.manifest.v1+json"})
    assert pushed.status_code == 200
    kubernetes_validate.validate(pod, "1.34.0", strict=True)
    assert pod["spec"]["volumes"][0]["image"]["reference"] == f"{host}/team/app@{publication['digest']}"
    assert plain["spec"]["containers"][0]["image"] == f"{host}/team/app@{publication['digest']}"
    assert "imagePullSecrets" not in plain["spec"]  # envyard's pull token means nothing to that registry
