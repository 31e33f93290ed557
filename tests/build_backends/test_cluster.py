"""KubernetesCluster over HTTP, against a loopback stand-in of the API server's Job and Secret endpoints (no
Kubernetes API server runs here): the requests the official client sends, 409 on a second Job of one name, the
token Secret owned by its Job, a Job already gone."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client as k8s

from envyard.api.build_backends.cluster import KubernetesCluster
from envyard.api.build_backends.jobs import JOB_SELECTOR, BuildTarget, build_job
from envyard.api.settings import ServiceSettings
from tests.build_backends.conftest import validate

JOBS = "/apis/batch/v1/namespaces/builds/jobs"
SECRETS = "/api/v1/namespaces/builds/secrets"


class ApiServer(BaseHTTPRequestHandler):
    jobs: dict[str, dict[str, Any]] = {}
    secrets: dict[str, dict[str, Any]] = {}
    requests: list[tuple[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(("POST", self.path))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        store = self.jobs if self.path == JOBS else self.secrets if self.path == SECRETS else None
        if store is None:
            return self._answer(404, {"kind": "Status", "code": 404})
        name = body["metadata"]["name"]
        if name in store:
            return self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
        body["metadata"]["uid"] = str(uuid.uuid4())
        store[name] = body
        return self._answer(201, body)

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(("GET", self.path))
        url = urlparse(self.path)
        selector = parse_qs(url.query).get("labelSelector", [""])[0]
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        items = [job for job in self.jobs.values()
                 if all(job["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        self._answer(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items})

    def do_DELETE(self) -> None:  # noqa: N802
        self.requests.append(("DELETE", self.path))
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        if self.jobs.pop(name, None) is None:
            return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        self._answer(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def cluster() -> Iterator[KubernetesCluster]:
    ApiServer.jobs, ApiServer.secrets, ApiServer.requests = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    yield KubernetesCluster(k8s.ApiClient(configuration), "builds")
    server.shutdown()


def test_create_list_delete_over_http(cluster: KubernetesCluster) -> None:
    settings = ServiceSettings(_env_file=None, api_url="http://envyard:8080")
    job, secret = build_job(BuildTarget(5, 1, "team", ["linux-64"]), settings, "tok")
    assert cluster.create_job(job, secret) is True
    stored_job, stored_secret = ApiServer.jobs["envyard-build-5-1"], ApiServer.secrets["envyard-build-5-1"]
    validate(stored_job)
    validate(stored_secret)
    assert stored_job["spec"]["backoffLimit"] == 0
    assert stored_secret["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": "envyard-build-5-1", "uid": stored_job["metadata"]["uid"],
        "blockOwnerDeletion": False}]
    assert stored_secret["stringData"] == {"token": "tok"}
    again, again_secret = build_job(BuildTarget(5, 1, "team", ["linux-64"]), settings, "other")
    assert cluster.create_job(again, again_secret) is False  # 409: the attempt has its Job
    assert ApiServer.secrets["envyard-build-5-1"]["stringData"] == {"token": "tok"}
    listed = cluster.list_jobs(JOB_SELECTOR)
    assert [j.metadata.name for j in listed] == ["envyard-build-5-1"]
    assert cluster.list_jobs("app.kubernetes.io/component=api") == []
    cluster.delete_job("envyard-build-5-1")
    cluster.delete_job("envyard-build-5-1")  # gone already: no error
    assert cluster.list_jobs(JOB_SELECTOR) == []
    assert ("DELETE", f"{JOBS}/envyard-build-5-1?propagationPolicy=Background") in ApiServer.requests
