"""Issue 11, items 3-5 against a real ``envyard serve``: a submitted spec cannot make the server read its files
(pip ``-r``), reach loopback/link-local/private addresses or server paths (channels, ``channel_alias``, pip
indexes, find-links), or spend minutes parsing; each attack is a 422 and the listener records no request."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands import ENVYARD
from tests.listener import Listener, recording_listener
from tests.service.conftest import REPO, Service, start_service

FAST = {"image": False, "archive": False, "sbom": None}


@pytest.fixture
def serve(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Any]:
    """serve(*args, env=...) -> an ``envyard serve`` on SQLite (the checks here do not depend on the database)."""
    started: list[Service] = []

    def _serve(*args: str, env: dict[str, str] | None = None, name: str = "svc") -> Service:
        service = start_service(tmp_path / name, {**service_env, **(env or {})}, *args)
        started.append(service)
        return service

    yield _serve
    for service in started:
        service.stop()


@pytest.fixture
def listener(e2e_alias: str) -> Iterator[Listener]:
    """A loopback HTTP server serving the e2e channel (``/e2e``) and recording every request."""
    with recording_listener(Path(e2e_alias.removeprefix("file://"))) as server:
        yield server


def submit(http: httpx.Client, spec: str, name: str = "x", **extra: Any) -> httpx.Response:
    return http.post("/api/v1/environments", json={"namespace": "ssrf", "name": name, "spec": spec, **extra})


def pip_spec(*lines: str) -> str:
    return ("channels: [e2e]\ndependencies:\n  - e2e-env\n  - pip:\n"
            + "".join(f"    - {json.dumps(line)}\n" for line in lines))


def attacks(url: str, port: int) -> list[tuple[str, dict[str, Any], str, int | None]]:
    """(spec, extra body, field, line) of each way a spec names the listener or another forbidden place."""
    channel = "channels:\n  - '{}'\ndependencies: [e2e-env]\n"
    return [
        (channel.format(f"{url}/e2e"), {}, "channels", 2),
        (channel.format("e2e"), {"options": {**FAST, "channel_alias": f"{url}/"}}, "options.channel_alias", None),
        (pip_spec(f"--index-url {url}/simple", "requests"), {}, "pip", 5),
        (pip_spec(f"--extra-index-url {url}/simple", "requests"), {}, "pip", 5),
        (pip_spec(f"-f {url}/links/", "requests"), {}, "pip", 5),
        (pip_spec(f"requests @ {url}/requests-2.32.3-py3-none-any.whl"), {}, "pip", 5),
        (f"channels: [e2e]\ndependencies: ['{url}/e2e::e2e-env']\n", {}, "dependencies", 2),
        (channel.format("https://169.254.169.254/latest"), {}, "channels", 2),
        (channel.format(f"http://[::ffff:127.0.0.1]:{port}/e2e"), {}, "channels", 2),
        (channel.format(f"https://[::ffff:127.0.0.1]:{port}/e2e"), {}, "channels", 2),
        (channel.format(f"https://localhost:{port}/e2e"), {}, "channels", 2),
        (channel.format("file:///etc"), {}, "channels", 2),
        (channel.format("/proc/self"), {}, "channels", 2),
        (channel.format("e2e"), {"options": {**FAST, "channel_alias": "file:///etc/"}}, "options.channel_alias",
         None),
    ]


def test_ssrf_to_a_loopback_listener_is_refused_at_submission(serve: Any, listener: Listener) -> None:
    service = serve()
    with service.client() as http:
        for spec, extra, field, line in attacks(listener.url, listener.port):
            reply = submit(http, spec, **extra)
            assert reply.status_code == 422, (spec, extra, reply.text)
            problem = reply.json()
            assert problem["type"].endswith("/forbidden-url") and problem["field"] == field, (spec, problem)
            assert problem.get("line") == line and "allowed_url_prefixes" in problem["hint"], (spec, problem)
        assert http.get("/api/v1/builds").json()["items"] == []
    time.sleep(1.0)  # the in-process worker would have claimed a build by now
    assert listener.requests == []


def test_allow_listed_prefix_is_fetched(serve: Any, listener: Listener) -> None:
    """The admin's allow-list (ENVYARD_ALLOWED_URL_PREFIXES) lets a build use the listener as its channel."""
    service = serve(env={"ENVYARD_ALLOWED_URL_PREFIXES": json.dumps([f"{listener.url}/"])})
    with service.client() as http:
        for spec, alias in [(f"channels: [{listener.url}/e2e]\ndependencies: [e2e-env]\n", None),
                            ("channels: [e2e]\ndependencies: [e2e-env]\n", f"{listener.url}/")]:
            listener.requests.clear()
            reply = submit(http, spec, name="ok-alias" if alias else "ok-url",
                           options={**FAST, "channel_alias": alias})
            assert reply.status_code == 201, reply.text
            build = service.wait_for(reply.json()["id"])
            assert build["status"] == "completed", build
            assert any(path.startswith("/e2e/") for path in listener.requests), listener.requests
        still_refused = submit(http, "channels: [https://169.254.169.254/x]\ndependencies: [e2e-env]\n")
        assert still_refused.status_code == 422


