"""ruff over the tree and mypy --strict over builder/ run as part of the test suite (the one CI command)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install -e '.[test]')")
def test_ruff_is_clean():
    result = subprocess.run(["ruff", "check", "builder", "api", "worker", "registry", "tests", "bench", "cli"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_builder(tmp_path: Path):
    """mypy reads files, not import hooks: it checks envyard.builder in a tree of links laid out as installed."""
    pytest.importorskip("mypy")
    (tmp_path / "envyard").mkdir()
    (tmp_path / "envyard" / "builder").symlink_to(REPO / "builder")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                             "--cache-dir", str(REPO / ".mypy_cache"), "-p", "envyard.builder"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
