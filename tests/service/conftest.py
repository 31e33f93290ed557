"""A real envyard server (uvicorn on loopback) and real workers, as subprocesses stopped by PID."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands import ENVYARD
from tests.packages import build_e2e_channel
from tests.servers import free_port, moto_s3, postgres_available, postgres_server, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "canceled"}


def spec_text(deps: list[str], name: str = "svc") -> str:
    return f"name: {name}\nchannels:\n  - e2e\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps)


def create_environment(http: httpx.Client, namespace: str, name: str, deps: list[str],
                       **extra: Any) -> dict[str, Any]:
    """POST /api/v1/environments with a spec of ``deps`` from the e2e channel; the build it returns."""
    response = http.post("/api/v1/environments", json={"namespace": namespace, "name": name,
                                                       "spec": spec_text(deps, name), **extra})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


@dataclass
class Service:
    """A running ``envyard serve`` and the workers started against it."""

    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=60.0, follow_redirects=True)

    def start_worker(self, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{name}.log").open("ab")
        process = subprocess.Popen(
            [*ENVYARD, "worker", "--api", self.url, "--token", self.token, "--name", name,
             "--work-dir", str(self.log_dir / f"work-{name}"), *extra],
            stdout=log, stderr=log, env={**self.env, **(env or {})}, cwd=REPO,
        )
        self.workers.append(process)
        return process

    def wait_for(self, build_id: int, statuses: set[str] = TERMINAL, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while True:
                build = http.get(f"/api/v1/builds/{build_id}").json()
                if build["status"] in statuses:
                    return dict(build)
                if time.monotonic() > deadline:
                    raise AssertionError(f"build {build_id} still {build['status']} after {timeout} s:\n"
                                         + http.get(f"/api/v1/builds/{build_id}/logs").text)
                time.sleep(0.1)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                stop_process(worker, timeout=15)
        self.workers.clear()
        if self.process.poll() is None:
            stop_process(self.process, timeout=15)


def start_service(tmp: Path, env: dict[str, str], *args: str, port: int | None = None) -> Service:
    port = port or free_port()
    data_dir = tmp / "data"
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "serve.log").open("ab")
    process = subprocess.Popen(
        [*ENVYARD, "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning", *args],
        stdout=log, stderr=log, env=env, cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            wait_for_port(port, timeout=0.2)
            break
        except TimeoutError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise AssertionError((log_dir / "serve.log").read_text()) from None
    token = (data_dir / "admin-token").read_text().strip()
    return Service(f"http://127.0.0.1:{port}", token, data_dir, process, env, log_dir)


@pytest.fixture(scope="session")
def e2e_alias(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("service-channels")
    build_e2e_channel(root)
    return f"file://{root}/"


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, e2e_alias: str) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("service-cache")
    return {**os.environ, "ENVYARD_CACHE_DIR": str(cache), "ENVYARD_CHANNEL_ALIAS": e2e_alias,
            "PYTHONPATH": str(REPO), "ENVYARD_LEASE_SECONDS": "6", "ENVYARD_HEARTBEAT_SECONDS": "1",
            "ENVYARD_RETRY_BACKOFF_SECONDS": "0.5"}


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def _new_postgres_database(url: str, name: str) -> str:
    import psycopg

    base = url.replace("postgresql+psycopg://", "postgresql://")
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """A fresh database URL per test: SQLite (embedded default) and PostgreSQL (Debian's, on loopback)."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("postgres_url")
    return _new_postgres_database(url, f"t{os.getpid()}_{time.monotonic_ns()}")


@pytest.fixture
def start(tmp_path: Path, service_env: dict[str, str], database: str) -> Iterator[Any]:
    """start(*serve_args, env=...) -> Service on this test's database; everything is stopped afterwards."""
    started: list[Service] = []

    def _start(*args: str, env: dict[str, str] | None = None, port: int | None = None,
               name: str = "svc") -> Service:
        extra = ("--database", database) if database else ()
        service = start_service(tmp_path / name, {**service_env, **(env or {})}, *extra, *args, port=port)
        started.append(service)
        return service

    yield _start
    for service in started:
        service.stop()
