"""``envyard env ...`` / ``envyard build ...`` as subprocesses against a real server: output, JSON, token lookup,
one-line errors and their exit codes, following a build to its end, downloads checked against their digest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envyard.cli.follow import SseEvent, iter_sse
from envyard.worker.client import ApiClient
from envyard.worker.protocol import ArtifactEntry, Completion, Job
from tests.commands import ENVYARD
from tests.service.conftest import Service, spec_text, start_service

CLIENT_VARIABLES = ("ENVYARD_TOKEN", "ENVYARD_API_URL", "ENVYARD_DATA_DIR")


def cli_env(service_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in service_env.items() if k not in CLIENT_VARIABLES}


def envyard(svc: Service, *args: str, token: str | None = "", cwd: Path | None = None, ok: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``envyard --api URL [--token T] ARGS`` (the service's admin token unless ``token`` says otherwise)."""
    token_args = ["--token", token or svc.token] if token is not None else []
    result = subprocess.run([*ENVYARD, "--api", svc.url, *token_args, *args],
                            capture_output=True, text=True, cwd=cwd or svc.log_dir, timeout=120,
                            env={**cli_env(svc.env), **(env or {})})
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert result.returncode == exit_code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def write_spec(directory: Path, deps: list[str], name: str = "svc") -> Path:
    path = directory / f"{name}-{len(deps)}-environment.yml"
    path.write_text(spec_text(deps, name))
    return path


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Service]:
    service = start_service(tmp_path_factory.mktemp("cli-client"), service_env, "--workers", "0")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def fresh(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Service]:
    """A server of the test's own, whose builds the test completes through the worker protocol."""
    service = start_service(tmp_path, service_env, "--workers", "0")
    try:
        yield service
    finally:
        service.stop()


def test_sse_parser_joins_data_lines_and_keeps_ids() -> None:
    lines = ["id: 7", "event: log", "data: one", "data: ", "data:  two", "", ": keepalive", "",
             "event: status", 'data: {"status": "solving"}', "", "event: end", "data: {}", ""]
    assert list(iter_sse(lines)) == [SseEvent("log", "one\n\n two", "7"),
                                     SseEvent("status", '{"status": "solving"}', "7"), SseEvent("end", "{}", "7")]


def test_create_prints_the_build_and_reuses_an_identical_spec(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "create")
    first = envyard(svc, "env", "create", "team/create", "-f", str(spec))
    assert first.stdout.startswith("build ") and first.stdout.split()[2] == "queued", first.stdout
    build_id = int(first.stdout.split()[1])
    again = as_json(envyard(svc, "env", "create", "team/create", "-f", str(spec), "--json"))
    assert (again["id"], again["reused"], again["status"], again["environment"]) == (build_id, True, "queued",
                                                                                     "team/create")
    human = envyard(svc, "env", "create", "team/create", "-f", str(spec))
    assert human.stdout.startswith(f"build {build_id} reused (identical spec)")
    relocked = as_json(envyard(svc, "env", "create", "team/create", "-f", str(spec), "--relock", "--no-image",
                               "--sbom", "none", "--json"))
    assert relocked["id"] != build_id and not relocked["reused"]
    assert relocked["options"] == {"image": False, "archive": True, "sbom": None, "channel_alias": None}


def test_env_list_json_and_namespace_filter(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "listed")
    envyard(svc, "env", "create", "alpha/listed", "-f", str(spec))
    envyard(svc, "env", "create", "beta/listed", "-f", str(spec))
    everything = as_json(envyard(svc, "env", "list", "--all", "--limit", "1", "--json"))
    names = {f"{e['namespace']}/{e['name']}" for e in everything["items"]}
    assert {"alpha/listed", "beta/listed"} <= names and everything["next_cursor"] is None
    only_alpha = as_json(envyard(svc, "env", "list", "--namespace", "alpha", "--json"))
    assert [f"{e['namespace']}/{e['name']}" for e in only_alpha["items"]] == ["alpha/listed"]
    table = envyard(svc, "env", "list", "--name", "listed").stdout
    assert "alpha/listed" in table and "beta/listed" in table
    shown = as_json(envyard(svc, "env", "show", "alpha/listed", "--json"))
    assert shown["name"] == "listed" and shown["current_build"] is None


