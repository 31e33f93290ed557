"""The build sandbox (worker.sandbox) and the work root sweep (worker.runner), with real processes.

A command run the way the worker runs a build must not read the data directory or see the server's secrets,
in every mode this machine supports; a build directory is swept only once the worker that locked it is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envyard.api.settings import ServiceSettings
from envyard.worker.runner import LOCK_SUFFIX, _try_lock, sweep_work_root
from envyard.worker.sandbox import Sandbox, child_environment, make_sandbox, sandbox_for

SECRETS = {"ENVYARD_SECRET_KEY": "sk-not-for-builds", "ENVYARD_TOKEN": "tok-not-for-builds",
           "ENVYARD_DATABASE_URL": "postgresql://u:pw-not-for-builds@db/x", "ENVYARD_S3_SECRET_KEY": "s3-secret",
           "ENVYARD_S3_ACCESS_KEY": "s3-access", "AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_ACCESS_KEY_ID": "aws-id",
           "GITHUB_TOKEN": "gh-token", "SOME_PASSWORD": "pw"}
PROBE = 'cat "$1/admin-token"; echo "rc=$?"; ls "$1" >/dev/null 2>&1 && echo listed; env'


def _modes() -> list[str]:
    modes = ["none"]
    if make_sandbox(None).mode == "bwrap":
        modes.append("bwrap")
    if os.geteuid() == 0:
        modes.append("uid")
    return modes


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ServiceSettings, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin-token").write_text("ADMIN-TOKEN-CONTENT\n")
    (data / "admin-token").chmod(0o600)
    (data / "secret-key").write_text("SECRET-KEY-CONTENT\n")
    settings = ServiceSettings(data_dir=data, cache_dir=tmp_path / "cache", _env_file=None)  # type: ignore[call-arg]
    job = tmp_path / "work" / "build-1-attempt-1"
    (job / "tmp").mkdir(parents=True)
    tmp_path.chmod(0o755)
    return settings, job


def _run(sandbox: Sandbox, settings: ServiceSettings, job: Path) -> subprocess.CompletedProcess[str]:
    env = child_environment(settings, {**os.environ, **SECRETS}, job)
    sandbox.prepare(job)
    return subprocess.run(sandbox.command(["/bin/sh", "-c", PROBE, "probe", str(settings.data_dir)], job),
                          env=env, cwd=job, capture_output=True, text=True, close_fds=True, timeout=60,
                          **sandbox.popen_options())


@pytest.mark.parametrize("mode", ["bwrap", "uid"])
def test_a_sandboxed_command_cannot_read_the_data_dir_nor_see_secrets(setup: tuple[ServiceSettings, Path],
                                                                      mode: str) -> None:
    settings, job = setup
    if mode not in _modes():
        pytest.fail(f"the {mode} sandbox does not work on this machine (bwrap installed, tests run as root)")
    sandbox = sandbox_for(settings.model_copy(update={"build_sandbox": mode}), os.environ)
    assert sandbox.mode == mode
    result = _run(sandbox, settings, job)
    assert "ADMIN-TOKEN-CONTENT" not in result.stdout + result.stderr
    assert "rc=1" in result.stdout
    if mode == "bwrap":  # the directory does not exist inside at all
        assert "No such file or directory" in result.stderr and "listed" not in result.stdout
    else:
        assert "Permission denied" in result.stderr
    for name, value in SECRETS.items():
        assert name not in result.stdout and value not in result.stdout
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and not line.startswith("rc"))
    assert env["HOME"] == str(job) and env["TMPDIR"] == str(job / "tmp")
    assert env["ENVYARD_CACHE_DIR"] == str(settings.cache_dir)


def test_without_a_sandbox_only_the_environment_is_cleaned(setup: tuple[ServiceSettings, Path]) -> None:
    settings, job = setup
    result = _run(Sandbox("none"), settings, job)
    assert "ADMIN-TOKEN-CONTENT" in result.stdout  # what the sandbox modes are for
    assert not any(value in result.stdout for value in SECRETS.values())


def test_bwrap_masks_private_paths_under_a_bound_directory(tmp_path: Path) -> None:
    if "bwrap" not in _modes():
        pytest.fail("bwrap does not work on this machine")
    shared = tmp_path / "repo"
    (shared / "envyard-data").mkdir(parents=True)
    (shared / "envyard-data" / "admin-token").write_text("ADMIN")
    (shared / "token.txt").write_text("TOKEN")
    (shared / "code.py").write_text("CODE")
    sandbox = make_sandbox("bwrap", read_only=[shared],
                           private=[shared / "envyard-data", shared / "token.txt"])
    job = tmp_path / "job"
    job.mkdir()
    out = subprocess.run(sandbox.command(["/bin/sh", "-c", f"cat {shared}/code.py {shared}/token.txt; "
                                          f"ls {shared}/envyard-data"], job),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "CODE"  # the masked file reads empty, the masked directory lists nothing


def test_an_explicit_mode_that_cannot_work_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from envyard.builder.errors import ConfigError

    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap on PATH
    with pytest.raises(ConfigError, match="bwrap"):
        make_sandbox("bwrap")
    assert make_sandbox(None).mode == ("uid" if os.geteuid() == 0 else "none")


def _hold_lock(lock: Path) -> subprocess.Popen[str]:
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_sweep_removes_only_directories_no_live_worker_holds(tmp_path: Path) -> None:
    live, dead, unlocked = (tmp_path / f"build-{n}-attempt-1-abcd" for n in (1, 2, 3))
    for directory in (live, dead, unlocked):
        (directory / "tmp").mkdir(parents=True)
        (directory / "tmp" / "spool").write_bytes(b"x" * 1000)
    (tmp_path / "unrelated").mkdir()
    holder = _hold_lock(Path(str(live) + LOCK_SUFFIX))
    dying = _hold_lock(Path(str(dead) + LOCK_SUFFIX))
    try:
        dying.kill()
        dying.wait()
        assert sweep_work_root(tmp_path) == 2
        assert live.is_dir() and not dead.exists() and not unlocked.exists() and (tmp_path / "unrelated").is_dir()
        assert not Path(str(dead) + LOCK_SUFFIX).exists() and Path(str(live) + LOCK_SUFFIX).exists()
        assert _try_lock(Path(str(live) + LOCK_SUFFIX), create=False) is None
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while sweep_work_root(tmp_path) != 1:
        assert time.monotonic() < deadline
    assert not live.exists() and not Path(str(live) + LOCK_SUFFIX).exists()
    shutil.rmtree(tmp_path / "unrelated")
