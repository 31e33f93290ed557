"""deploy/ci/github-actions.yml and deploy/ci/gitlab-ci.yml, run: their ``run:`` / ``script:`` lines in a scratch
repository of three locked environments, with ``envyard`` on PATH, the test channel and a real registry on
loopback. A pull request that changes a spec without its lock fails the check (exit 2, naming it); after the
merge the build job relocks and pushes exactly that environment; then the check passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.ci.conftest import git, publish
from tests.servers import docker_registry

REPO = Path(__file__).resolve().parents[2]
#: steps not run here: they install envyard (the test puts this checkout's ``envyard`` on PATH instead)
INSTALL_STEPS = {"Install envyard"}


def shim(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "envyard"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m envyard.cli "$@"\n')
    script.chmod(0o755)
    return directory


def run_lines(lines: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The lines as one job step runs them: bash -e, stopping at the first failure."""
    return subprocess.run(["bash", "-e", "-c", "\n".join(lines)], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=300)


def github_job(workflow: dict[str, Any], name: str) -> list[str]:
    """The job's run: lines other than the install step (whose name the test knows)."""
    steps = workflow["jobs"][name]["steps"]
    skipped = {s["name"] for s in steps if "run" in s and s.get("name") in INSTALL_STEPS}
    assert skipped == INSTALL_STEPS, f"{name}: the install step is no longer named {INSTALL_STEPS}"
    return [s["run"] for s in steps if "run" in s and s.get("name") not in INSTALL_STEPS
            and s.get("if") != "always()"]


def _scenario(ci_repo: Path, ci_env: dict[str, str], channel_root: Path, tmp_path: Path,
              check: list[str], build: list[str], extra_env: dict[str, str]) -> None:
    env = {**ci_env, **extra_env, "PATH": f"{shim(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"}
    fresh = run_lines(check, ci_repo, env)
    assert fresh.returncode == 0, fresh.stderr
    assert "| alpha | fresh |" in (ci_repo / "envyard-report.md").read_text()

    # a pull request edits beta's spec but forgets its lock
    publish(channel_root, "beta-pkg", "2.0", depends=("common",))
    spec = ci_repo / "envs" / "beta" / "environment.yml"
    spec.write_text(spec.read_text().replace("beta-pkg", "beta-pkg >=2"))
    git(ci_repo, "commit", "-qam", "beta 2")
    stale = run_lines(check, ci_repo, env)
    assert stale.returncode == 2
    assert "stale lock(s): beta (envs/beta/environment.yml)" in stale.stderr
    assert "| beta | stale |" in (ci_repo / "envyard-report.md").read_text()

    # merged: the build job relocks and pushes beta only
    built = run_lines(build, ci_repo, env)
    assert built.returncode == 0, built.stderr
    report = (ci_repo / "envyard-report.md").read_text()
    assert "| beta | rebuilt | beta-pkg 1.0=0 → 2.0=0 | `sha256:" in report
    assert f"{env['ENVYARD_REGISTRY']}/envs/beta:" in report
    assert "| alpha | fresh |" in report and "| gamma | fresh |" in report
    again = run_lines(check, ci_repo, env)
    assert again.returncode == 0, again.stderr


def test_github_actions_workflow(ci_repo: Path, ci_env: dict[str, str], channel_root: Path, tmp_path: Path):
    workflow = yaml.safe_load((REPO / "deploy" / "ci" / "github-actions.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "push"} and triggers["push"]["branches"] == ["main"]
    assert workflow["jobs"]["check"]["if"] == "github.event_name == 'pull_request'"
    assert workflow["jobs"]["build"]["if"] == "github.event_name == 'push'"
    check, build = github_job(workflow, "check"), github_job(workflow, "build")
    summary = tmp_path / "summary.md"
    report_steps = [s["run"] for s in workflow["jobs"]["check"]["steps"] if s.get("if") == "always()"]
    (tmp_path / "registry").mkdir()
    with docker_registry(tmp_path / "registry") as registry:
        _scenario(ci_repo, ci_env, channel_root, tmp_path, check, build,
                  {"ENVYARD_REGISTRY": registry, "GITHUB_STEP_SUMMARY": str(summary)})
    env = {**ci_env, "GITHUB_STEP_SUMMARY": str(summary)}
    assert run_lines(report_steps, ci_repo, env).returncode == 0
    assert "envyard: 3 fresh; 0 solve(s)" in summary.read_text()  # the report of the last check


def test_gitlab_ci_pipeline(ci_repo: Path, ci_env: dict[str, str], channel_root: Path, tmp_path: Path):
    pipeline = yaml.safe_load((REPO / "deploy" / "ci" / "gitlab-ci.yml").read_text())
    assert pipeline[".envyard"]["before_script"] == ["pip install envyard"]  # replaced by the PATH shim here
    check_job, build_job = pipeline["check-locks"], pipeline["build-environments"]
    assert check_job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert build_job["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]
    (tmp_path / "registry").mkdir()
    with docker_registry(tmp_path / "registry") as registry:
        _scenario(ci_repo, ci_env, channel_root, tmp_path, check_job["script"], build_job["script"],
                  {"ENVYARD_REGISTRY": registry, "CI_PROJECT_DIR": str(ci_repo)})