def test_build_show_cancel_and_logs(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "cancel")
    build = as_json(envyard(svc, "env", "create", "team/cancel", "-f", str(spec), "--json"))
    shown = as_json(envyard(svc, "build", "show", str(build["id"]), "--json"))
    assert (shown["id"], shown["status"], shown["artifacts"]) == (build["id"], "queued", [])
    assert shown["timestamps"]["queued_at"]
    assert envyard(svc, "build", "cancel", str(build["id"])).stdout.strip() == f"build {build['id']} canceled"
    assert as_json(envyard(svc, "build", "show", str(build["id"]), "--json"))["status"] == "canceled"
    assert "canceled" in envyard(svc, "build", "show", str(build["id"])).stdout
    assert envyard(svc, "build", "logs", str(build["id"])).stdout == ""
    assert envyard(svc, "build", "logs", str(build["id"]), "-f").returncode == 0  # ends: the build is over
    again = envyard(svc, "build", "cancel", str(build["id"]), ok=False)
    assert "already canceled" in one_line_error(again, 7)
    listed = as_json(envyard(svc, "build", "list", "--env", "team/cancel", "--status", "canceled", "--json"))
    assert [b["id"] for b in listed["items"]] == [build["id"]]


def test_wait_ends_with_exit_10_when_the_build_is_canceled(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "waited")
    process = subprocess.Popen([*ENVYARD, "--api", svc.url, "--token", svc.token, "env",
                                "create", "team/waited", "-f", str(spec), "--wait", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(svc.env),
                               cwd=tmp_path)
    try:
        with svc.client() as http:
            deadline = time.monotonic() + 30
            while not (items := http.get("/api/v1/builds", params={"environment": "team/waited"}).json()
                       .get("items")):  # a 404 problem until the environment exists
                assert time.monotonic() < deadline and process.poll() is None, process.communicate()
                time.sleep(0.1)
            time.sleep(1.0)  # the CLI is following the build's event stream now
            assert process.poll() is None
            assert http.post(f"/api/v1/builds/{items[0]['id']}/cancel").status_code == 200
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 10, stdout + stderr
    assert json.loads(stdout)["status"] == "canceled"  # the build JSON, nothing else on stdout
    lines = stderr.strip().splitlines()
    assert lines[0].startswith(f"build {items[0]['id']}: queued")
    assert lines[-1].startswith(f"error: build {items[0]['id']} of team/waited was canceled")


def test_token_missing_wrong_or_taken_from_the_data_dir(svc: Service, tmp_path: Path) -> None:
    missing = envyard(svc, "env", "list", token=None, cwd=tmp_path, ok=False)
    line = one_line_error(missing, 8)
    assert "no API token" in line and "--token" in line and "ENVYARD_TOKEN" in line and "--data-dir" in line
    missing_json = envyard(svc, "env", "list", "--json", token=None, cwd=tmp_path, ok=False)
    assert as_json(missing_json)["error"]["type"].endswith("/unauthenticated")
    wrong = envyard(svc, "env", "list", token="ey_not-a-token", ok=False)
    assert "token" in one_line_error(wrong, 8)
    from_dir = envyard(svc, "--data-dir", str(svc.data_dir), "env", "list", "--json", token=None, cwd=tmp_path)
    assert "items" in as_json(from_dir)
    from_env = envyard(svc, "env", "list", "--json", token=None, cwd=tmp_path,
                       env={"ENVYARD_DATA_DIR": str(svc.data_dir)})
    assert "items" in as_json(from_env)
    from_token_env = envyard(svc, "env", "list", "--json", token=None, cwd=tmp_path, env={"ENVYARD_TOKEN": svc.token})
    assert "items" in as_json(from_token_env)


def test_one_line_errors_and_exit_codes(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "errors")
    bad_name = envyard(svc, "env", "create", "no-slash", "-f", str(spec), ok=False)
    assert "'no-slash' is not NAMESPACE/NAME" in one_line_error(bad_name, 1)
    assert "--env: 'a/b/c' is not NAMESPACE/NAME" in one_line_error(
        envyard(svc, "build", "list", "--env", "a/b/c", ok=False), 1)
    unreadable = envyard(svc, "env", "create", "team/errors", "-f", str(tmp_path / "absent.yml"), ok=False)
    assert "absent.yml" in one_line_error(unreadable, 1)
    build = as_json(envyard(svc, "env", "create", "team/errors", "-f", str(spec), "--json"))
    rollback = envyard(svc, "env", "rollback", "team/errors", str(build["id"]), ok=False)
    assert "not completed" in one_line_error(rollback, 7)
    assert "build 9999 does not exist" in one_line_error(envyard(svc, "build", "show", "9999", ok=False), 6)
    assert one_line_error(envyard(svc, "env", "show", "team/absent", ok=False), 6)
    problem = as_json(envyard(svc, "build", "show", "9999", "--json", ok=False))
    assert problem["error"]["status"] == 404
    no_artifact = envyard(svc, "build", "download", str(build["id"]), "conda-lock.yml", ok=False)
    assert "has no artifact 'conda-lock.yml'" in one_line_error(no_artifact, 6)
    down = subprocess.run([*ENVYARD, "--api", "http://127.0.0.1:9", "--token", "x", "env",
                           "list"], capture_output=True, text=True, env=cli_env(svc.env), cwd=tmp_path, timeout=60)
    assert "is the envyard server running at http://127.0.0.1:9" in one_line_error(down, 9)


def complete(fresh: Service, build_id: int, packages: dict[str, str], payload: bytes) -> None:
    """Run build ``build_id`` through the worker protocol: one artifact (conda-lock.yml) and ``packages``."""
    client = ApiClient(fresh.url, fresh.token, retry_seconds=5)
    try:
        job = client.claim("test-worker", None, 0)
        assert job is not None and job.build_id == build_id
        client.append_logs(build_id, job.lease_id, "solving\nsolved\n")
        tmp = fresh.log_dir / f"artifact-{build_id}"
        tmp.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        client.upload(build_id, job.lease_id, tmp, digest, len(payload))
        client.complete(build_id, job.lease_id, Completion.model_validate({
            "artifacts": [{"kind": "conda-lock", "name": "conda-lock.yml", "platform": None, "sha256": digest,
                           "size": len(payload), "media_type": "application/yaml"}],
            "packages": [{"platform": "linux-64", "manager": "conda", "name": n, "version": v, "build": "0"}
                         for n, v in packages.items()]}))
    finally:
        client.close()


def test_diff_rollback_download_and_failed_wait(fresh: Service, tmp_path: Path) -> None:
    first = as_json(envyard(fresh, "env", "create", "team/app", "-f", str(write_spec(tmp_path, ["a"])), "--json"))
    complete(fresh, first["id"], {"busybox": "1.36.1", "zlib": "1.3"}, b"lock one\n" * 1000)
    second = as_json(envyard(fresh, "env", "create", "team/app", "-f", str(write_spec(tmp_path, ["a", "b"])),
                             "--json"))
    complete(fresh, second["id"], {"busybox": "1.37.0", "openssl": "3.3.0"}, b"lock two\n" * 1000)

    diff = as_json(envyard(fresh, "build", "diff", str(first["id"]), str(second["id"]), "--json"))
    assert [c["name"] for c in diff["added"]] == ["openssl"] and [c["name"] for c in diff["removed"]] == ["zlib"]
    assert [(c["name"], c["old"], c["new"]) for c in diff["changed"]] == [("busybox", "1.36.1 0", "1.37.0 0")]
    assert "~ busybox 1.36.1 0 -> 1.37.0 0 (conda)" in envyard(fresh, "build", "diff", str(first["id"]),
                                                              str(second["id"])).stdout

    assert envyard(fresh, "env", "rollback", "team/app", str(first["id"])).stdout.strip() == \
        f"team/app now at build {first['id']}"
    assert as_json(envyard(fresh, "env", "show", "team/app", "--json"))["current_build"]["id"] == first["id"]
    with_zlib = as_json(envyard(fresh, "env", "list", "--package", "zlib", "--json"))
    assert [e["name"] for e in with_zlib["items"]] == ["app"]
    assert "app" in envyard(fresh, "env", "list").stdout

    out = tmp_path / "downloads"
    out.mkdir()
    got = as_json(envyard(fresh, "build", "download", str(first["id"]), "conda-lock.yml", "-o", str(out), "--json"))
    assert (out / "conda-lock.yml").read_bytes() == b"lock one\n" * 1000
    assert got["digest"] == "sha256:" + hashlib.sha256(b"lock one\n" * 1000).hexdigest()
    shown = as_json(envyard(fresh, "build", "show", str(first["id"]), "--json"))
    assert [a["name"] for a in shown["artifacts"]] == ["conda-lock.yml"]
    blob = next(p for p in fresh.data_dir.rglob(got["digest"].removeprefix("sha256:")) if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"lock 0ne\n" * 1000)  # same size, other bytes
    corrupt = envyard(fresh, "build", "download", str(first["id"]), "conda-lock.yml", "-o", str(tmp_path / "x.yml"),
                      ok=False)
    assert "has sha256" in one_line_error(corrupt, 3) and not (tmp_path / "x.yml").exists()

    spec = write_spec(tmp_path, ["a", "b", "c"])
    process = subprocess.Popen([*ENVYARD, "--api", fresh.url, "--token", fresh.token, "env",
                                "create", "team/app", "-f", str(spec), "--wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=cli_env(fresh.env), cwd=tmp_path)
    client = ApiClient(fresh.url, fresh.token, retry_seconds=5)
    try:
        deadline = time.monotonic() + 30
        while (job := client.claim("test-worker", None, 0)) is None:
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
        client.stage(job.build_id, job.lease_id, "solving")
        client.append_logs(job.build_id, job.lease_id, "looking for c\n")
        time.sleep(1.0)
        client.fail(job.build_id, job.lease_id, "unsatisfiable", "solving", "nothing provides c",
                    "check the package name")
        stdout, stderr = process.communicate(timeout=30)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, stdout + stderr
    assert stdout.strip() == f"build {job.build_id} queued"
    lines = stderr.strip().splitlines()
    assert any(line.startswith(f"build {job.build_id}: solving") for line in lines), stderr
    assert lines[-1] == (f"error: build {job.build_id} failed during solving: nothing provides c "
                         "(hint: check the package name)")


def test_wait_builds_end_to_end_with_a_worker(tmp_path: Path, service_env: dict[str, str]) -> None:
    service = start_service(tmp_path, service_env, "--workers", "1")
    try:
        spec = tmp_path / "environment.yml"
        spec.write_text(spec_text(["e2e-env"], "e2e"))
        waited = envyard(service, "env", "create", "team/e2e", "-f", str(spec), "--no-image", "--wait", "--json",
                         ok=False)
        assert waited.returncode == 0, waited.stdout + waited.stderr + envyard(service, "build", "logs", "1").stdout
        build = as_json(waited)
        assert build["status"] == "completed" and build["package_count"] > 0
        out = envyard(service, "build", "download", str(build["id"]), "conda-lock.yml", "-o", str(tmp_path))
        assert "sha256 verified" in out.stdout and (tmp_path / "conda-lock.yml").read_text().strip()
        assert os.path.getsize(tmp_path / "conda-lock.yml") > 0
    finally:
        service.stop()



def upload(client: ApiClient, job: Job, directory: Path, files: dict[str, tuple[str, bytes]]
           ) -> list[ArtifactEntry]:
    """Upload ``files`` (name -> (kind, bytes)) for the claimed ``job``; their artifact entries."""
    entries = []
    for name, (kind, payload) in files.items():
        path = directory / f"upload-{job.build_id}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        path.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        client.upload(job.build_id, job.lease_id, path, digest, len(payload))
        entries.append(ArtifactEntry(kind=kind, name=name, platform=None, sha256=digest, size=len(payload),
                                     media_type="application/octet-stream"))
    return entries


def test_resubmitting_after_rollback_makes_the_reused_build_current(fresh: Service, tmp_path: Path) -> None:
    """After a rollback to build 1, submitting build 2's spec again reuses build 2 and makes it current (said so
    in the output), and ``--wait --json`` reports the reuse."""
    one_spec, two_spec = write_spec(tmp_path, ["a"]), write_spec(tmp_path, ["a", "b"])
    one = as_json(envyard(fresh, "env", "create", "team/roll", "-f", str(one_spec), "--json"))
    complete(fresh, one["id"], {"zlib": "1.3"}, b"lock one\n")
    two = as_json(envyard(fresh, "env", "create", "team/roll", "-f", str(two_spec), "--json"))
    complete(fresh, two["id"], {"zlib": "1.3.1"}, b"lock two\n")
    envyard(fresh, "env", "rollback", "team/roll", str(one["id"]))
    assert as_json(envyard(fresh, "env", "show", "team/roll", "--json"))["current_build"]["id"] == one["id"]

    again = envyard(fresh, "env", "create", "team/roll", "-f", str(two_spec))
    assert again.stdout.strip() == (f"build {two['id']} reused (identical spec): completed, now the current build "
                                    "of team/roll")
    assert as_json(envyard(fresh, "env", "show", "team/roll", "--json"))["current_build"]["id"] == two["id"]

    envyard(fresh, "env", "rollback", "team/roll", str(one["id"]))
    waited = as_json(envyard(fresh, "env", "create", "team/roll", "-f", str(two_spec), "--wait", "--json"))
    assert (waited["id"], waited["reused"], waited["current"], waited["status"]) == (two["id"], True, True,
                                                                                     "completed")
    queued = envyard(fresh, "env", "create", "team/roll", "-f", str(write_spec(tmp_path, ["c"])))
    queued_id = int(queued.stdout.split()[1])
    still_queued = envyard(fresh, "env", "create", "team/roll", "-f", str(write_spec(tmp_path, ["c"])))
    assert still_queued.stdout.strip() == (f"build {queued_id} reused (identical spec): queued (it becomes the "
                                           "current build of team/roll when it completes)")
    assert as_json(envyard(fresh, "env", "show", "team/roll", "--json"))["current_build"]["id"] == two["id"]


def test_build_ids_are_not_reused_after_an_environment_is_deleted(fresh: Service, tmp_path: Path) -> None:
    """SQLite: the ids of a deleted environment's builds (the newest ones) never go to later builds."""
    spec = write_spec(tmp_path, ["a"])
    kept = as_json(envyard(fresh, "env", "create", "team/kept", "-f", str(spec), "--json"))
    doomed = as_json(envyard(fresh, "env", "create", "team/doomed", "-f", str(spec), "--json"))
    envyard(fresh, "build", "cancel", str(doomed["id"]))
    envyard(fresh, "env", "delete", "team/doomed", "--yes")
    after = as_json(envyard(fresh, "env", "create", "team/later", "-f", str(spec), "--json"))
    assert after["id"] > doomed["id"] > kept["id"]
    with fresh.client() as http:
        assert http.get(f"/api/v1/builds/{doomed['id']}").status_code == 404


def test_env_delete_asks_or_needs_yes(svc: Service, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, ["e2e-env"], "deleted")
    build = as_json(envyard(svc, "env", "create", "team/deleted", "-f", str(spec), "--json"))
    envyard(svc, "build", "cancel", str(build["id"]))
    refused = subprocess.run([*ENVYARD, "--api", svc.url, "--token", svc.token, "env",
                              "delete", "team/deleted"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             env=cli_env(svc.env), cwd=tmp_path, timeout=60)
    assert refused.returncode == 64, refused.stdout + refused.stderr  # a usage error
    assert "refusing to delete team/deleted without --yes: stdin is not a terminal" in refused.stderr
    assert as_json(envyard(svc, "env", "show", "team/deleted", "--json"))["name"] == "deleted"

    import pty

    for answer, deleted in ((b"n\n", False), (b"y\n", True)):  # a terminal gets a prompt
        leader, follower = pty.openpty()
        try:
            process = subprocess.Popen([*ENVYARD, "--api", svc.url, "--token", svc.token,
                                        "env", "delete", "team/deleted"], stdin=follower, stdout=subprocess.PIPE,
                                       stderr=follower, text=True, env=cli_env(svc.env), cwd=tmp_path)
            os.write(leader, answer)
            stdout, _ = process.communicate(timeout=60)
            prompt = os.read(leader, 4096).decode()
        finally:
            os.close(leader)
            os.close(follower)
        assert "Delete team/deleted and the records of all its builds? [y/N]" in prompt
        assert (process.returncode == 0) is deleted and (stdout.strip() == "deleted team/deleted") is deleted
    assert envyard(svc, "env", "show", "team/deleted", ok=False).returncode == 6


def test_failed_build_keeps_its_lock_files_as_partial_artifacts(fresh: Service, tmp_path: Path) -> None:
    """A build failing after the solve keeps the lock files its worker sent: listed as partial, downloadable,
    kept by garbage collection; a wrong artifact name lists the artifacts' names before the image blobs."""
    build = as_json(envyard(fresh, "env", "create", "team/broken", "-f", str(write_spec(tmp_path, ["a"])), "--json"))
    client = ApiClient(fresh.url, fresh.token, retry_seconds=5)
    try:
        job = client.claim("test-worker", None, 0)
        assert job is not None and job.build_id == build["id"]
        client.stage(build["id"], job.lease_id, "installing")
        lock = b"version: 1\npackage: []\n" * 50
        entries = upload(client, job, tmp_path, {"conda-lock.yml": ("conda-lock", lock),
                                                 "pixi.lock": ("pixi-lock", b"version: 6\n")})
        with pytest.raises(Exception, match="no longer leased"):  # a stale lease records nothing
            client.fail(build["id"], "0" * 32, "install-failed", "installing", "x", None, entries)
        client.fail(build["id"], job.lease_id, "install-failed", "installing", "cannot install zlib",
                    "see the log", entries)
    finally:
        client.close()
    shown = as_json(envyard(fresh, "build", "show", str(build["id"]), "--json"))
    assert shown["status"] == "failed"
    assert [(a["name"], a["partial"]) for a in shown["artifacts"]] == [("conda-lock.yml", True), ("pixi.lock", True)]
    human = envyard(fresh, "build", "show", str(build["id"])).stdout
    assert "partial artifacts: the lock files solved before the build failed" in human
    assert "conda-lock (partial)" in human

    report = as_json(envyard(fresh, "gc", "--grace-seconds", "0", "--json"))
    assert (report["referenced"], report["unreferenced"]) == (2, 0)
    got = as_json(envyard(fresh, "build", "download", str(build["id"]), "conda-lock.yml", "-o", str(tmp_path),
                          "--json"))
    assert (tmp_path / "conda-lock.yml").read_bytes() == lock and got["size"] == len(lock)

    wrong = envyard(fresh, "build", "download", str(build["id"]), "conda-lock.yaml", ok=False)
    assert one_line_error(wrong, 6).endswith("(hint: its artifacts: conda-lock.yml, pixi.lock)")


def test_wrong_artifact_name_lists_names_before_image_blobs(fresh: Service, tmp_path: Path) -> None:
    build = as_json(envyard(fresh, "env", "create", "team/blobs", "-f", str(write_spec(tmp_path, ["a"])), "--json"))
    client = ApiClient(fresh.url, fresh.token, retry_seconds=5)
    try:
        job = client.claim("test-worker", None, 0)
        assert job is not None
        blob = b"layer bytes\n"
        entries = upload(client, job, tmp_path, {f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}": ("oci-blob", blob),
                                                 "conda-lock.yml": ("conda-lock", b"lock\n"),
                                                 "env-linux-64.tar.zst": ("archive", b"archive\n")})
        client.complete(build["id"], job.lease_id, Completion(artifacts=entries, packages=[]))
    finally:
        client.close()
    wrong = envyard(fresh, "build", "download", str(build["id"]), "nope", ok=False)
    assert one_line_error(wrong, 6).endswith(
        "(hint: its artifacts: conda-lock.yml, env-linux-64.tar.zst, and 1 image blobs (blobs/sha256/<hex>))")


def test_worker_sends_the_lock_files_of_a_build_failing_after_the_solve(tmp_path: Path, service_env: dict[str, str],
                                                                       e2e_alias: str) -> None:
    """A real worker: the lock solves, installing fails (pip packages for a platform the worker is not); the build
    fails during installing and keeps its lock files as partial artifacts, downloadable."""
    import dataclasses

    from envyard.builder.channels import ChannelOptions
    from envyard.builder.lock import LockOptions
    from envyard.builder.lockfiles import read_lockfile, render_conda_lock
    from envyard.builder.model import LockedPipPackage
    from envyard.builder.pipeline import lock_to_directory

    spec = write_spec(tmp_path, ["reloc-data"], "foreign")
    options = LockOptions(platforms=("linux-aarch64",), channels=ChannelOptions(channel_alias=e2e_alias))
    files = lock_to_directory(spec, tmp_path / "locked", options, cache_dir=tmp_path / "cache").files
    lock = read_lockfile(files["conda-lock.yml"])
    pip = LockedPipPackage("attrs", "24.2.0", "https://files.example/attrs-24.2.0-py3-none-any.whl", "0" * 64)
    lock = dataclasses.replace(lock, platforms={"linux-aarch64": dataclasses.replace(
        lock.platforms["linux-aarch64"], pip=(pip,))})
    submitted = tmp_path / "conda-lock.yml"
    submitted.write_text(render_conda_lock(lock))
    # the pip URL is never fetched (installing fails first), but the server only accepts URLs its admin allows
    service = start_service(tmp_path / "svc", service_env, "--workers", "1", "--allow-url", "https://files.example/")
    try:
        waited = envyard(service, "env", "create", "team/foreign", "-f", str(submitted), "-p", "linux-aarch64",
                         "--no-image", "--sbom", "none", "--wait", ok=False)
        assert waited.returncode == 4, waited.stdout + waited.stderr
        assert "failed during installing: linux-aarch64: the lock has pip packages" in waited.stderr.splitlines()[-1]
        build_id = int(waited.stdout.split()[1])
        artifacts = as_json(envyard(service, "build", "show", str(build_id), "--json"))["artifacts"]
        assert {a["kind"] for a in artifacts} == {"conda-lock", "pixi-lock", "explicit", "environment"}
        assert all(a["partial"] for a in artifacts)
        envyard(service, "build", "download", str(build_id), "conda-lock.yml", "-o", str(tmp_path))
        assert read_lockfile(tmp_path / "conda-lock.yml").platforms["linux-aarch64"].pip[0].name == "attrs"
        assert "kept the 4 lock files solved before the failure" in envyard(service, "build", "logs",
                                                                            str(build_id)).stdout
    finally:
        service.stop()
