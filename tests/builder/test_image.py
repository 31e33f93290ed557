"""Image stage: reproducible digests, layer content and sharing, config, layouts read by skopeo and umoci."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from envyard.builder.errors import ImageError
from envyard.builder.image import ImageRequest, build_image, platform_lock_digest
from envyard.builder.install import InstallOptions
from envyard.builder.oci.image import ImageOptions
from envyard.builder.oci.layers import LayerBudget
from envyard.builder.oci.layout import write_layout
from envyard.builder.oci.model import MEDIA_TYPE_LAYER_ZSTD
from envyard.builder.oci.store import BlobStore
from tests.commands import ENVYARD
from tests.locking import lock_spec
from tests.packages import build_e2e_channel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world-readable directory (the reproducibility test builds as another user too)."""
    root = Path(tempfile.mkdtemp(prefix="envyard-world-"))
    root.chmod(0o755)
    build_e2e_channel(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e(world: Path) -> tuple[object, Path]:
    lock, path = lock_spec(world / "lock", world, "e2e", ["e2e-env"])
    return lock, path


def _build(lock, tmp: Path, **options) -> tuple[object, BlobStore]:  # type: ignore[no-untyped-def]
    store = BlobStore(tmp / "store")
    request = ImageRequest(lock, ["linux-64"], ImageOptions(**options), InstallOptions(cache_layers=[tmp / "cache"]))
    return build_image(request, store), store


def _layer_members(store: BlobStore, digest: str) -> list[tarfile.TarInfo]:
    data = store.read(digest)
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else __import__("zstandard").decompress(data, 1 << 30)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmembers()


def test_config_entrypoint_labels_and_layers(e2e, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lock, _ = e2e
    result, store = _build(lock, tmp_path, uid=1000, gid=100)
    manifest = result.image.root.json()
    config = json.loads(store.read(manifest["config"]["digest"]))
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    runtime = config["config"]
    assert "CONDA_PREFIX=/opt/env" in runtime["Env"] and runtime["Env"][-2].startswith("PATH=/opt/env/bin:")
    assert runtime["Entrypoint"] == ["/opt/env/.envyard/entrypoint"] and runtime["User"] == "1000:100"
    assert runtime["Labels"]["dev.envyard.lock-digest"] == platform_lock_digest(lock.platforms["linux-64"])
    assert runtime["Labels"]["dev.envyard.spec-hash"] == lock.content_hash["linux-64"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) <= 50
    assert manifest["annotations"]["org.opencontainers.image.created"] == "1970-01-01T00:00:00Z"
    members = [m for layer in manifest["layers"] for m in _layer_members(store, layer["digest"])]
    assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(1000, 100, 0, "")}
    names = {m.name for m in members}
    assert {"opt/env/bin/busybox", "opt/env/share/reloc/prefix.txt", "opt/env/.envyard/entrypoint"} <= names
    assert all(n.startswith("opt") for n in names)


def test_layers_hold_no_host_or_cache_paths(e2e, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lock, _ = e2e
    result, store = _build(lock, tmp_path)
    for layer in result.image.root.children()[1:]:
        data = gzip.decompress(store.read(layer.digest))
        for needle in (str(tmp_path).encode(), b"envyard-image-"):
            at = data.find(needle)
            assert at < 0, (layer.annotations, data[max(0, at - 200):at + 100])
        assert str(tmp_path).encode() not in data and b"envyard-image-" not in data, layer.annotations
        assert b"/opt/env" in data or b"conda-meta" in data


def test_same_lock_same_digest_across_cwd_cache_user_umask_and_time(e2e, world: Path) -> None:  # type: ignore[no-untyped-def]
    _, lock_file = e2e
    runs = []
    for i, as_nobody in enumerate([False, True]):
        work = world / f"run{i}"
        work.mkdir(mode=0o777)
        work.chmod(0o777)
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "ENVYARD_CACHE_DIR": str(work / f"cache-{i}"),
               "TZ": ["UTC", "Asia/Kathmandu"][i], "PYTHONPATH": str(REPO)}
        command = [*ENVYARD, "image", str(lock_file), "--output", f"oci:{work}/oci:t",
                   "--json"]
        if as_nobody:
            env.update(USER="builder2", LOGNAME="builder2")
            if _nobody_can_run_python():
                command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        shell = ["sh", "-c", f"umask {['022', '077'][i]}; exec \"$@\"", "sh", *command]
        result = subprocess.run(shell, cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout)["digest"])
        os.utime(lock_file, (10**9 * (i + 1), 10**9 * (i + 1)))
    assert runs[0] == runs[1]


