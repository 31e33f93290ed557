"""Real conda channels for install, image and security tests: end-to-end packages, hostile packages, tampering.

Everything is built offline with :mod:`builder.condapkg` and indexed with
``rattler.index.index_fs``; the package archives are byte-reproducible.

* :func:`build_e2e_channel` -- ``<root>/e2e``: ``busybox`` (the host's static
  binary plus ``sh``/``cat``/``echo``/``env``/``ls`` symlinks), ``reloc-data``
  (text placeholders, a ``#!<prefix>/bin/sh`` script, an activation script), a
  ``python`` stand-in, ``pyhello`` (noarch python) and the metapackage ``e2e-env``.
* :func:`build_hostile_channel` -- ``<root>/hostile``: packages that try to
  write outside the prefix, plus one ``benign`` package.
* :func:`tamper` -- change a package's content in place (still a valid archive).
* :func:`channel_records`, :func:`read_member`, :func:`pkg_members` -- small
  helpers for installing with rattler and inspecting archives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from envyard.builder.condapkg import PackageFile, index_json, tar_zst, write_conda_package

REPO = Path(__file__).resolve().parents[1]
E2E_RECIPES = REPO / "tests" / "fixtures" / "recipes" / "e2e.yaml"
HOST_BUSYBOX = Path("/bin/busybox")
#: Every package of the e2e channel, as ``name -> version``.
E2E_PACKAGES = {"busybox": "1.36.1", "reloc-data": "1.0", "python": "3.11.7", "pyhello": "0.1.0", "e2e-env": "1.0"}
#: The hostile packages (all ``1.0``, build ``0``, in ``linux-64``) and the path each one tries to reach.
HOSTILE_PACKAGES = {
    "escape-dotdot": "../escaped.txt",
    "escape-absolute": "/tmp/envyard-escaped.txt",
    "escape-symlink": "share/link -> ../../../../etc",
    "escape-symlink-abs": "share/passwd -> /etc/passwd",
}
HOSTILE_TIMESTAMP = 1_717_200_000


def build_e2e_channel(root: Path) -> Path:
    """Build and index the end-to-end channel at ``root/e2e`` (skips the test when ``/bin/busybox`` is missing)."""
    from envyard.builder.localchannel import build_channel

    if not HOST_BUSYBOX.is_file():
        pytest.skip(f"{HOST_BUSYBOX} not found (install Debian's busybox-static)")
    channel = root / "e2e"
    build_channel([E2E_RECIPES], channel)
    return channel


def build_hostile_channel(root: Path) -> Path:
    """Build and index ``root/hostile``: the :data:`HOSTILE_PACKAGES` (linux-64) and ``benign 1.0`` (noarch)."""
    channel = root / "hostile"
    hostile = {
        "escape-dotdot": [PackageFile("../escaped.txt", b"escaped via ..\n")],
        "escape-absolute": [PackageFile("/tmp/envyard-escaped.txt", b"escaped via an absolute path\n")],
        "escape-symlink": [PackageFile("share/link", symlink_target="../../../../etc")],
        "escape-symlink-abs": [PackageFile("share/passwd", symlink_target="/etc/passwd")],
    }
    for name, files in hostile.items():
        write_conda_package(channel / "linux-64", index_json(name, "1.0", "0", subdir="linux-64"), files,
                            about={"summary": f"hostile test package: {HOSTILE_PACKAGES[name]}"},
                            timestamp=HOSTILE_TIMESTAMP)
    write_conda_package(channel / "noarch", index_json("benign", "1.0", "0", subdir="noarch", noarch="generic"),
                        [PackageFile("share/benign/README.txt", b"nothing to see\n")], timestamp=HOSTILE_TIMESTAMP)
    index_channel(channel)
    return channel


def tamper(archive: Path, path: str | None = None) -> None:
    """Change the content of one file (``path``, default the first regular file) inside a ``.conda``, in place.

    The result is still a valid, internally consistent package (its ``paths.json``
    hash and size follow the new content), so only the archive's own sha256 --
    the one in the repodata and the lock -- gives the substitution away.
    """
    with zipfile.ZipFile(archive) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    stem = archive.name.removesuffix(".conda")
    blobs = {info.filename: data for info, data in entries}
    pkg_members = _read_tar_zst(blobs[f"pkg-{stem}.tar.zst"])
    regular = [m for m, _ in pkg_members if m.isfile() and (path is None or m.name == path)]
    if not regular:
        raise ValueError(f"{archive.name}: no regular file {path or ''} to tamper with")
    target = regular[0].name
    new_data = b""
    for i, (member, data) in enumerate(pkg_members):
        if member.name == target:
            new_data = (data or b"") + b"\n#tampered\n"
            member.size = len(new_data)
            pkg_members[i] = (member, new_data)
    info_members = _read_tar_zst(blobs[f"info-{stem}.tar.zst"])
    for i, (member, data) in enumerate(info_members):
        if member.name == "info/paths.json":
            paths = json.loads(data or b"{}")
            for entry in paths["paths"]:
                if entry["_path"] == target:
                    entry["sha256"] = hashlib.sha256(new_data).hexdigest()
                    entry["size_in_bytes"] = len(new_data)
            rewritten = (json.dumps(paths, indent=2, sort_keys=True) + "\n").encode()
            member.size = len(rewritten)
            info_members[i] = (member, rewritten)
    blobs[f"pkg-{stem}.tar.zst"] = tar_zst(pkg_members)
    blobs[f"info-{stem}.tar.zst"] = tar_zst(info_members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for info, _ in entries:
            fresh = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            fresh.external_attr, fresh.create_system = info.external_attr, info.create_system
            zf.writestr(fresh, blobs[info.filename])
    archive.write_bytes(buffer.getvalue())


def channel_records(channel: Path, names: Iterable[str], platform: str = "linux-64") -> list[Any]:
    """The ``RepoDataRecord``s of ``names`` in ``channel`` (``platform`` and ``noarch``), for ``rattler.install``."""
    import rattler

    wanted, records = set(names), []
    for subdir in (platform, "noarch"):
        repodata = rattler.RepoData.from_path(channel / subdir / "repodata.json")
        records += [r for r in repodata.into_repo_data(rattler.Channel(str(channel))) if r.name.normalized in wanted]
    missing = wanted - {r.name.normalized for r in records}
    assert not missing, f"not in {channel}: {sorted(missing)}"
    return records


def install_prefix(
    records: list[Any], prefix: Path, cache: Path, *, alternative_target_prefix: str | None = None
) -> Path:
    """Install ``records`` into ``prefix`` with plain rattler (no envyard checks), the package cache at ``cache``."""
    import rattler

    asyncio.run(rattler.install(records, prefix, package_cache=rattler.PackageCache.new_layered([cache]),
                                show_progress=False, alternative_target_prefix=alternative_target_prefix))
    return prefix


def pkg_members(archive: Path) -> dict[str, tarfile.TarInfo]:
    """The members of a ``.conda``'s ``pkg-*.tar.zst``, by name (names exactly as stored)."""
    return {m.name: m for m, _ in _members(archive, "pkg")}


def read_member(archive: Path, name: str) -> bytes:
    """One member's bytes: ``info/...`` from the info tarball, anything else from the pkg tarball."""
    part = "info" if name.startswith("info/") else "pkg"
    for member, data in _members(archive, part):
        if member.name == name and data is not None:
            return data
    raise KeyError(f"{archive.name}: no file {name}")


def _members(archive: Path, part: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with zipfile.ZipFile(archive) as zf:
        return _read_tar_zst(zf.read(f"{part}-{archive.name.removesuffix('.conda')}.tar.zst"))


def _read_tar_zst(blob: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = []
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            members.append((member, data.read() if data is not None else None))
        return members


def index_channel(channel: Path) -> None:
    from rattler.index import index_fs

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    with contextlib.suppress(OSError):
        (channel / ".tmp").rmdir()

