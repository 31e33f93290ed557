"""``envyard lock``/``lock diff``/``why``/``channel build`` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.commands import ENVYARD

REPO = Path(__file__).resolve().parents[2]


def envyard(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture()
def demo_alias(demo_channel_root: Path) -> str:
    return demo_channel_root.as_uri() + "/"


def test_demo_lock_writes_three_formats_for_three_platforms(demo_alias: str, tmp_path: Path):
    result = envyard("lock", "specs/examples/demo.yml", "--channel-alias", demo_alias, "-o", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["reexported"] is False
    assert summary["platforms"] == {p: {"conda": 3, "pip": 0} for p in ("linux-64", "linux-aarch64", "osx-arm64")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conda-linux-64.lock", "conda-linux-aarch64.lock", "conda-lock.yml", "conda-osx-arm64.lock", "pixi.lock"]
    explicit = (tmp_path / "conda-linux-64.lock").read_text()
    assert "/linux-64/libgreet-1.2.0-h4f8a2b1_0.conda#" in explicit
    assert "/noarch/demo-data-2024.06-pyh0_0.conda#" in explicit


def test_lock_bytes_do_not_depend_on_cwd_cache_or_clock(demo_alias: str, tmp_path: Path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert envyard("lock", REPO / "specs/examples/demo.yml", "--channel-alias", demo_alias, "-o", first,
                   env={"ENVYARD_CACHE_DIR": str(tmp_path / "cache1")}).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    assert envyard("lock", REPO / "specs/examples/demo.yml", "--channel-alias", demo_alias, "-o", second,
                   cwd=tmp_path / "elsewhere", env={"ENVYARD_CACHE_DIR": str(tmp_path / "cache2"),
                                                    "TZ": "Asia/Tokyo"}).returncode == 0
    for name in ("conda-lock.yml", "pixi.lock", "conda-linux-64.lock", "conda-osx-arm64.lock"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_check_is_fresh_then_stale_and_never_solves(demo_alias: str, tmp_path: Path):
    spec = tmp_path / "environment.yml"
    shutil.copy(REPO / "specs/examples/demo.yml", spec)
    assert envyard("lock", spec, "--channel-alias", demo_alias, "-o", tmp_path / "lock").returncode == 0
    fresh = envyard("lock", spec, "--channel-alias", "file:///nonexistent/", "-o", tmp_path / "lock", "--check")
    assert fresh.returncode == 0, fresh.stderr
    assert "up to date" in fresh.stdout
    spec.write_text(spec.read_text().replace("libgreet 1.*", "libgreet 1.1.*"))
    stale = envyard("lock", spec, "-o", tmp_path / "lock", "--check")
    assert_clean_error(stale, 2, "stale", "linux-64", "envyard lock")
    as_json = envyard("lock", spec, "-o", tmp_path / "lock", "--check", "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout.split("\n{")[0])["stale_platforms"] == ["linux-64", "linux-aarch64", "osx-arm64"]
    missing = envyard("lock", spec, "-o", tmp_path / "nothing-here", "--check")
    assert missing.returncode == 2


def test_pangeo_without_cuda_is_one_line_naming_cuda_and_the_flag(shared_data: Path, derived_alias: str,
                                                                  tmp_path: Path):
    spec = shared_data / "envs" / "pangeo-data__pangeo-docker-images__ml-notebook_environment.yml"
    failed = envyard("lock", spec, "--channel-alias", derived_alias, "-o", tmp_path)
    assert_clean_error(failed, 1, "__cuda", "--cuda")
    assert not (tmp_path / "conda-lock.yml").exists()
    locked = envyard("lock", spec, "--channel-alias", derived_alias, "-o", tmp_path, "--cuda", "12.4", "--json")
    assert locked.returncode == 0, locked.stderr
    assert 290 <= json.loads(locked.stdout)["platforms"]["linux-64"]["conda"] <= 330


def test_unsatisfiable_and_invalid_specs_are_one_line_errors(shared_data: Path, derived_alias: str, tmp_path: Path):
    broken = shared_data / "envs" / (
        "conda-incubator__conda-store__conda-store-server_tests_user_journeys_test_data_broken_environment.yml")
    assert_clean_error(envyard("lock", broken, "--channel-alias", derived_alias, "-o", tmp_path), 1,
                       "invalidpackagenamefaasdfagksdjfhgaskdf")
    invalid = shared_data / "envs" / "conda__conda__tests_env_support_invalid_keys.yml"
    line = assert_clean_error(envyard("lock", invalid, "-o", tmp_path), 1, invalid.name)
    assert "did you mean" in line
    assert_clean_error(envyard("lock", tmp_path / "absent.yml", "-o", tmp_path), 1, "absent.yml", "not found")
    assert_clean_error(envyard("lock", "specs/examples/demo.yml", "--exclude-newer", "last tuesday"), 1,
                       "--exclude-newer")
    assert_clean_error(envyard("lock", "specs/examples/demo.yml", "--virtual-package", "cuda"), 1,
                       "--virtual-package")
    assert not (tmp_path / "conda-lock.yml").exists()


def test_lock_diff_and_why(demo_alias: str, tmp_path: Path):
    spec = tmp_path / "environment.yml"
    spec.write_text((REPO / "specs/examples/demo.yml").read_text())
    assert envyard("lock", spec, "--channel-alias", demo_alias, "-o", tmp_path / "old").returncode == 0
    spec.write_text(spec.read_text().replace("libgreet 1.*", "libgreet 1.1.*"))
    assert envyard("lock", spec, "--channel-alias", demo_alias, "-o", tmp_path / "new").returncode == 0
    diff = envyard("lock", "diff", tmp_path / "old/conda-lock.yml", tmp_path / "new/conda-lock.yml")
    assert diff.returncode == 0, diff.stderr
    assert "~ libgreet 1.2.0=h4f8a2b1_0 -> 1.1.0=h4f8a2b1_1 (conda)" in diff.stdout
    as_json = json.loads(envyard("lock", "diff", tmp_path / "old/pixi.lock", tmp_path / "new/pixi.lock",
                                 "--json").stdout)
    assert as_json["osx-arm64"]["changed"] == [
        {"name": "libgreet", "manager": "conda", "old": "1.2.0=h4f8a2b1_0", "new": "1.1.0=h4f8a2b1_1"}]
    same = envyard("lock", "diff", tmp_path / "old/conda-lock.yml", tmp_path / "old/pixi.lock")
    assert same.stdout.strip() == "no differences"
    why = envyard("why", "demo-data", tmp_path / "new/conda-lock.yml", "-p", "linux-64")
    assert why.stdout.strip() == "demo-data"
    assert_clean_error(envyard("why", "numpy", tmp_path / "new/conda-lock.yml"), 1, "numpy")


def test_why_walks_a_real_lock_from_a_root(shared_data: Path):
    lock = shared_data / "locks" / "conda-lock" / "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml"
    result = envyard("why", "libzlib", lock, "--json")
    path = json.loads(result.stdout)["path"]
    assert path[-1] == "libzlib" and len(path) >= 2


def test_existing_locks_are_reexported_not_resolved(shared_data: Path, tmp_path: Path):
    source = shared_data / "locks" / "pixi" / "prefix-dev__pixi__examples_jupyterlab_pixi.lock"
    result = envyard("lock", source, "-o", tmp_path, "--json", "--channel-alias", "file:///nonexistent/")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["reexported"] is True
    assert set(summary["platforms"]) == {"linux-64", "osx-64", "osx-arm64", "win-64"}
    assert all(counts["conda"] > 50 for counts in summary["platforms"].values())
    again = envyard("lock", tmp_path / "conda-lock.yml", "-o", tmp_path / "again", "--json")
    assert json.loads(again.stdout)["platforms"] == summary["platforms"]
    assert (tmp_path / "again" / "conda-lock.yml").read_bytes() == (tmp_path / "conda-lock.yml").read_bytes()


def test_channel_build_from_recipes(tmp_path: Path):
    result = envyard("channel", "build", "specs/recipes", "-o", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert "built 11 packages" in result.stdout
    repodata = json.loads((tmp_path / "demo" / "linux-64" / "repodata.json").read_text())
    assert sorted(repodata["packages.conda"]) == [
        "greet-cli-0.4.0-h1a2b3c4_0.conda", "libgreet-1.1.0-h4f8a2b1_1.conda", "libgreet-1.2.0-h4f8a2b1_0.conda"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("package: {name: x}\n")
    assert_clean_error(envyard("channel", "build", bad, "-o", tmp_path / "bad"), 1, "bad.yaml", "incomplete")


def test_pixi_lock_with_source_and_editable_packages_reexports_with_a_warning_each(shared_data: Path, tmp_path: Path):
    pixi = shared_data / "locks" / "pixi"
    out = tmp_path / "out"
    result = envyard("lock", pixi / "conda__conda-lock__pixi.lock", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "skipped local PyPI package conda-lock (./)" in warnings[0]
    assert json.loads(result.stdout)["warnings"] == [warnings[0].removeprefix("warning: ")]
    every = envyard("lock", pixi / "conda__rattler__py-rattler_pixi.lock", "-o", tmp_path / "all",
                    "--environment", "all")
    assert every.returncode == 0, every.stderr
    assert "skipped conda source package py-rattler (.)" in every.stderr
    assert "environments docs, repl, test are written to pixi.lock only" in every.stderr
    assert "  test:" in (tmp_path / "all" / "pixi.lock").read_text()
    missing = envyard("lock", pixi / "conda__rattler__py-rattler_pixi.lock", "-o", tmp_path / "none",
                      "--environment", "nope")
    assert_clean_error(missing, 1, "no environment 'nope'", "docs, repl, test")
    assert not (tmp_path / "none").exists()


def test_a_lossy_reexport_is_a_difference_and_why_tells_the_truth(shared_data: Path, tmp_path: Path):
    source = shared_data / "locks" / "conda-lock" / (
        "conda__conda-lock__tests_test-v2-to-v3-upgrade_conda-lock-v2.5.8.yml")
    assert envyard("lock", source, "-o", tmp_path).returncode == 0
    same = envyard("lock", "diff", source, tmp_path / "conda-lock.yml")
    assert same.stdout.strip() == "no differences", same.stdout
    lossy = envyard("lock", "diff", source, tmp_path / "conda-linux-64.lock")
    assert "category test (optional) -> main" not in lossy.stdout  # test packages are left out, not made main
    assert "- pytest" in lossy.stdout
    assert "; category main -> dev (optional)" not in lossy.stdout
    flattened = tmp_path / "flat.yml"  # what the old writer made of it: every package main, required
    flattened.write_text((tmp_path / "conda-lock.yml").read_text().replace("category: test", "category: main")
                         .replace("optional: true", "optional: false"))
    flat = envyard("lock", "diff", source, flattened)
    assert "~ pytest 8.4.0=pyhd8ed1ab_0 (conda); category test (optional) -> main" in flat.stdout, flat.stdout
    assert_clean_error(envyard("why", "openssl", tmp_path / "conda-linux-64.lock"), 1, "no dependency information")
    pip_path = envyard("why", "certifi", tmp_path / "pixi.lock", "-p", "linux-64").stdout.strip()
    assert pip_path.endswith("-> certifi (pip)")
    every = envyard("why", "libzlib", shared_data / "locks" / "conda-lock" /
                    "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml", "--all", "--max-paths", "5")
    lines = every.stdout.splitlines()
    assert len(lines) == 5 and [len(x.split(" -> ")) for x in lines] == sorted(len(x.split(" -> ")) for x in lines)
    assert "raise --max-paths" in every.stderr
