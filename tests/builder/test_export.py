"""Pinned environment.yml export: readable by envyard's own spec parser, and re-locking it gives the same lock."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from envyard.builder.errors import LockfileError
from envyard.builder.export import pinned_environment_yaml
from envyard.builder.model import EnvironmentLock, LockedCondaPackage, LockedPipPackage, PlatformLock
from envyard.builder.spec import parse_environment_yaml
from tests.locking import lock_spec
from tests.packages import build_e2e_channel


def _conda(name: str, version: str, build: str, channel: str = "https://example.org/ch") -> LockedCondaPackage:
    return LockedCondaPackage(name=name, version=version, build=build, build_number=0, subdir="linux-64",
                              channel=channel, url=f"{channel}/linux-64/{name}-{version}-{build}.conda",
                              sha256="0" * 64, md5=None)


def test_pins_conda_and_pip_and_parses_back() -> None:
    lock = EnvironmentLock(
        platforms={"linux-64": PlatformLock("linux-64", conda=(_conda("zlib", "1.3.1", "h0_1"),
                                                               _conda("python", "3.12.1", "h0_cpython")),
                                            pip=(LockedPipPackage("Typing_Extensions", "4.12.2", "https://x/t.whl",
                                                                  None),))},
        name="pinned", channels=("conda-forge", "${PRIVATE}/ch"),
    )
    text = pinned_environment_yaml(lock, "linux-64")
    doc = yaml.safe_load(text)
    assert doc == {"name": "pinned", "channels": ["conda-forge", "${PRIVATE}/ch", "nodefaults"],
                   "dependencies": ["python==3.12.1=h0_cpython", "zlib==1.3.1=h0_1",
                                    {"pip": ["typing-extensions==4.12.2"]}]}
    spec = parse_environment_yaml(text, environ={"PRIVATE": "https://private.example"})
    assert spec.conda_specs("linux-64") == ("python==3.12.1=h0_cpython", "zlib==1.3.1=h0_1")
    assert spec.nodefaults and spec.channels == ("conda-forge", "https://private.example/ch")
    assert [str(r) for r in spec.pip_requirements("linux-64")] == ["typing-extensions==4.12.2"]
    assert pinned_environment_yaml(lock, "linux-64") == text


def test_channels_come_from_the_packages_when_the_lock_has_none() -> None:
    lock = EnvironmentLock(platforms={"linux-64": PlatformLock("linux-64", conda=(
        _conda("a", "1", "0", "file:///srv/one/"), _conda("b", "1", "0", "file:///srv/two"),
        _conda("c", "1", "0", "file:///srv/one")))})
    doc = yaml.safe_load(pinned_environment_yaml(lock, "linux-64"))
    assert doc["name"] == "environment"
    assert doc["channels"] == ["file:///srv/one", "file:///srv/two", "nodefaults"]


def test_empty_platform_and_unknown_platform() -> None:
    lock = EnvironmentLock(platforms={"linux-64": PlatformLock("linux-64")}, name="empty")
    assert yaml.safe_load(pinned_environment_yaml(lock, "linux-64"))["dependencies"] == []
    with pytest.raises(LockfileError, match="the lock has no osx-arm64"):
        pinned_environment_yaml(lock, "osx-arm64")


def test_relocking_the_export_gives_the_same_packages(tmp_path: Path) -> None:
    from envyard.builder.channels import ChannelOptions
    from envyard.builder.lock import LockOptions
    from envyard.builder.pipeline import lock_to_directory

    build_e2e_channel(tmp_path)
    lock, _ = lock_spec(tmp_path / "first", tmp_path, "e2e", ["reloc-data", "pyhello"], ("linux-64", "linux-aarch64"))
    for platform in ("linux-64", "linux-aarch64"):
        exported = tmp_path / f"pinned-{platform}.yml"
        exported.write_text(pinned_environment_yaml(lock, platform))
        options = LockOptions(platforms=(platform,), channels=ChannelOptions(channel_alias=tmp_path.as_uri() + "/"))
        again = lock_to_directory(exported, tmp_path / f"again-{platform}", options, cache_dir=tmp_path / "cache")
        assert again.lock.platforms[platform].conda == lock.platforms[platform].conda
