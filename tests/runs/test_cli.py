"""The local commands end to end, as a user types them: snapshot, manifest, run, verify (--rebuild), data fetch,
dvc stage + dvc repro (re-runs after a relock and not before), --push-outputs; exit codes and --json documents."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runs.conftest import DataProject, Environment, commit_v2, envyard, git, write_spec

COMMAND = ["sh", "-c", "mkdir -p out && cat data/in/data/params.txt data/in/data/images/a.txt > out/result.txt"
           " && echo 'the command prints' && echo 'and warns' >&2"]  # --json: its stdout must not reach ours


def _env(environment: Environment, project: DataProject) -> dict[str, str]:
    """The user's environment: S3 credentials in the standard AWS variables (read by DVC, never by envyard)."""
    return {**environment.env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _five_commands(tmp_path: Path, project: DataProject, environment: Environment, env: dict[str, str]) -> Path:
    shutil.copy(environment.lock, tmp_path / "conda-lock.yml")
    envyard("data", "snapshot", project.url, "--rev", "release", "--path", "data/params.txt", "--path",
            "data/images", "-o", str(tmp_path / "snapshot.json"), cwd=tmp_path, env=env)
    envyard("manifest", "create", "--lock", "conda-lock.yml", "--image-layout", str(environment.layout),
            "--data", "snapshot.json:/work/data/in", "--code", f"{project.work}@release", "--env", "SEED=1",
            "--cpu", "1", "--memory", "1Gi", "-o", "run.json", "--", *COMMAND, cwd=tmp_path, env=env)
    return tmp_path / "run.json"


def test_snapshot_manifest_run_verify(project_factory: Callable[[], DataProject], environment: Environment,
                                      tmp_path: Path):
    project = project_factory()
    env = _env(environment, project)
    manifest_file = _five_commands(tmp_path, project, environment, env)
    manifest = json.loads(manifest_file.read_bytes())
    assert manifest["environment"]["lock"]["filename"] == "conda-lock.yml"
    assert manifest["environment"]["images"] == {"linux-64": environment.digest}
    assert manifest["code"]["commit"] == project.v1 and manifest["data"][0]["snapshot"]["commit"] == project.v1
    assert "testing" not in manifest_file.read_text()
    commit_v2(project)  # the tag moves; the manifest still means v1

    ran = json.loads(envyard("run", "run.json", "--workdir", "w1", "--outputs", "out", "--json",
                             cwd=tmp_path, env=env).stdout)
    assert ran["verified"][0] == "environment.lock.sha256" and ran["result"] == "run.result.json"
    assert (tmp_path / "w1/out/result.txt").read_text() == "learning_rate=0.1\nimage a v1\n"
    result = json.loads((tmp_path / "run.result.json").read_bytes())
    assert result["parent"] == ran["parent"] and result["outputs"] == ran["outputs"]
    again = json.loads(envyard("run", "run.json", "--workdir", "w2", "--outputs", "out", "--runtime", "runc",
                               "--image-layout", str(environment.layout), "-o", "again.json", "--json",
                               cwd=tmp_path, env=env).stdout)
    assert again["outputs"] == ran["outputs"] and again["digest"] == ran["digest"]

    verified = json.loads(envyard("verify", "run.json", "--image-layout", str(environment.layout), "--rebuild",
                                  "--json", cwd=tmp_path, env=env).stdout)
    assert verified["ok"] and verified["rebuilt"] == {"linux-64": environment.digest}

    fetched = json.loads(envyard("data", "fetch", "run.json", "--dest", "fetched", "--json",
                                 cwd=tmp_path, env=env).stdout)
    assert fetched["verified"] and (tmp_path / "fetched/work/data/in/data/params.txt").read_text().endswith("0.1\n")


def test_failures_exit_with_their_code_before_the_command(project: DataProject, environment: Environment,
                                                          tmp_path: Path):
    env = _env(environment, project)
    _five_commands(tmp_path, project, environment, env)
    envyard("manifest", "create", "--lock", "conda-lock.yml", "--data", "snapshot.json:/work/data/in",
            "-o", "marker.json", "--", "sh", "-c", "touch ran.marker", cwd=tmp_path, env=env)
    (tmp_path / "conda-lock.yml").write_bytes(environment.lock.read_bytes() + b"# relocked\n")
    refused = envyard("run", "marker.json", "--workdir", "w", "--json", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 3 and not (tmp_path / "w/ran.marker").exists()
    assert json.loads(refused.stdout)["error"]["field"] == "environment.lock.sha256"
    assert refused.stderr.count("\n") == 1 and "the manifest pins" in refused.stderr

    drifted = envyard("verify", "run.json", "--json", cwd=tmp_path, env=env, check=False)
    assert drifted.returncode == 2
    document = json.loads(drifted.stdout)
    assert [d["field"] for d in document["drift"]] == ["environment.lock.sha256"] and not document["ok"]

    secret = envyard("manifest", "create", "--lock", "conda-lock.yml", "--env", "AWS_SECRET_ACCESS_KEY=x", "--",
                     "true", cwd=tmp_path, env=env, check=False)
    assert secret.returncode == 1 and "looks like a secret" in secret.stderr
    build = envyard("--api", "http://127.0.0.1:9", "--token", "t", "manifest", "create", "--build", "ns/env", "--",
                    "true", cwd=tmp_path, env=env, check=False)  # --build asks the server: none is running there
    assert build.returncode == 9 and "--api" in build.stderr
    unknown = envyard("data", "snapshot", project.url, "--rev", "nope", "--path", "data/params.txt", "--json",
                      cwd=tmp_path, env=env, check=False)
    assert unknown.returncode == 6 and json.loads(unknown.stdout)["error"]["type"].endswith("/unknown-revision")


def test_dvc_repro_reruns_after_a_relock_and_not_before(project_factory: Callable[[], DataProject],
                                                        environment: Environment, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    from dvc.repo import Repo

    project = project_factory()
    env = _env(environment, project)
    work = project.work
    (work / "env").mkdir()
    shutil.copy(environment.lock, work / "env" / "conda-lock.yml")
    envyard("data", "snapshot", project.url, "--rev", project.v1, "--path", "data/params.txt", "--path",
            "data/images", "-o", "snapshot.json", cwd=work, env=env)
    envyard("manifest", "create", "--lock", "env/conda-lock.yml", "--data", "snapshot.json:/work/data/in",
            "-o", "run.json", "--", *COMMAND, cwd=work, env=env)
    staged = json.loads(envyard("dvc", "stage", "train", "--manifest", "run.json", "--outputs", "out", "--json",
                                cwd=work, env=env).stdout)
    assert staged["deps"] == ["env/conda-lock.yml", "run.json"] and staged["outs"] == ["out"]
    assert staged["cmd"].startswith("envyard run run.json --lock env/conda-lock.yml")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "pipeline")

    for key, value in env.items():  # dvc repro runs the stage's cmd with this process's environment
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(work)  # DVC resolves stage targets against the current directory
    with Repo(str(work)) as repo:
        assert [s.addressing for s in repo.reproduce("train")] == ["train"]
    assert (work / "out/result.txt").read_text() == "learning_rate=0.1\nimage a v1\n"
    with Repo(str(work)) as repo:
        assert repo.reproduce("train") == []  # nothing changed: nothing runs

    spec = write_spec(tmp_path / "environment.yml", ["busybox", "reloc-data"])
    envyard("lock", str(spec), "-o", str(work / "env"), cwd=tmp_path, env=env)  # a real relock
    with Repo(str(work)) as repo:
        assert [s.addressing for s in repo.reproduce("train")] == ["train"]
    result = json.loads((work / "run.result.json").read_bytes())
    relocked = hashlib.sha256((work / "env/conda-lock.yml").read_bytes()).hexdigest()
    assert result["environment"]["lock"]["sha256"] == relocked != json.loads(
        (work / "run.json").read_bytes())["environment"]["lock"]["sha256"]
    assert result["parent"] == "sha256:" + hashlib.sha256((work / "run.json").read_bytes()).hexdigest()
    with Repo(str(work)) as repo:
        assert repo.reproduce("train") == []


def test_push_outputs_tracks_them_in_the_dvc_repository(project_factory: Callable[[], DataProject],
                                                        environment: Environment):
    project = project_factory()
    env = _env(environment, project)
    work = project.work
    shutil.copy(environment.lock, work / "conda-lock.yml")
    envyard("data", "snapshot", project.url, "--rev", project.v1, "--path", "data/params.txt", "--path",
            "data/images", "-o", "snapshot.json", cwd=work, env=env)
    envyard("manifest", "create", "--lock", "conda-lock.yml", "--data", "snapshot.json:/work/data/in",
            "-o", "run.json", "--", *COMMAND, cwd=work, env=env)
    before = set(project.remote_objects())
    ran = json.loads(envyard("run", "run.json", "--outputs", "out", "--push-outputs", "--json",
                             cwd=work, env=env).stdout)
    assert ran["pushed"]["dvc_files"] == ["out.dvc"] and (work / "out.dvc").is_file()
    added = set(project.remote_objects()) - before
    assert any(key.endswith(".dir") for key in added) and len(added) == 2  # the listing and result.txt