def test_worker_checks_again_before_fetching(serve: Any, listener: Listener) -> None:
    """Defence in depth: a server that accepts the prefix, a worker configured without it: the build fails with
    ``forbidden-url`` and the listener records nothing."""
    service = serve("--workers", "0", env={"ENVYARD_ALLOWED_URL_PREFIXES": json.dumps([f"{listener.url}/"])})
    service.start_worker("strict", env={"ENVYARD_ALLOWED_URL_PREFIXES": "[]"})
    with service.client() as http:
        reply = submit(http, f"channels: [{listener.url}/e2e]\ndependencies: [e2e-env]\n", options=FAST)
        assert reply.status_code == 201, reply.text
        build = service.wait_for(reply.json()["id"])
    assert build["status"] == "failed" and build["error"]["code"] == "forbidden-url", build
    assert "allowed_url_prefixes" in build["error"]["hint"]
    assert listener.requests == []


def test_pip_includes_never_read_the_servers_files(serve: Any) -> None:
    """The attack of issue 11 item 3: ``-r`` of the server's secret key, /etc/passwd, /proc/self/environ."""
    service = serve(env={"AWS_SECRET_ACCESS_KEY": "aws-secret-from-the-environment"})
    secret = (service.data_dir / "secret-key").read_text().strip()
    admin = (service.data_dir / "admin-token").read_text().strip()
    targets = [str(service.data_dir / "secret-key"), str(service.data_dir / "admin-token"), "/etc/passwd",
               "/proc/self/environ", os.path.relpath(service.data_dir / "secret-key", REPO)]
    with service.client() as http:
        for target in targets:
            for spec, filename, line in [(pip_spec(f"-r {target}"), "environment.yml", 5),
                                         (f"requests\n-r {target}\n", "requirements.txt", 2),
                                         (pip_spec(f"-c {target}"), "environment.yml", 5),
                                         (pip_spec(f"-e {target}"), "environment.yml", 5)]:
                reply = submit(http, spec, filename=filename)
                assert reply.status_code == 422, reply.text
                assert reply.json()["line"] == line and reply.json()["file"] == filename
                for leaked in (secret, admin, "root:x:0:0", "aws-secret-from-the-environment", "PATH="):
                    assert leaked not in reply.text, (target, reply.text)
        refused = submit(http, pip_spec(f"-r {targets[0]}")).json()
        assert refused["type"].endswith("/spec-include-refused") and "envyard env create" in refused["hint"]


def envyard(service: Service, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, "--api", service.url, "--token", service.token, *args],
                          cwd=cwd, capture_output=True, text=True, env=service.env, timeout=120)


def test_cli_inlines_requirement_files_before_submitting(serve: Any, tmp_path: Path) -> None:
    service = serve("--workers", "0")
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("# pinned\nrequests==2.32.3\n-r more.txt\n")
    (project / "more.txt").write_text("rich>=13  # [linux]\n")
    (project / "environment.yml").write_text(
        "channels: [e2e]\ndependencies:\n  - e2e-env\n  - pip:\n    - -r requirements.txt  # [linux]\n")
    result = envyard(service, "env", "create", "ssrf/cli", "-f", "environment.yml", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)
    with service.client() as http:
        submitted = http.get(f"/api/v1/builds/{build['id']}/spec").text
    assert "-r " not in submitted
    assert '    - "requests==2.32.3"  # [linux]\n    - "rich>=13"  # [linux]\n' in submitted


def test_parser_limits_are_422s_in_milliseconds(serve: Any, tmp_path: Path) -> None:
    """Issue 11 item 5: 40k ``variables`` keys (130-149 s before) and 10k-deep nesting (a 500 RecursionError)."""
    service = serve("--workers", "0")
    keys = "name: big\nchannels: [e2e]\ndependencies: [e2e-env]\nvariables:\n" + "".join(
        f"  V{i:05d}: '{i}'\n" for i in range(40_000))
    deep = "name: deep\nchannels: [e2e]\ndependencies: [e2e-env]\nvariables: " + "[" * 10_000 + "]" * 10_000 + "\n"
    with service.client() as http:
        # specs are checked in a pool of processes started by the first submission: start it, untimed
        assert submit(http, "name: warm\nchannels: [e2e]\ndependencies: [e2e-env]\nvariables: [\n").status_code == 422
        for spec, limit, line in [(keys, "max_mapping_keys", 4 + 10_001), (deep, "max_depth", 4)]:
            started = time.perf_counter()
            reply = submit(http, spec)
            elapsed = time.perf_counter() - started
            assert reply.status_code == 422, reply.text[:500]
            problem = reply.json()
            assert problem["type"].endswith("/spec-limit-exceeded") and problem["line"] == line
            assert problem["details"]["limit"] == limit and elapsed < 2.0, (problem, elapsed)  # parse: ~50 ms
        lock = "version: 1\nmetadata: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\npackage: []\n"
        reply = submit(http, lock, filename="conda-lock.yml")
        assert reply.status_code == 422 and reply.json()["type"].endswith("/spec-limit-exceeded"), reply.text[:500]
    (tmp_path / "deep.yml").write_text(deep)
    for args in (["lock", "deep.yml", "-o", "out"], ["env", "create", "ssrf/deep", "-f", "deep.yml"]):
        result = envyard(service, *args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: deep.yml:4: the YAML nests deeper than 64 levels"), lines[0]
        assert "Traceback" not in result.stderr
