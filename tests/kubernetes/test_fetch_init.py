"""The fetch-data init container of a generated Job, run for real: its shell command (with the manifest from its
environment) runs ``envyard data fetch`` on a real git + DVC project, and the data lands in the shared volume's
``data-i`` sub-directories that the run's container mounts at the manifest's mount paths.

The container's filesystem is laid out on the host: ``/`` is ``root/``, and each volume mount of the init container
(volume ``envyard-data``, subPath ``data-i``, at the mount path) is a symlink ``root/<mount> -> volume/data-i``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate

from envyard.api.kubernetes import generate
from envyard.api.kubernetes.model import EnvironmentImage, SessionOptions
from envyard.builder.data import snapshot_data
from envyard.builder.run_manifest import DataMount, EnvironmentRef, LockRef, RunManifest
from tests.runs.conftest import make_project
from tests.servers import moto_s3

REPO = Path(__file__).resolve().parents[2]


def test_fetch_init_container_fills_the_mounted_sub_paths(tmp_path: Path) -> None:
    (tmp_path / "moto").mkdir()
    with moto_s3(tmp_path / "moto") as endpoint:  # the project pushes to an S3 remote too; fetched: local
        project = make_project(tmp_path / "project", endpoint)
        snapshot = snapshot_data(project.url, project.v1, ["data/params.txt", "data/images"], remote="local")
    run = RunManifest(environment=EnvironmentRef(namespace="team", name="app", build_id=7,
                                                 lock=LockRef(sha256="0" * 64)),
                      data=[DataMount(snapshot=snapshot, mount="/data/train"),
                            DataMount(snapshot=snapshot, mount="/opt/labels")],
                      command=["python", "train.py"])
    image = EnvironmentImage("team", "app", 7, "envyard.example.org", "team/app", "sha256:" + "a" * 64, 1000, 100)
    job = generate.job(image, SessionOptions(), run)
    kubernetes_validate.validate(job, "1.34.0", strict=True)
    spec = job["spec"]["template"]["spec"]
    fetch = next(c for c in spec["initContainers"] if c["name"] == "fetch-data")

    root, volume, bin_dir = tmp_path / "root", tmp_path / "volume", tmp_path / "bin"
    for directory in (root, volume, bin_dir):
        directory.mkdir()
    for mount in fetch["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = volume / mount.get("subPath", mount["name"])
        source.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    (bin_dir / "envyard").write_text(f"#!/bin/sh\nexec {sys.executable} -m envyard.cli \"$@\"\n")
    (bin_dir / "envyard").chmod(0o755)
    shell, flag, script = fetch["command"]
    assert (shell, flag) == ("sh", "-c")
    script = script.replace(f"{generate.MANIFEST_DIR}/", f"{root}{generate.MANIFEST_DIR}/").replace(
        "--dest /", f"--dest {root}/")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           **{e["name"]: e["value"] for e in fetch["env"]}}
    done = subprocess.run([shell, flag, script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout

    run_mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "envyard-data"}
    for index, mount in enumerate(("/data/train", "/opt/labels")):
        assert run_mounts[mount] == {"name": "envyard-data", "mountPath": mount, "subPath": f"data-{index}",
                                     "readOnly": True}
        seen = volume / f"data-{index}"  # what the run's container sees at the mount path
        assert (seen / "data" / "params.txt").read_text() == "learning_rate=0.1\n"
        assert (seen / "data" / "images" / "a.txt").read_text() == "image a v1\n"