def _nobody_can_run_python() -> bool:
    """Whether another uid can run this interpreter with its packages (not when it lives under a private /root)."""
    if shutil.which("setpriv") is None or os.getuid() != 0:
        return False
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import click, rattler"], capture_output=True)
    return probe.returncode == 0


def test_shared_packages_give_identical_layer_blobs(world: Path, tmp_path: Path) -> None:
    full, _ = lock_spec(world / "lock-full", world, "e2e", ["e2e-env"])
    part, _ = lock_spec(world / "lock-part", world, "e2e", ["busybox", "reloc-data"])
    budget = LayerBudget(max_layers=20, buckets=4, single_threshold=0)  # every package its own layer
    a, store = _build(full, tmp_path, budget=budget)
    b, _ = _build(part, tmp_path, budget=budget)
    layers_a = {x.descriptor.annotations["dev.envyard.layer"]: x.descriptor.digest for x in a.layers["linux-64"]}
    layers_b = {x.descriptor.annotations["dev.envyard.layer"]: x.descriptor.digest for x in b.layers["linux-64"]}
    shared = [name for name in layers_b if name != "environment"]
    assert shared and all(layers_a[name] == layers_b[name] for name in shared)
    assert layers_a["environment"] != layers_b["environment"]


def test_rebuild_reuses_cached_layers_and_budget_is_respected(e2e, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lock, _ = e2e
    first, store = _build(lock, tmp_path, budget=LayerBudget(max_layers=3, buckets=2))
    assert len(first.layers["linux-64"]) <= 3
    second, _ = _build(lock, tmp_path, budget=LayerBudget(max_layers=3, buckets=2))
    assert second.image.digest == first.image.digest
    assert [x.reused for x in second.layers["linux-64"]][:-1] == [True] * (len(second.layers["linux-64"]) - 1)


def test_zstd_layers_and_platform_index_written_as_oci_layout(world: Path, tmp_path: Path) -> None:
    lock, _ = lock_spec(world / "lock-multi", world, "e2e", ["reloc-data", "pyhello", "python"],
                        platforms=("linux-64", "linux-aarch64"))
    store = BlobStore(tmp_path / "store")
    request = ImageRequest(lock, ["linux-64", "linux-aarch64"], ImageOptions(compression="zstd"),
                           InstallOptions(cache_layers=[tmp_path / "cache"]), sbom="spdx")
    result = build_image(request, store)
    assert result.image.root.is_index and len(result.image.manifests) == 2
    assert {m.descriptor.platform["architecture"] for m in result.image.manifests} == {"amd64", "arm64"}
    assert all(layer.media_type == MEDIA_TYPE_LAYER_ZSTD
               for m in result.image.manifests for layer in m.children()[1:])
    assert result.image.referrers and result.image.referrers[0].json()["subject"]["digest"] == result.image.digest
    layout = write_layout(result.image, store, tmp_path / "oci", "multi")
    if shutil.which("skopeo"):
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:multi"], capture_output=True, check=True)
        assert raw.stdout == result.image.root.data
        arm = subprocess.run(["skopeo", "inspect", "--override-arch", "arm64", f"oci:{layout}:multi"],
                             capture_output=True, text=True, check=True)
        assert json.loads(arm.stdout)["Architecture"] == "arm64"
    # a second tag in the same layout keeps the first
    write_layout(result.image, store, layout, "again")
    tags = [m["annotations"].get("org.opencontainers.image.ref.name")
            for m in json.loads((layout / "index.json").read_text())["manifests"] if m.get("annotations")]
    assert {"multi", "again"} <= set(tags)


def test_umoci_unpacks_the_layout(e2e, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("umoci") is None:
        pytest.skip("umoci not installed")
    lock, _ = e2e
    result, store = _build(lock, tmp_path)
    layout = write_layout(result.image, store, tmp_path / "oci", "e2e")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:e2e", str(tmp_path / "bundle")], check=True,
                   capture_output=True)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "opt/env/share/reloc/prefix.txt").read_text() == "/opt/env\n"
    assert os.readlink(rootfs / "opt/env/bin/sh") == "busybox"


def test_bad_image_options_are_refused(e2e, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lock, _ = e2e
    with pytest.raises(ImageError, match="env-prefix"):
        ImageOptions(env_prefix="opt/env")
    with pytest.raises(ImageError, match="osx-arm64"):
        build_image(ImageRequest(lock, ["osx-arm64"], ImageOptions(), InstallOptions(cache_layers=[tmp_path])),
                    BlobStore(tmp_path / "s"))
