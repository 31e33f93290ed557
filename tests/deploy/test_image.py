"""envyard's own image, built by envyard (deploy/image/build.py): this checkout packaged as a conda package into a
local channel, locked, and ``envyard image``d twice to the same digest.

No conda-forge here: the test locks the image spec's envyard package with the e2e channel's python stand-in
instead of conda-forge's Python and envyard's dependencies (deploy/README.md says what the real build needs)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.packages import build_e2e_channel
from tests.service.conftest import REPO

BUILD = REPO / "deploy" / "image" / "build.py"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("envyard_image_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_envyard_builds_its_own_image_reproducibly(tmp_path: Path) -> None:
    build = _build_module()
    build_e2e_channel(tmp_path / "channels")
    spec = tmp_path / "environment.yml"
    spec.write_text("name: envyard\nchannels:\n  - envyard-local\n  - e2e\ndependencies:\n  - python 3.11.*\n"
                    "  - envyard 0.1.0\n")
    out = tmp_path / "out"
    first = build.build(out, spec, f"file://{tmp_path / 'channels'}/")
    lock = (out / "lock" / "conda-lock.yml").read_text()
    assert "name: envyard" in lock and "envyard-local" in lock
    index = json.loads((out / "oci" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == build.IMAGE_TAG
    shutil.rmtree(out)
    second = build.build(out, spec, f"file://{tmp_path / 'channels'}/")
    assert first["digest"] == second["digest"]
    assert (out / "lock" / "conda-lock.yml").read_text() == lock
    assert f"{build.IMAGE_NAME}:{build.IMAGE_TAG}" in (REPO / "deploy" / "README.md").read_text()
    manifest = _manifest(out / "oci")
    assert _blob(out / "oci", manifest["config"]["digest"])["architecture"] == "amd64"
    owners: set[tuple[int, int]] = set()
    found = False
    for layer in manifest["layers"]:
        with tarfile.open(out / "oci" / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]) as tar:
            members = tar.getmembers()
            owners |= {(m.uid, m.gid) for m in members}
            if any(m.name.endswith("site-packages/envyard/api/app.py") for m in members):
                found = True
    assert found and owners == {(1000, 1000)}  # envyard itself is in the image, owned by the manifests' uid


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    return dict(json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text()))


def _manifest(layout: Path) -> dict[str, Any]:
    top = _blob(layout, json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])
    return _blob(layout, top["manifests"][0]["digest"]) if "manifests" in top else top


def test_the_envyard_package_holds_the_checkout() -> None:
    recipe = _build_module().recipe()
    files = recipe["files"]
    assert "site-packages/envyard/api/app.py" in files and "site-packages/envyard/cli/__init__.py" in files
    assert any(name.startswith("site-packages/envyard/api/migrations/versions/") for name in files)
    assert not any("__pycache__" in name for name in files)
    assert files["python-scripts/envyard"].startswith("#!@PREFIX@/bin/python")
