"""The distribution: one import root. The wheel holds ``envyard/…`` only, installs and runs in a fresh venv, and
the folder names of the checkout (``builder``, ``api``, …) are not importable from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_wheel_holds_envyard_only_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    built = run(sys.executable, "-m", "build", "--outdir", tmp_path / "dist", REPO, cwd=tmp_path)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("envyard-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"envyard", "envyard-0.1.0.dist-info"}, tops
    for package in ("builder", "api", "worker", "registry", "cli"):
        assert f"envyard/{package}/__init__.py" in names, package
    assert "envyard/api/migrations/versions/0001_initial_schema.py" in names
    assert not any(name.startswith("envyard/tests/") for name in names)
    assert next((tmp_path / "dist").glob("envyard-*.tar.gz"))  # the wheel was built from the sdist

    venv = tmp_path / "venv"  # dependencies from this interpreter's site-packages, envyard from the wheel
    assert run(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path).returncode == 0
    installed = run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    helped = run(venv / "bin" / "envyard", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Usage: envyard" in helped.stdout, helped.stderr
    imported = run(venv / "bin" / "python", "-c", "import envyard.builder, envyard.api, envyard.worker, "
                   "envyard.registry, envyard.cli; print(envyard.builder.__file__)", cwd=tmp_path)
    assert imported.returncode == 0 and str(venv) in imported.stdout, imported.stdout + imported.stderr
    site = next((venv / "lib").glob("python3*/site-packages"))
    for bare in ("builder", "api", "worker", "registry", "cli"):  # what the wheel put in site-packages, only
        refused = run(venv / "bin" / "python", "-S", "-c", f"import sys; sys.path.append({str(site)!r}); "
                      f"import envyard.builder.model; import {bare}", cwd=tmp_path)
        assert refused.returncode != 0 and "ModuleNotFoundError" in refused.stderr, (bare, refused.stdout)
