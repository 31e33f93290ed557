"""``envyard ci`` on a real repository of three locked environments and a real local channel."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.ci.conftest import ENVIRONMENTS, git, publish, run_envyard


def test_first_run_locks_every_environment(ci_repo: Path):
    for name in ENVIRONMENTS:
        assert (ci_repo / "envs" / name / "locks" / "conda-lock.yml").is_file()


def test_changing_one_spec_relocks_only_that_one(ci_repo: Path, ci_env: dict[str, str], channel_root: Path):
    publish(channel_root, "beta-pkg", "2.0", depends=("common",))  # newer, but beta's spec did not change
    fresh = run_envyard(ci_repo, ci_env, "ci", "--check", "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["counts"] == {"fresh": 3}

    publish(channel_root, "alpha-pkg", "1.5", depends=("common",))
    spec = ci_repo / "envs" / "alpha" / "environment.yml"
    spec.write_text(spec.read_text().replace("alpha-pkg", "alpha-pkg >=1.5"))
    git(ci_repo, "commit", "-qam", "alpha needs alpha-pkg 1.5")

    stale = run_envyard(ci_repo, ci_env, "ci", "--check", "--json")
    assert stale.returncode == 2
    doc = json.loads(stale.stdout)
    assert doc["counts"] == {"fresh": 2, "stale": 1} and doc["solves"] == 0
    assert [e["name"] for e in doc["environments"] if e["status"] == "stale"] == ["alpha"]
    assert doc["error"]["type"].endswith("/stale-lock")
    assert "alpha (envs/alpha/environment.yml)" in stale.stderr

    done = run_envyard(ci_repo, ci_env, "ci", "--json", "--markdown", "report.md")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    by_name = {e["name"]: e for e in doc["environments"]}
    assert doc["solves"] == 1 and by_name["alpha"]["solves"] == 1
    assert by_name["beta"]["solves"] == by_name["gamma"]["solves"] == 0
    assert by_name["alpha"]["status"] == "relocked" and by_name["beta"]["status"] == "fresh"
    changed = by_name["alpha"]["changes"]["linux-64"]["changed"]
    assert changed == [{"name": "alpha-pkg", "manager": "conda", "old": "1.0=0", "new": "1.5=0"}]
    markdown = (ci_repo / "report.md").read_text()
    assert "| alpha | relocked | alpha-pkg 1.0=0 → 1.5=0 |" in markdown
    assert "| beta | fresh |" in markdown and "1 solve(s)" in markdown
    # beta's lock was not touched although a newer beta-pkg exists: no solve for an unchanged spec
    assert "beta-pkg 2.0" not in (ci_repo / "envs" / "beta" / "locks" / "conda-lock.yml").read_text()
    again = run_envyard(ci_repo, ci_env, "ci", "--check")
    assert again.returncode == 0, again.stderr


def test_build_and_push_only_the_changed_environment(ci_repo: Path, ci_env: dict[str, str], channel_root: Path,
                                                     tmp_path: Path):
    from tests.servers import docker_registry

    publish(channel_root, "gamma-pkg", "3.0", depends=("common",))
    spec = ci_repo / "envs" / "gamma" / "environment.yml"
    spec.write_text(spec.read_text().replace("gamma-pkg", "gamma-pkg >=3"))
    git(ci_repo, "commit", "-qam", "gamma 3")
    (tmp_path / "registry").mkdir()
    with docker_registry(tmp_path / "registry") as registry:
        done = run_envyard(ci_repo, ci_env, "ci", "--push", f"{registry}/envs/{{name}}:{{hash}}", "--json",
                           "--markdown", "-")
        assert done.returncode == 0, done.stderr
        # --markdown - and --json both on stdout: the table first, then the one JSON document
        table, _, document = done.stdout.partition("\n{")
        doc = json.loads("{" + document)
        by_name = {e["name"]: e for e in doc["environments"]}
        assert by_name["gamma"]["status"] == "rebuilt" and doc["counts"] == {"fresh": 2, "rebuilt": 1}
        digest = by_name["gamma"]["image_digest"]
        assert digest.startswith("sha256:") and by_name["alpha"]["image_digest"] is None
        reference = by_name["gamma"]["image_reference"]
        assert reference.startswith(f"{registry}/envs/gamma:") and reference.endswith("@" + digest)
        assert f"| gamma | rebuilt | gamma-pkg 1.0=0 → 3.0=0 | `{digest}`" in table
        # the registry really holds it
        import httpx

        tag = reference.split("@")[0].rsplit(":", 1)[1]
        got = httpx.get(f"http://{registry}/v2/envs/gamma/manifests/{tag}",
                        headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                                           "application/vnd.oci.image.manifest.v1+json"})
        assert got.status_code == 200 and got.headers["docker-content-digest"] == digest


def test_a_failed_solve_exits_1_and_is_reported(ci_repo: Path, ci_env: dict[str, str]):
    spec = ci_repo / "envs" / "beta" / "environment.yml"
    spec.write_text(spec.read_text().replace("beta-pkg", "beta-pkg >=99"))
    failed = run_envyard(ci_repo, ci_env, "ci", "--json", "--markdown", "report.md")
    assert failed.returncode == 1, failed.stderr
    doc = json.loads(failed.stdout)
    assert doc["counts"] == {"fresh": 2, "failed": 1} and doc["error"]["type"].endswith("/ci-failed")
    assert "beta-pkg" in {e["name"]: e for e in doc["environments"]}["beta"]["error"]
    assert "| beta | failed | **error**:" in (ci_repo / "report.md").read_text()


def test_paths_and_globs_and_bad_config(ci_repo: Path, ci_env: dict[str, str]):
    found = run_envyard(ci_repo, ci_env, "ci", "envs/*/environment.yml", "--lock-dir", "locks", "--check", "--json")
    assert found.returncode == 0, found.stderr
    assert [e["name"] for e in json.loads(found.stdout)["environments"]] == ["alpha", "beta", "gamma"]
    missing = run_envyard(ci_repo, ci_env, "ci", "envs/*/nothing.yml", "--check")
    assert missing.returncode == 1 and "'envs/*/nothing.yml' matches no spec" in missing.stderr
    (ci_repo / "bad.toml").write_text('[[environment]]\nspec = "envs/alpha/environment.yml"\nlockdir = "x"\n')
    bad = run_envyard(ci_repo, ci_env, "ci", "--config", "bad.toml", "--check")
    assert bad.returncode == 1 and "bad.toml: environment[0]: unknown key lockdir" in bad.stderr


def test_run_in_process_counts_solves_and_leaves_fresh_locks_untouched(ci_repo: Path, ci_env: dict[str, str],
                                                                      channel_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """builder.ci.run with a solve hook: one solve for the one changed spec; the other locks keep their bytes and
    their modification times (nothing was rewritten)."""
    from envyard.builder import ci
    from envyard.builder.channels import ChannelOptions
    from envyard.builder.lock import INHERITABLE, LockOptions

    monkeypatch.chdir(ci_repo)
    publish(channel_root, "gamma-pkg", "1.1", depends=("common",))
    spec = ci_repo / "envs" / "gamma" / "environment.yml"
    spec.write_text(spec.read_text().replace("gamma-pkg", "gamma-pkg >=1.1"))
    locks = {n: ci_repo / "envs" / n / "locks" / "conda-lock.yml" for n in ENVIRONMENTS}
    before = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in locks.items()}
    targets, _ = ci.read_config(Path("envyard.toml"))
    counter = ci.SolveCounter()
    options = ci.CiOptions(
        lock=LockOptions(channels=ChannelOptions(channel_alias=channel_root.as_uri() + "/"),
                         inherit=INHERITABLE - {"channel_alias"}),
        cache_dir=Path(ci_env["ENVYARD_CACHE_DIR"]), environ={}, on_solve=counter)
    report = ci.run(targets, options)
    assert counter.calls == {"gamma": 1}
    assert [r.status for r in report.results] == ["fresh", "fresh", "relocked"]
    for name in ("alpha", "beta"):
        assert (locks[name].read_bytes(), locks[name].stat().st_mtime_ns) == before[name]
    assert locks["gamma"].read_bytes() != before["gamma"][0]
    assert ci.change_lines(report.results[2].diff) == ["gamma-pkg 1.0=0 → 1.1=0"]
    again = ci.SolveCounter()
    assert ci.run(targets, replace(options, on_solve=again)).counts == {"fresh": 3} and again.calls == {}


def test_human_output(ci_repo: Path, ci_env: dict[str, str]):
    shown = run_envyard(ci_repo, ci_env, "ci", "--check")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["alpha: fresh", "beta: fresh", "gamma: fresh",
                                         "envyard: 3 fresh; 0 solve(s)"]
