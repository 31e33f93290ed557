"""Smaller defects of issue 11, item 8, against a real server: spec file names that are no file names, the modes of
what the server writes, a full disk during a build, and the reaper's note when a worker vanishes."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envyard.worker.client import ApiClient
from tests.service.conftest import create_environment, spec_text


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_spec_file_name_that_is_no_file_name_is_a_422_naming_the_field(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        for filename in ("..", ".", "...", "a/b.yml", "", "env\x00.yml", "/", "a\\b.yml", "x" * 201):
            reply = http.post("/api/v1/environments", json={"namespace": "names", "name": "env",
                                                            "spec": spec_text(["e2e-env"]), "filename": filename})
            assert reply.status_code == 422, (filename, reply.text)
            assert reply.headers["content-type"] == "application/problem+json"
            assert reply.json()["field"].rsplit(".", 1)[-1] == "filename", (filename, reply.json())
        assert http.get("/api/v1/namespaces/names").status_code == 404  # nothing half-created
        assert create_environment(http, "names", "env", ["e2e-env"])["status"] == "queued"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_data_dir_is_private_whatever_the_umask(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_GC_INTERVAL_SECONDS": "0"})
    with service.client() as http:
        build = create_environment(http, "modes", "env", ["e2e-env"])
    client = ApiClient(service.url, service.token, retry_seconds=5)
    job = client.claim("w", None, 0)
    assert job is not None and job.build_id == build["id"]
    payload = b"private bytes\n"
    blob = service.log_dir / "blob"
    blob.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert client.upload(build["id"], job.lease_id, blob, digest, len(payload)) is True
    data = service.data_dir
    assert _mode(data) == 0o700
    directories = [p for p in data.rglob("*") if p.is_dir()]
    assert directories and {str(p.relative_to(data)): _mode(p) for p in directories if _mode(p) != 0o700} == {}
    files = {p.name: _mode(p) for p in data.rglob("*") if p.is_file()}
    for name in ("envyard.db", "envyard.db-wal", "envyard.db-shm", "admin-token", "secret-key", digest):
        assert files.get(name) == 0o600, (name, files)
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we run as root in the test environment); unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root and mount(8)): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_full_disk_is_reported_as_disk_full_and_the_log_is_kept(start: Any, small_filesystem: Path) -> None:
    service = start("--workers", "0")
    service.start_worker("tiny", "--work-dir", str(small_filesystem))
    with service.client() as http:
        build = create_environment(http, "full", "env", ["e2e-env"])
        done = service.wait_for(build["id"], timeout=180)
        log = http.get(f"/api/v1/builds/{build['id']}/logs").text
    assert done["status"] == "failed", log
    error = done["error"]
    assert error["code"] == "disk-full", (error, log)
    assert str(small_filesystem) in error["message"] and "free there now" in error["message"], error
    assert "bug in envyard" not in error["message"] + (error["hint"] or "")
    assert "envyard: worker tiny runs build" in log and "no space left on device" in log.lower(), log


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_reaper_names_the_worker_and_stage_a_requeued_build_had(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_LEASE_SECONDS": "1"})
    client = ApiClient(service.url, service.token, retry_seconds=5)
    with service.client() as http:
        build = create_environment(http, "reap", "env", ["e2e-env"])
        job = client.claim("vanishing-worker", None, 0)
        assert job is not None
        client.stage(build["id"], job.lease_id, "installing")
        deadline = time.monotonic() + 30
        while "stopped responding" not in (log := http.get(f"/api/v1/builds/{build['id']}/logs").text):
            assert time.monotonic() < deadline, log
            time.sleep(0.2)
    assert "worker vanishing-worker stopped responding during installing; requeued" in log, log
    assert "None" not in log and "during queued" not in log



@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_full_data_disk_keeps_the_log(start: Any, tmp_path: Path) -> None:
    """The embedded worker's work root on the filesystem of the database (one small disk): the build fills it."""
    disk = tmp_path / "svc"
    disk.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root and mount(8)): {mounted.stderr.strip()}")
    try:
        service = start("--workers", "1", env={"ENVYARD_WORK_ROOT": str(disk / "work")})
        with service.client() as http:
            build = create_environment(http, "full", "env", ["e2e-env"])
            done = service.wait_for(build["id"], timeout=180)
            log = http.get(f"/api/v1/builds/{build['id']}/logs").text
        service.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert done["status"] == "failed" and done["error"]["code"] == "disk-full", (done, log)
    assert str(disk) in done["error"]["message"] and "free there now" in done["error"]["message"]
    assert "runs build" in log and "no space left on device" in log.lower(), log  # the database kept the log


def _children(pid: int) -> set[int]:
    found = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat_file.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_server_leaves_no_spec_check_process(start: Any) -> None:
    """The processes that parse submitted specs die with a SIGKILLed server (PR_SET_PDEATHSIG), not orphaned."""
    service = start("--workers", "0")
    with service.client() as http:
        create_environment(http, "checks", "env", ["e2e-env"])  # starts the spec-check pool
    checkers = {pid for pid in _children(service.process.pid)
                if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")}
    assert checkers, "the submission started no spec-check process"
    service.process.kill()
    service.process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in checkers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in checkers if _alive(pid)], "spec-check processes outlived the server"
