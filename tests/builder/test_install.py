"""Install stage against real local channels: relocation, layered caches, integrity, hostile packages, atomicity."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envyard.builder.errors import InstallError, PackageIntegrityError, UnsafePackageError
from envyard.builder.install import InstallOptions, install_lock
from envyard.builder.model import LockedPipPackage
from tests.commands import ENVYARD
from tests.locking import lock_spec
from tests.packages import HOSTILE_PACKAGES, build_e2e_channel, build_hostile_channel, tamper
from tests.wheelhouse import build_wheel


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install-channels")
    build_e2e_channel(root)
    build_hostile_channel(root)
    return root


@pytest.fixture(scope="module")
def e2e_lock(channels: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    lock, path = lock_spec(tmp_path_factory.mktemp("e2e-lock"), channels, "e2e", ["e2e-env"])
    return lock.platforms["linux-64"]


def _stages(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".envyard-" in p.name]


def test_install_relocates_links_and_runs(e2e_lock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    prefix = tmp_path / "envs" / "e2e"
    result = install_lock(e2e_lock, prefix, InstallOptions(cache_layers=[cache]))
    assert result.conda_packages == len(e2e_lock.conda) and result.fetched == len(e2e_lock.conda)
    assert (prefix / "share/reloc/prefix.txt").read_text() == f"{prefix}\n"
    out = subprocess.run([prefix / "bin/show-prefix"], capture_output=True, text=True, check=True).stdout
    assert f"prefix={prefix}" in out
    assert subprocess.run([prefix / "bin/sh", "-c", "echo ok"], capture_output=True, text=True).stdout == "ok\n"
    assert (prefix / "lib/python3.11/site-packages/pyhello/__init__.py").read_text().startswith("GREETING")
    assert (prefix / "etc/conda/activate.d/reloc.sh").is_file()
    assert _stages(prefix.parent) == []
    # conda-meta: the lock's URLs, never this machine's cache
    for record_file in (prefix / "conda-meta").glob("*.json"):
        text = record_file.read_text()
        assert str(cache) not in text, record_file.name
        record = json.loads(text)
        assert record["url"].startswith("file://") and "extracted_package_dir" not in record
    assert not (prefix / "CACHEDIR.TAG").exists()


def test_alternative_target_prefix_is_written_into_files(e2e_lock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix = tmp_path / "built-here"
    install_lock(e2e_lock, prefix, InstallOptions(cache_layers=[tmp_path / "cache"], target_prefix="/opt/env"))
    assert (prefix / "share/reloc/prefix.txt").read_text() == "/opt/env\n"
    assert (prefix / "bin/show-prefix").read_text().startswith("#!/opt/env/bin/sh\n")


def test_read_only_shared_cache_layer_is_used_by_hardlinks(e2e_lock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    install_lock(e2e_lock, tmp_path / "first", InstallOptions(cache_layers=[shared]))
    mine = tmp_path / "mine"
    result = install_lock(e2e_lock, tmp_path / "second", InstallOptions(cache_layers=[mine, shared]))
    assert result.from_cache == len(e2e_lock.conda) and result.fetched == 0
    assert not [p for p in mine.iterdir() if p.is_dir()] if mine.exists() else True
    assert os.stat(tmp_path / "second/bin/busybox").st_nlink > 1  # hardlinked from the shared layer


def test_tampered_package_is_refused_and_nothing_is_left(channels: Path, e2e_lock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "channel"
    shutil.copytree(channels / "e2e", copy)
    victim = next(p for p in e2e_lock.conda if p.name == "reloc-data")
    tamper(copy / victim.subdir / victim.file_name)
    moved = tuple(dataclasses.replace(p, url=(copy / p.subdir / p.file_name).as_uri()) for p in e2e_lock.conda)
    lock = dataclasses.replace(e2e_lock, conda=moved)
    prefix = tmp_path / "env"
    with pytest.raises(PackageIntegrityError) as err:
        install_lock(lock, prefix, InstallOptions(cache_layers=[tmp_path / "cache"]))
    assert "reloc-data" in err.value.message and victim.sha256 in err.value.message
    assert not prefix.exists() and _stages(tmp_path) == []


@pytest.mark.parametrize("name", sorted(HOSTILE_PACKAGES))
def test_package_escaping_the_prefix_is_refused(name: str, channels: Path, tmp_path: Path) -> None:
    lock, _ = lock_spec(tmp_path / "lock", channels, "hostile", [name])
    prefix = tmp_path / "env"
    with pytest.raises(UnsafePackageError) as err:
        install_lock(lock.platforms["linux-64"], prefix, InstallOptions(cache_layers=[tmp_path / "cache"]))
    assert name in err.value.message
    assert not prefix.exists() and _stages(tmp_path) == []
    assert not Path("/tmp/envyard-escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_hostile_entry_in_a_shared_cache_is_refused(channels: Path, tmp_path: Path) -> None:
    lock, _ = lock_spec(tmp_path / "lock", channels, "hostile", ["benign"])
    package = lock.platforms["linux-64"].conda[0]
    shared = tmp_path / "shared"
    entry = shared / f"{package.name}-{package.version}-{package.build}"
    (entry / "info").mkdir(parents=True)
    (entry / "info/paths.json").write_text(json.dumps({"paths": [{"_path": "../../outside", "path_type": "hardlink"}]}))
    (shared / f"{entry.name}.lock").write_bytes(bytes(8) + bytes.fromhex(package.sha256 or ""))
    with pytest.raises(UnsafePackageError, match="outside"):
        install_lock(lock.platforms["linux-64"], tmp_path / "env",
                     InstallOptions(cache_layers=[tmp_path / "c", shared]))


def test_existing_prefix_needs_replace_and_is_swapped_atomically(e2e_lock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix = tmp_path / "env"
    options = InstallOptions(cache_layers=[tmp_path / "cache"])
    install_lock(e2e_lock, prefix, options)
    with pytest.raises(InstallError, match="already there") as err:
        install_lock(e2e_lock, prefix, options)
    assert "--force" in (err.value.hint or "")
    (prefix / "marker").write_text("old")
    install_lock(e2e_lock, prefix, dataclasses.replace(options, replace=True))
    assert not (prefix / "marker").exists() and (prefix / "bin/busybox").exists()
    assert _stages(tmp_path) == []


def test_interrupted_install_never_leaves_a_partial_prefix(channels: Path, tmp_path: Path) -> None:
    _, lock_file = lock_spec(tmp_path / "lock", channels, "e2e", ["e2e-env"])
    env = {**os.environ, "ENVYARD_CACHE_DIR": str(tmp_path / "cache")}
    for delay, sig in [(0.2, signal.SIGTERM), (0.5, signal.SIGTERM), (0.8, signal.SIGTERM), (0.6, signal.SIGKILL)]:
        prefix = tmp_path / f"env-{delay}-{sig.name}"
        proc = subprocess.Popen([*ENVYARD, "install", str(lock_file), "--prefix", str(prefix)],
                                env=env, cwd=Path(__file__).resolve().parents[2],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        # either not there at all, or complete
        if prefix.exists():
            assert len(list((prefix / "conda-meta").glob("*.json"))) == 5
        if sig is signal.SIGTERM:
            assert _stages(tmp_path) == [], f"staging left after {sig.name} at {delay}s"
    # a killed install's staging directory is removed by the next install beside it
    final = tmp_path / "env-final"
    install_lock(_read(lock_file), final, InstallOptions(cache_layers=[tmp_path / "cache"]))
    assert _stages(tmp_path) == []


def _read(lock_file: Path):  # type: ignore[no-untyped-def]
    from envyard.builder.lockfiles import read_lockfile

    return read_lockfile(lock_file).platforms["linux-64"]


def test_pip_packages_are_installed_with_hashes_and_retargeted_scripts(tmp_path: Path) -> None:
    from envyard.builder.localchannel import build_channel

    recipe = tmp_path / "python.yaml"
    recipe.write_text(
        'package: {name: python, version: "3.11.7"}\nbuild: {number: 0, string: host_0}\n'
        "files:\n  bin/python: {text: \"#!/bin/sh\\nexec " + sys.executable + ' \\"$@\\"\\n", mode: 0o755}\n'
        '  lib/python3.11/site-packages/README: "x\\n"\n'
    )
    build_channel([recipe], tmp_path / "ch" / "hostpy")
    lock, _ = lock_spec(tmp_path / "lock", tmp_path / "ch", "hostpy", ["python"])
    wheel = build_wheel(tmp_path / "wheels", "tinytool", "1.0", scripts={"tinytool": "tinytool:main"})
    import hashlib

    pip = LockedPipPackage("tinytool", "1.0", wheel.as_uri(), hashlib.sha256(wheel.read_bytes()).hexdigest())
    platform_lock = dataclasses.replace(lock.platforms["linux-64"], pip=(pip,))
    prefix = tmp_path / "env"
    result = install_lock(platform_lock, prefix, InstallOptions(cache_layers=[tmp_path / "cache"],
                                                                target_prefix="/opt/env"))
    assert result.pip_packages == 1
    assert list(prefix.glob("lib/python3.11/site-packages/tinytool*"))
    script = prefix / "bin" / "tinytool"
    assert script.read_text().startswith("#!/opt/env/bin/python")

    bad = dataclasses.replace(platform_lock, pip=(dataclasses.replace(pip, sha256="0" * 64),))
    with pytest.raises(InstallError, match="pip packages could not be installed"):
        install_lock(bad, tmp_path / "env-bad", InstallOptions(cache_layers=[tmp_path / "cache"]))
    assert not (tmp_path / "env-bad").exists() and _stages(tmp_path) == []
