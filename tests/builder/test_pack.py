"""Pack stage: conda-pack layout, relocation by bin/conda-unpack (with and without Python), conda-pack compatibility."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from envyard.builder.errors import ImageError
from envyard.builder.install import InstallOptions, install_lock
from envyard.builder.pack import PACKED_PREFIX, pack_prefix
from tests.locking import lock_spec
from tests.packages import build_e2e_channel

BUSYBOX_TOOLS = ("sh", "sed", "cat", "dirname", "printf", "echo")


@pytest.fixture(scope="module")
def packed_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The e2e environment installed for the packing placeholder prefix."""
    root = tmp_path_factory.mktemp("pack")
    build_e2e_channel(root)
    lock, _ = lock_spec(root / "lock", root, "e2e", ["e2e-env"])
    prefix = root / "env"
    install_lock(lock.platforms["linux-64"], prefix, InstallOptions(cache_layers=[root / "cache"],
                                                                    target_prefix=PACKED_PREFIX))
    return prefix


def _unpack(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xf", archive, "-C", dest], check=True)
    return dest


def test_archive_has_conda_pack_layout_and_relocates_with_python(packed_env: Path, tmp_path: Path) -> None:
    archive = pack_prefix(packed_env, tmp_path / "env.tar.gz", packed_prefix=PACKED_PREFIX).archive
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    for expected in ("bin/conda-unpack", "bin/activate", "bin/deactivate", "conda-meta/history", "bin/busybox"):
        assert expected in names
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
    dest = _unpack(archive, tmp_path / "somewhere" / "else")
    assert (dest / "share/reloc/prefix.txt").read_text() == PACKED_PREFIX + "\n"
    subprocess.run([dest / "bin/conda-unpack"], check=True)  # python3 is on the host PATH
    assert (dest / "share/reloc/prefix.txt").read_text() == f"{dest}\n"
    out = subprocess.run([dest / "bin/show-prefix"], capture_output=True, text=True, check=True).stdout
    assert f"prefix={dest}" in out
    activated = subprocess.run([dest / "bin/sh", "-c", f". {dest}/bin/activate && echo $RELOC_ACTIVATED $CONDA_PREFIX"],
                               capture_output=True, text=True, check=True).stdout
    assert activated.split() == ["yes", str(dest)]


def test_conda_unpack_without_python_uses_sed(packed_env: Path, tmp_path: Path) -> None:
    archive = pack_prefix(packed_env, tmp_path / "env.tar.zst", packed_prefix=PACKED_PREFIX).archive
    dest = _unpack(archive, tmp_path / "unpacked")
    tools = tmp_path / "busybox-only"
    tools.mkdir()
    for tool in BUSYBOX_TOOLS:
        (tools / tool).symlink_to("/bin/busybox")
    result = subprocess.run([tools / "sh", dest / "bin/conda-unpack"], env={"PATH": str(tools)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (dest / "share/reloc/prefix.txt").read_text() == f"{dest}\n"
    # the packing prefix is longer than a shebang may be, so rattler wrote '#!/usr/bin/env sh' there
    assert f'echo "prefix={dest}"' in (dest / "bin/show-prefix").read_text()


def test_pack_is_byte_reproducible(packed_env: Path, tmp_path: Path) -> None:
    first = pack_prefix(packed_env, tmp_path / "a" / "env.tar.gz", packed_prefix=PACKED_PREFIX).archive
    os.utime(packed_env / "share/reloc/prefix.txt", (1, 1))
    second = pack_prefix(packed_env, tmp_path / "b" / "env.tar.gz", packed_prefix=PACKED_PREFIX).archive
    assert first.read_bytes() == second.read_bytes()


def test_conda_pack_reads_our_prefix(packed_env: Path, tmp_path: Path) -> None:
    conda_pack = pytest.importorskip("conda_pack")
    out = tmp_path / "by-conda-pack.tar.gz"
    # conda-pack reads conda-meta records to find every package's files; an unmanaged file would be refused
    conda_pack.pack(prefix=str(packed_env), output=str(out), ignore_missing_files=False, ignore_editable_packages=True)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"bin/busybox", "share/reloc/prefix.txt", "bin/conda-unpack"} <= names


def test_unknown_archive_suffix_and_non_environment_are_refused(packed_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="archive format"):
        pack_prefix(packed_env, tmp_path / "env.zip", packed_prefix=PACKED_PREFIX)
    with pytest.raises(ImageError, match="not a conda environment"):
        pack_prefix(tmp_path, tmp_path / "x.tar.gz", packed_prefix=str(tmp_path))
    assert not (tmp_path / "x.tar.gz").exists()
