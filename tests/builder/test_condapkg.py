"""The .conda writer and the recipe channel: reproducible bytes, paths.json, and real installs with rattler."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from envyard.builder.condapkg import PREFIX_PLACEHOLDER, PackageFile, index_json, write_conda_package
from envyard.builder.errors import SpecError
from envyard.builder.localchannel import build_channel, read_recipes
from tests.packages import (
    E2E_PACKAGES,
    HOSTILE_PACKAGES,
    build_e2e_channel,
    build_hostile_channel,
    channel_records,
    install_prefix,
    pkg_members,
    read_member,
    tamper,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("condapkg-channels")
    build_e2e_channel(root)
    build_hostile_channel(root)
    return root


@pytest.fixture(scope="module")
def e2e(channels: Path) -> Path:
    return channels / "e2e"


@pytest.fixture(scope="module")
def prefix(e2e: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole e2e environment installed by plain rattler."""
    root = tmp_path_factory.mktemp("e2e-install")
    return install_prefix(channel_records(e2e, E2E_PACKAGES), root / "env", root / "cache")


def _paths(archive: Path) -> dict[str, dict[str, object]]:
    paths = json.loads(read_member(archive, "info/paths.json"))
    assert paths["paths_version"] == 1
    return {entry["_path"]: entry for entry in paths["paths"]}


def test_same_input_same_bytes_whatever_the_dir_clock_or_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = build_channel([REPO / "specs" / "recipes"], tmp_path / "a")
    time.sleep(1.1)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    second = build_channel([REPO / "specs" / "recipes"], tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    assert not (tmp_path / "a" / ".tmp").exists()


def test_archive_layout_is_fixed(e2e: Path):
    archive = e2e / "linux-64" / "reloc-data-1.0-h0_0.conda"
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        assert json.loads(zf.read("metadata.json")) == {"conda_pkg_format_version": 2}
    assert [i.filename for i in infos] == [
        "metadata.json", "pkg-reloc-data-1.0-h0_0.tar.zst", "info-reloc-data-1.0-h0_0.tar.zst"]
    assert {(i.compress_type, i.date_time) for i in infos} == {(zipfile.ZIP_STORED, (1980, 1, 1, 0, 0, 0))}
    members = list(pkg_members(archive).values())
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1717200000)}
    assert read_member(archive, "info/files").decode().splitlines() == [m.name for m in members]
    index = json.loads(read_member(archive, "info/index.json"))
    assert index == {"name": "reloc-data", "version": "1.0", "build": "h0_0", "build_number": 0, "depends": [],
                     "subdir": "linux-64", "platform": "linux", "arch": "x86_64", "license": "MIT",
                     "timestamp": 1717200000000}
    assert json.loads(read_member(archive, "info/about.json"))["license"] == "MIT"


def test_paths_json_records_hashes_placeholders_and_symlinks(e2e: Path):
    reloc = e2e / "linux-64" / "reloc-data-1.0-h0_0.conda"
    paths = _paths(reloc)
    assert set(paths) == {"bin/show-prefix", "etc/conda/activate.d/reloc.sh", "share/reloc/prefix.txt"}
    for rel, entry in paths.items():
        data = read_member(reloc, rel)
        assert entry["path_type"] == "hardlink"
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size_in_bytes"] == len(data)
    for rel in ("bin/show-prefix", "share/reloc/prefix.txt"):
        assert paths[rel]["prefix_placeholder"] == PREFIX_PLACEHOLDER and paths[rel]["file_mode"] == "text"
        assert PREFIX_PLACEHOLDER.encode() in read_member(reloc, rel)
    assert "prefix_placeholder" not in paths["etc/conda/activate.d/reloc.sh"]
    assert len(PREFIX_PLACEHOLDER) == 255 and b"@PREFIX@" not in read_member(reloc, "bin/show-prefix")
    assert pkg_members(reloc)["bin/show-prefix"].mode == 0o755

    busybox = e2e / "linux-64" / "busybox-1.36.1-h0_0.conda"
    paths, members = _paths(busybox), pkg_members(busybox)
    assert paths["bin/busybox"]["sha256"] == hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest()
    assert "prefix_placeholder" not in paths["bin/busybox"] and members["bin/busybox"].mode == 0o755
    for link in ("sh", "cat", "echo", "env", "ls"):
        assert paths[f"bin/{link}"]["path_type"] == "softlink"
        assert members[f"bin/{link}"].issym() and members[f"bin/{link}"].linkname == "busybox"


