"""A small deterministic writer of ``.conda`` (v2) package archives.

A ``.conda`` file is a ZIP (stored, not compressed) holding ``metadata.json``
and two zstd-compressed tarballs: ``pkg-<stem>.tar.zst`` with the package's
files and ``info-<stem>.tar.zst`` with ``info/index.json``, ``info/paths.json``,
``info/about.json`` and ``info/files``. Everything that could vary between two
builds is fixed here: member order, dates, owners, permissions and the zstd
level, so the same input always gives the same bytes (``SOURCE_DATE_EPOCH`` and
the clock are never read).

Paths are written exactly as given: nothing here checks that they stay inside
the prefix, so tests can build hostile packages with it.

>>> import tempfile, zipfile
>>> index = index_json("hello", "1.0", "0", subdir="noarch", noarch="generic")
>>> files = [PackageFile("share/hello.txt", b"hi from " + PREFIX_PLACEHOLDER.encode(),
...                      prefix_placeholder=PREFIX_PLACEHOLDER, file_mode="text")]
>>> with tempfile.TemporaryDirectory() as tmp:
...     archive = write_conda_package(Path(tmp), index, files, timestamp=0)
...     names = zipfile.ZipFile(archive).namelist()
>>> archive.name, names
('hello-1.0-0.conda', ['metadata.json', 'pkg-hello-1.0-0.tar.zst', 'info-hello-1.0-0.tar.zst'])
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import zstandard

FileMode = Literal["text", "binary"]

#: The prefix packages are "built" in. Long (255 characters, like conda-build's
#: ``_h_env_placehold_placehold...``) so that binary files, where the installer
#: overwrites it in place and pads with NUL bytes, can take any real prefix.
PREFIX_PLACEHOLDER: Final = ("/opt/envyard-placeholder" + "_placehold" * 24)[:255]

#: zstd level of both tarballs (part of the byte-for-byte reproducibility).
ZSTD_LEVEL: Final = 16

_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)
_ARCH: Final = {"64": "x86_64", "32": "x86", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le",
                "s390x": "s390x", "armv7l": "armv7l"}


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One entry of a package: a regular file (``data``) or a symlink (``symlink_target``).

    ``prefix_placeholder`` (with ``file_mode``) tells the installer to replace
    that string with the target prefix; it must occur in ``data``. A symlink's
    paths.json ``sha256``/``size_in_bytes`` describe its target string.
    """

    path: str
    data: bytes | None = None
    symlink_target: str | None = None
    mode: int = 0o644
    prefix_placeholder: str | None = None
    file_mode: FileMode | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.symlink_target is None):
            raise ValueError(f"{self.path}: give exactly one of data and symlink_target")
        if (self.prefix_placeholder is None) != (self.file_mode is None):
            raise ValueError(f"{self.path}: prefix_placeholder and file_mode go together")
        if self.prefix_placeholder is not None and self.symlink_target is not None:
            raise ValueError(f"{self.path}: a symlink cannot carry a prefix placeholder")

    @property
    def content(self) -> bytes:
        """The bytes the paths.json hash describes: the file's data, or a symlink's target."""
        return self.data if self.data is not None else str(self.symlink_target).encode()


def index_json(
    name: str,
    version: str,
    build: str,
    *,
    subdir: str,
    build_number: int = 0,
    depends: Sequence[str] = (),
    constrains: Sequence[str] = (),
    noarch: str | None = None,
    license: str | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """The ``info/index.json`` of a package (``platform``/``arch`` derived from ``subdir``).

    >>> index_json("x", "1", "0", subdir="linux-aarch64")["arch"]
    'aarch64'
    """
    index: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": build_number,
        "depends": list(depends),
        "subdir": subdir,
    }
    if constrains:
        index["constrains"] = list(constrains)
    if noarch:
        index["noarch"] = noarch
    if subdir != "noarch":
        platform, _, arch = subdir.partition("-")
        index["platform"], index["arch"] = platform, _ARCH.get(arch, arch)
    if license:
        index["license"] = license
    if timestamp_ms is not None:
        index["timestamp"] = timestamp_ms
    return index


def archive_stem(index: Mapping[str, Any]) -> str:
    """``<name>-<version>-<build>``, the archive's file name without ``.conda``."""
    return f"{index['name']}-{index['version']}-{index['build']}"


def write_conda_package(
    out_dir: Path,
    index: Mapping[str, Any],
    files: Sequence[PackageFile],
    *,
    about: Mapping[str, Any] | None = None,
    link: Mapping[str, Any] | None = None,
    timestamp: int,
) -> Path:
    """Write ``out_dir/<name>-<version>-<build>.conda`` and return its path.

    ``timestamp`` (seconds since the epoch) is the mtime of every tar member.
    ``link`` is written as ``info/link.json`` (noarch python entry points);
    for ``noarch: python`` packages a minimal one is written when it is omitted.
    """
    stem = archive_stem(index)
    entries = sorted(files, key=lambda f: f.path)
    seen = {f.path for f in entries}
    if len(seen) != len(entries):
        raise ValueError(f"{stem}: duplicate paths")
    if link is None and index.get("noarch") == "python":
        link = {"noarch": {"type": "python"}, "package_metadata_version": 1}
    info = {
        "info/about.json": _json(dict(about or {})),
        "info/files": "".join(f"{f.path}\n" for f in entries).encode(),
        "info/index.json": _json(dict(index)),
        "info/paths.json": _json({"paths": [_paths_entry(f) for f in entries], "paths_version": 1}),
    }
    if link is not None:
        info["info/link.json"] = _json(dict(link))
    pkg_tar = tar_zst([_tar_member(f, timestamp) for f in entries])
    info_tar = tar_zst([_tar_member(PackageFile(path, data), timestamp) for path, data in sorted(info.items())])

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}.conda"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in (
            ("metadata.json", _json({"conda_pkg_format_version": 2})),
            (f"pkg-{stem}.tar.zst", pkg_tar),
            (f"info-{stem}.tar.zst", info_tar),
        ):
            member = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            member.compress_type = zipfile.ZIP_STORED
            member.create_system = 3
            member.external_attr = 0o100644 << 16
            archive.writestr(member, data)
    target.write_bytes(buffer.getvalue())
    return target


def _json(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _paths_entry(file: PackageFile) -> dict[str, Any]:
    content = file.content
    entry: dict[str, Any] = {
        "_path": file.path,
        "path_type": "softlink" if file.symlink_target is not None else "hardlink",
        "sha256": hashlib.sha256(content).hexdigest(),
        "size_in_bytes": len(content),
    }
    if file.prefix_placeholder is not None:
        entry["prefix_placeholder"] = file.prefix_placeholder
        entry["file_mode"] = file.file_mode
    return entry


def _tar_member(file: PackageFile, timestamp: int) -> tuple[tarfile.TarInfo, bytes | None]:
    member = tarfile.TarInfo(file.path)
    member.mtime = timestamp
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    if file.symlink_target is not None:
        member.type = tarfile.SYMTYPE
        member.linkname = file.symlink_target
        member.mode = 0o777
        return member, None
    member.mode = file.mode
    member.size = len(file.content)
    return member, file.data


def tar_zst(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A PAX tar of ``members`` compressed with zstd, as the two parts of a ``.conda`` are."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(raw.getvalue())
