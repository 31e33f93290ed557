"""Build real, tiny, valid wheels into a folder, for tests that must not touch a public index.

Every wheel is deterministic: same arguments, same bytes (fixed zip timestamps and order).

>>> import tempfile, zipfile
>>> with tempfile.TemporaryDirectory() as d:
...     path = build_wheel(d, "Demo_Pkg", "1.0", requires=["b>=1"], tag="py3-none-any")
...     names = sorted(zipfile.ZipFile(path).namelist())
>>> path.name
'demo_pkg-1.0-py3-none-any.whl'
>>> names
['demo_pkg-1.0.dist-info/METADATA', 'demo_pkg-1.0.dist-info/RECORD', \
'demo_pkg-1.0.dist-info/WHEEL', 'demo_pkg/__init__.py']
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path

ZIP_DATE = (2020, 1, 1, 0, 0, 0)

# Common tags, named for readability in tests.
PURE = "py3-none-any"
LINUX_X86_64_312 = "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64"
LINUX_X86_64_311 = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
LINUX_AARCH64_312 = "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64"
MACOS_ARM64_312 = "cp312-cp312-macosx_11_0_arm64"
MACOS_X86_64_312 = "cp312-cp312-macosx_10_9_x86_64"
WIN_AMD64_312 = "cp312-cp312-win_amd64"


def dist_name(name: str) -> str:
    """The wheel file-name form of a project name (PEP 427 / binary distribution format)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def expand_tag(tag: str) -> list[str]:
    """``cp312-cp312-a.b`` -> the individual ``Tag:`` lines of a compressed tag set."""
    py, abi, plat = tag.split("-")
    return [f"{p}-{a}-{pl}" for p in py.split(".") for a in abi.split(".") for pl in plat.split(".")]


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def build_wheel(
    directory: str | PathLike[str],
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    tag: str = PURE,
    extras: Sequence[str] = (),
    scripts: Mapping[str, str] | None = None,
) -> Path:
    """Write ``{dist}-{version}-{tag}.whl`` into *directory* and return its path."""
    dist = dist_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Provides-Extra: {e}" for e in extras]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    pure = tag.endswith("-none-any")
    wheel = ["Wheel-Version: 1.0", "Generator: envyard-tests", f"Root-Is-Purelib: {'true' if pure else 'false'}"]
    wheel += [f"Tag: {t}" for t in expand_tag(tag)]
    files: list[tuple[str, bytes]] = [
        (f"{dist}/__init__.py", f'__version__ = "{version}"\n'.encode()),
        (f"{info}/METADATA", ("\n".join(metadata) + "\n").encode()),
        (f"{info}/WHEEL", ("\n".join(wheel) + "\n").encode()),
    ]
    if scripts:
        entry_points = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
        files.append((f"{info}/entry_points.txt", entry_points.encode()))
    record = [_record_line(arc, data) for arc, data in files] + [f"{info}/RECORD,,"]
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            zinfo = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            zinfo.external_attr = 0o644 << 16
            zf.writestr(zinfo, data)
    return path


def sha256_file(path: str | PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