def test_platforms_of_the_e2e_channel(e2e: Path):
    def names(subdir: str) -> set[str]:
        return {p.name for p in (e2e / subdir).glob("*.conda")}

    assert names("linux-64") == {"busybox-1.36.1-h0_0.conda", "reloc-data-1.0-h0_0.conda",
                                 "python-3.11.7-h0_0_cpython.conda", "e2e-env-1.0-0.conda"}
    assert names("linux-aarch64") == {"reloc-data-1.0-h0_0.conda", "python-3.11.7-h0_0_cpython.conda"}
    assert names("noarch") == {"pyhello-0.1.0-pyh0_0.conda"}
    pyhello = e2e / "noarch" / "pyhello-0.1.0-pyh0_0.conda"
    assert json.loads(read_member(pyhello, "info/index.json"))["noarch"] == "python"
    assert json.loads(read_member(pyhello, "info/link.json"))["noarch"] == {"type": "python"}
    assert set(_paths(pyhello)) == {"site-packages/pyhello/__init__.py", "python-scripts/pyhello"}


def test_rattler_installs_and_relocates_the_e2e_environment(prefix: Path):
    text = (prefix / "share" / "reloc" / "prefix.txt").read_text()
    assert text == f"{prefix}\n"
    env = {"CONDA_PREFIX": str(prefix), "PATH": str(prefix / "bin")}
    shown = subprocess.run([prefix / "bin" / "show-prefix"], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout == f"prefix={prefix}\nconda_prefix={prefix}\n"
    assert (prefix / "etc/conda/activate.d/reloc.sh").read_text() == "export RELOC_ACTIVATED=yes\n"
    assert subprocess.run([prefix / "bin" / "sh", "-c", "echo ok"], env=env, capture_output=True, text=True,
                          check=True).stdout == "ok\n"
    for link in ("sh", "cat", "echo", "env", "ls"):
        assert os.readlink(prefix / "bin" / link) == "busybox"
    assert (prefix / "bin" / "busybox").stat().st_mode & stat.S_IXUSR


def test_noarch_python_lands_in_site_packages_and_bin(prefix: Path):
    init = prefix / "lib" / "python3.11" / "site-packages" / "pyhello" / "__init__.py"
    assert init.read_text() == 'GREETING = "hello"\n'
    script = prefix / "bin" / "pyhello"
    assert script.stat().st_mode & stat.S_IXUSR
    assert subprocess.run([script], capture_output=True, text=True, check=True).stdout == "hello\n"
    assert not (prefix / "site-packages").exists() and not (prefix / "python-scripts").exists()


def test_alternative_target_prefix_and_binary_placeholders(e2e: Path, tmp_path: Path):
    blob = b"\x7fELF\0" + PREFIX_PLACEHOLDER.encode() + b"/lib/libx.so\0after\0"
    source = tmp_path / "blob.bin"
    source.write_bytes(blob)
    recipe = tmp_path / "bin.yaml"
    recipe.write_text(f"package: {{name: binreloc, version: '1'}}\nfiles:\n  lib/blob.bin: {{copy: {source}}}\n")
    (built,) = build_channel([recipe], tmp_path / "bin")
    assert _paths(built)["lib/blob.bin"]["file_mode"] == "binary"
    records = channel_records(e2e, ["reloc-data"]) + channel_records(tmp_path / "bin", ["binreloc"])
    env = install_prefix(records, tmp_path / "env", tmp_path / "cache", alternative_target_prefix="/opt/env")
    assert (env / "share" / "reloc" / "prefix.txt").read_text() == "/opt/env\n"
    assert (env / "bin" / "show-prefix").read_text().startswith("#!/opt/env/bin/sh\necho \"prefix=/opt/env\"\n")
    installed = (env / "lib" / "blob.bin").read_bytes()
    assert len(installed) == len(blob)
    padding = len(PREFIX_PLACEHOLDER) - len("/opt/env")
    assert installed == b"\x7fELF\0/opt/env/lib/libx.so" + b"\0" * (padding + 1) + b"after\0"


def test_recipe_file_forms(tmp_path: Path):
    tool = tmp_path / "tool"
    tool.write_bytes(b"\x00\x01binary")
    tool.chmod(0o755)
    recipe = tmp_path / "forms.yaml"
    recipe.write_text(
        "package: {name: forms, version: '1'}\n"
        "files:\n"
        "  libexec/tool: {copy: tool}\n"
        "  libexec/run: {text: \"#!/bin/sh\\n\", mode: 0o750}\n"
        "  share/alias: {symlink: ../libexec/tool}\n"
        "  share/plain.txt: plain\n"
    )
    (archive,) = build_channel([recipe], tmp_path / "forms")
    members = pkg_members(archive)
    assert members["libexec/tool"].mode == 0o755 and read_member(archive, "libexec/tool") == b"\x00\x01binary"
    assert members["libexec/run"].mode == 0o750 and members["share/plain.txt"].mode == 0o644
    assert members["share/alias"].linkname == "../libexec/tool"
    assert all("prefix_placeholder" not in entry for entry in _paths(archive).values())

    recipe.write_text("package: {name: bad, version: '1'}\nfiles:\n  a: {copy: missing, symlink: x}\n")
    with pytest.raises(SpecError, match="exactly one of"):
        read_recipes([recipe])
    recipe.write_text("package: {name: bad, version: '1'}\nfiles:\n  a: {copy: /nonexistent/file}\n")
    with pytest.raises(SpecError, match="is not a file"):
        read_recipes([recipe])


def test_writer_does_not_judge_paths_and_refuses_ambiguous_entries(tmp_path: Path):
    with pytest.raises(ValueError, match="exactly one"):
        PackageFile("x", b"data", symlink_target="y")
    with pytest.raises(ValueError, match="go together"):
        PackageFile("x", b"data", prefix_placeholder="/p")
    index = index_json("dup", "1", "0", subdir="noarch")
    with pytest.raises(ValueError, match="duplicate"):
        write_conda_package(tmp_path, index, [PackageFile("a", b"1"), PackageFile("a", b"2")], timestamp=0)


def test_hostile_channel_holds_what_it_claims(channels: Path):
    hostile = channels / "hostile"
    repodata = json.loads((hostile / "linux-64" / "repodata.json").read_text())
    assert sorted(repodata["packages.conda"]) == sorted(f"{name}-1.0-0.conda" for name in HOSTILE_PACKAGES)
    noarch = json.loads((hostile / "noarch" / "repodata.json").read_text())
    assert list(noarch["packages.conda"]) == ["benign-1.0-0.conda"]

    def only(name: str) -> tarfile.TarInfo:
        (member,) = pkg_members(hostile / "linux-64" / f"{name}-1.0-0.conda").values()
        assert list(_paths(hostile / "linux-64" / f"{name}-1.0-0.conda")) == [member.name]
        return member

    assert only("escape-dotdot").name == "../escaped.txt"
    assert only("escape-absolute").name == "/tmp/envyard-escaped.txt"
    link = only("escape-symlink")
    assert (link.name, link.issym(), link.linkname) == ("share/link", True, "../../../../etc")
    link = only("escape-symlink-abs")
    assert (link.name, link.issym(), link.linkname) == ("share/passwd", True, "/etc/passwd")
    assert not Path("/tmp/envyard-escaped.txt").exists()


def test_tamper_keeps_a_valid_package_with_another_hash(channels: Path, tmp_path: Path):
    original = channels / "e2e" / "linux-64" / "reloc-data-1.0-h0_0.conda"
    archive = tmp_path / original.name
    archive.write_bytes(original.read_bytes())
    tamper(archive)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() != hashlib.sha256(original.read_bytes()).hexdigest()
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
    changed = read_member(archive, "bin/show-prefix")
    assert changed.endswith(b"\n#tampered\n")
    entry = _paths(archive)["bin/show-prefix"]
    assert entry["sha256"] == hashlib.sha256(changed).hexdigest() and entry["size_in_bytes"] == len(changed)
    assert read_member(archive, "share/reloc/prefix.txt") == read_member(original, "share/reloc/prefix.txt")
