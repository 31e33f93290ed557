"""``envyard install | pack | image`` from the command line: the README's command, base images, --load, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.commands import ENVYARD
from tests.locking import lock_spec
from tests.packages import build_e2e_channel
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture(scope="module")
def e2e_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-image")
    build_e2e_channel(root)
    return lock_spec(root / "lock", root, "e2e", ["e2e-env"])[1]


def test_readme_main_command_builds_the_demo_on_the_embedded_service(tmp_path: Path) -> None:
    """README line 1: embedded server (SQLite, local store, in-process worker), one build followed to the end."""
    readme = (REPO / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("pip install -e . && "))
    port = str(free_port())
    command = (line.removeprefix("pip install -e . && ").replace("specs/", f"{REPO}/specs/")
               .replace("envyard serve ", f"envyard serve --port {port} ")
               .replace("envyard --data-dir", f"envyard --api http://127.0.0.1:{port} --data-dir"))
    env = {**os.environ, "ENVYARD_CACHE_DIR": str(tmp_path / "cache"), "PWD": str(tmp_path)}
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "build 1 completed" in result.stdout + result.stderr
    data = tmp_path / ".envyard" / "data"
    assert (data / "envyard.db").is_file() and (data / "admin-token").stat().st_mode & 0o777 == 0o600
    blobs = list((data / "artifacts" / "blobs" / "sha256").iterdir())
    assert blobs and all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in blobs)
    assert shlex.split(command)[0] == "envyard"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["image", "{lock}"], "nothing to do with the image", 1),
        (["image", "{lock}", "--output", "dir:/x"], "only OCI layouts", 1),
        (["image", "{lock}", "--output", "oci:{tmp}/o", "-p", "osx-arm64"], "the lock has no osx-arm64", 4),
        (["image", "{lock}", "--output", "oci:{tmp}/o", "--env-prefix", "opt/env"], "must be an absolute path", 4),
        (["image", "{lock}", "--output", "oci:{tmp}/o", "--user", "nobody"], "is not UID:GID", 1),
        (["install", "{lock}", "--prefix", "{tmp}/p", "-p", "win-64"], "the lock has no win-64", 1),
        (["pack", "{lock}", "-o", "{tmp}/env.zip"], "cannot tell the archive format", 4),
        (["pack", "-o", "{tmp}/env.tar.gz"], "give either a LOCKFILE or --prefix", 1),
        (["image", "{tmp}/missing.yml", "--output", "oci:{tmp}/o"], "cannot read the lock file", 1),
        (["image", "{lock}", "--push", "bad ref!", "--sbom", "none"], "invalid image reference", 5),
    ],
)
def test_errors_are_one_line_with_exit_codes(args: list[str], message: str, code: int, e2e_lock: Path,
                                             tmp_path: Path) -> None:
    argv = [a.replace("{lock}", str(e2e_lock)).replace("{tmp}", str(tmp_path)) for a in args]
    result = run(*argv, cwd=tmp_path, env={"ENVYARD_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_install_and_pack_json(e2e_lock: Path, tmp_path: Path) -> None:
    env = {"ENVYARD_CACHE_DIR": str(tmp_path / "cache")}
    installed = json.loads(run("install", str(e2e_lock), "--prefix", str(tmp_path / "env"), "--json",
                               cwd=tmp_path, env=env).stdout)
    assert installed["conda"] == 5 and installed["target_prefix"] == str(tmp_path / "env")
    packed = json.loads(run("pack", str(e2e_lock), "-o", str(tmp_path / "env.tar.zst"), "--json",
                            cwd=tmp_path, env=env).stdout)
    assert packed["relocated_files"] >= 2 and (tmp_path / "env.tar.zst").is_file()
    again = json.loads(run("pack", "--prefix", str(tmp_path / "env"), "-o", str(tmp_path / "again.tar.gz"),
                           "--json", cwd=tmp_path, env=env).stdout)
    assert again["files"] > 10


def test_base_image_from_registry_is_pulled_by_digest_and_mounted(e2e_lock: Path, registry: str,
                                                                  tmp_path: Path) -> None:
    env = {"ENVYARD_CACHE_DIR": str(tmp_path / "cache")}
    base_ref = f"{registry}/base/busybox-env:1"
    base = json.loads(run("image", str(e2e_lock), "--push", base_ref, "--sbom", "none", "--json",
                          cwd=tmp_path, env=env).stdout)
    # a second environment on top of the first image, pushed to another repository of the same registry
    lock = lock_spec(tmp_path / "small", e2e_lock.parents[1], "e2e", ["reloc-data"])[1]
    result = run("image", str(lock), "--base", base_ref, "--push", f"{registry}/apps/reloc:1", "--json",
                 "--output", f"oci:{tmp_path / 'oci'}:app", cwd=tmp_path, env={**env, "ENVYARD_CACHE_DIR":
                                                                              str(tmp_path / "cache2")})
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["push"]["mounted_blobs"] >= base["layers"]["linux-64"]
    index = json.loads((tmp_path / "oci/index.json").read_text())
    manifest_digest = next(m["digest"] for m in index["manifests"] if m.get("annotations"))
    manifest = json.loads((tmp_path / "oci/blobs/sha256" / manifest_digest.split(":")[1]).read_text())
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == base["digest"]
    assert manifest["annotations"]["org.opencontainers.image.base.name"].endswith("@" + base["digest"])
    config = json.loads((tmp_path / "oci/blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["config"]["Entrypoint"] == ["/opt/env/.envyard/entrypoint"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) > base["layers"]["linux-64"]


def test_load_into_a_docker_api_daemon(e2e_lock: Path, tmp_path: Path) -> None:
    from tests.podman import podman_available, podman_service

    if not podman_available():
        pytest.skip("podman not installed")
    with podman_service() as docker_host:
        result = run("image", str(e2e_lock), "--load", "--tag", "envyard-cli:1", "--json", cwd=tmp_path,
                     env={"ENVYARD_CACHE_DIR": str(tmp_path / "cache"), "DOCKER_HOST": docker_host})
        assert result.returncode == 0, result.stderr
        assert any("envyard-cli:1" in name for name in json.loads(result.stdout)["load"])
        import docker

        client = docker.DockerClient(base_url=docker_host)
        try:
            image = client.images.get("envyard-cli:1")
            assert image.labels["dev.envyard.env-prefix"] == "/opt/env"
        finally:
            client.close()
