"""End to end, through the CLI: channel -> lock -> install -> image -> registry -> skopeo -> umoci -> runc.

Everything real and on loopback: a channel built from the host's static busybox
and relocatable packages, Debian's docker-registry, skopeo, umoci and runc.
Also: an incremental rebuild after one leaf package changes pushes only what changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.commands import ENVYARD
from tests.packages import build_e2e_channel

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("skopeo", "umoci", "runc")


def envyard(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*ENVYARD, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"envyard {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ENVYARD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}


def _spec(path: Path, deps: list[str]) -> Path:
    path.write_text("name: e2e\nchannels:\n  - e2e\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps))
    return path


def test_lock_install_image_push_inspect_unpack_run(registry: str, tmp_path: Path) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    build_e2e_channel(tmp_path / "channels")
    env = _env(tmp_path)
    alias = f"file://{tmp_path / 'channels'}/"
    spec = _spec(tmp_path / "environment.yml", ["e2e-env"])
    envyard("lock", str(spec), "--channel-alias", alias, "-o", str(tmp_path / "lock"), cwd=tmp_path, env=env)
    lock_file = tmp_path / "lock" / "conda-lock.yml"

    installed = json.loads(envyard("install", str(lock_file), "--prefix", str(tmp_path / "env"), "--json",
                                   cwd=tmp_path, env=env).stdout)
    assert installed["conda"] == 5
    assert subprocess.run([tmp_path / "env/bin/show-prefix"], capture_output=True, text=True,
                          check=True).stdout.startswith(f"prefix={tmp_path / 'env'}\n")

    ref = f"{registry}/team/e2e:1.0"
    built = json.loads(envyard("image", str(lock_file), "-p", "linux-64", "--push", ref,
                               "--output", f"oci:{tmp_path / 'oci'}:e2e", "--json", cwd=tmp_path, env=env).stdout)
    digest = built["digest"]
    assert built["push"]["digest"] == digest and built["push"]["uploaded_blobs"] >= 3

    inspected = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["Digest"] == digest
    assert inspected["Labels"]["dev.envyard.env-prefix"] == "/opt/env"
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{copied}:e2e"],
                   check=True, capture_output=True)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{copied}:e2e", str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs/opt/env/share/reloc/prefix.txt").read_text() == "/opt/env\n"

    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"][0] == "/opt/env/.envyard/entrypoint"
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/opt/env/.envyard/entrypoint", "sh", "-c",
                                 "show-prefix; echo activated=$RELOC_ACTIVATED; cat /opt/env/share/reloc/prefix.txt"]
    (bundle / "config.json").write_text(json.dumps(config))
    container = f"envyard-e2e-{os.getpid()}"
    run = subprocess.run(["runc", "run", "--bundle", str(bundle), container], capture_output=True, text=True,
                         timeout=60)
    subprocess.run(["runc", "delete", "--force", container], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["prefix=/opt/env", "conda_prefix=/opt/env", "activated=yes", "/opt/env"]


def test_one_leaf_change_pushes_only_the_changed_layers(registry: str, tmp_path: Path) -> None:
    channels = tmp_path / "channels"
    build_e2e_channel(channels)
    env = _env(tmp_path)
    alias = f"file://{channels}/"
    spec = _spec(tmp_path / "environment.yml", ["busybox", "reloc-data", "pyhello", "python"])
    envyard("lock", str(spec), "--channel-alias", alias, "-o", str(tmp_path / "v1"), cwd=tmp_path, env=env)
    ref = f"{registry}/team/incremental:1"
    first = json.loads(envyard("image", str(tmp_path / "v1/conda-lock.yml"), "--push", ref, "--sbom", "none",
                               "--max-layers", "8", "--json", cwd=tmp_path, env=env).stdout)

    # a new release of the leaf package pyhello appears in the channel; re-lock and rebuild
    from envyard.builder.localchannel import build_channel

    recipe = tmp_path / "pyhello-0.2.yaml"
    recipe.write_text('package: {name: pyhello, version: "0.2.0"}\nbuild: {number: 0, string: pyh0_0, noarch: python}\n'
                      'requirements:\n  run: ["python >=3.11"]\n'
                      'files:\n  site-packages/pyhello/__init__.py: "GREETING = \'hello again\'\\n"\n')
    staging = tmp_path / "staging"
    build_channel([recipe], staging)
    shutil.copy(next((staging / "noarch").glob("pyhello-0.2.0*.conda")), channels / "e2e" / "noarch")
    from tests.packages import index_channel

    index_channel(channels / "e2e")
    envyard("lock", str(spec), "--channel-alias", alias, "-o", str(tmp_path / "v2"), cwd=tmp_path, env=env)
    ref2 = f"{registry}/team/incremental:2"
    second = json.loads(envyard("image", str(tmp_path / "v2/conda-lock.yml"), "--push", ref2, "--sbom", "none",
                                "--max-layers", "8", "--json", cwd=tmp_path, env=env).stdout)
    assert second["digest"] != first["digest"]
    push = second["push"]
    # the bucket holding pyhello, the environment layer (conda-meta/history) and the config; nothing else
    assert push["uploaded_blobs"] <= 3, push
    assert push["existing_blobs"] >= first["layers"]["linux-64"] - 2, push
