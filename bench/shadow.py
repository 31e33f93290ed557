"""A "shadow channel" for benchmarks: synthesized ``.conda`` archives for real repodata records.

The shared data has real conda-forge records but no archives. For each record this writes an archive with
the same name, version, build, build number, subdir, depends and constrains, whose files look like the kind
of package it is (a Python package: many small ``.py`` files under ``site-packages``; a library: a large
``lib*.so`` with its soname symlinks, headers, a pkg-config file; ``python`` itself: the standard library,
``libpython``, ``lib-dynload``), and whose installed size is the record's real archive ``size`` times a
scale factor. Content mixes incompressible bytes with low-entropy "machine code" and text, so gzip and
zstd do realistic work. Some text files carry :data:`builder.condapkg.PREFIX_PLACEHOLDER` and are recorded
as text placeholders, so an install has relocation to do.

Everything is deterministic (seeded by the package's file name), archives are written atomically and
skipped when already present, so a channel under a work directory is reused by later runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import re
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from envyard.builder.condapkg import PREFIX_PLACEHOLDER, PackageFile, index_json, write_conda_package
from envyard.builder.model import LockedCondaPackage, PlatformLock

#: bump when the synthesis changes: cached channels of another format are not reused
SHADOW_FORMAT = 2
#: every archive member's mtime, and the records' timestamp (2024-06-01)
FIXED_TIMESTAMP = 1_717_200_000
MIN_PACKAGE_BYTES = 1024

KINDS = ("python", "python-ext", "noarch-python", "library", "noarch-generic", "meta")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A real record to shadow (``size`` is the real archive size, or an estimate when the record has none)."""

    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    depends: tuple[str, ...]
    constrains: tuple[str, ...]
    license: str | None
    size: int
    size_estimated: bool

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


@dataclass(frozen=True, slots=True)
class ShadowPackage:
    """What to synthesize for one record: its kind, installed size and the env's Python version."""

    record: SourceRecord
    kind: str
    installed_bytes: int
    python: str

    @property
    def file_name(self) -> str:
        return f"{self.record.stem}.conda"


# -- records ---------------------------------------------------------------------------------------------------


def kind_of(name: str, subdir: str, build: str, size: int) -> str:
    if name == "python":
        return "python"
    if subdir == "noarch":
        return "noarch-python" if build.startswith("py") else "noarch-generic"
    if build.startswith("py") or re.search(r"py3\d+", build):
        return "python-ext"
    if size < 8_000:
        return "meta"
    return "library"


def _known_sizes(channel: Path, subdirs: Iterable[str]) -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = {}
    for subdir in subdirs:
        repodata = json.loads((channel / subdir / "repodata.json").read_text())
        for key in ("packages", "packages.conda"):
            for rec in repodata.get(key, {}).values():
                if rec.get("size"):
                    sizes.setdefault(rec["name"], []).append(int(rec["size"]))
    return sizes


def solve_records(channel: Path, specs: Sequence[str], platform: str, cache_dir: Path) -> list[SourceRecord]:
    """Solve ``specs`` against a real repodata channel; records without a size get an estimate (the median
    size of other records of the same name in the channel, else of the same kind, jittered by name)."""
    import rattler

    from envyard.builder.virtual_packages import virtual_packages_for

    gateway = rattler.Gateway(cache_dir=str(cache_dir))
    virtual = [v.to_rattler() for v in virtual_packages_for(platform, cuda="12.4")]
    solved = asyncio.run(rattler.solve([channel.as_uri()], list(specs), gateway=gateway,
                                       platforms=[platform, "noarch"], virtual_packages=virtual))
    known = _known_sizes(channel, {platform, "noarch"})
    rows = []
    for r in solved:
        name, build = r.name.normalized, str(r.build)
        rows.append((name, str(r.version), build, int(r.build_number), str(r.subdir), tuple(r.depends),
                     tuple(r.constrains), r.license, r.size))
    by_kind: dict[str, list[int]] = {}
    for row in rows:
        if row[8]:
            by_kind.setdefault(kind_of(row[0], row[4], row[2], row[8]), []).append(row[8])
    records = []
    for name, version, build, build_number, subdir, depends, constrains, lic, size in rows:
        estimated = not size
        if estimated:
            if known.get(name):
                size = int(statistics.median(known[name]))
            else:
                pool = by_kind.get(kind_of(name, subdir, build, 100_000)) or [100_000]
                jitter = 0.5 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 1.5
                size = int(statistics.median(pool) * jitter)
        records.append(SourceRecord(name, version, build, build_number, subdir, depends, constrains, lic,
                                    int(size), estimated))
    return sorted(records, key=lambda r: r.name)


def bump_version(version: str) -> str:
    """A later version: the last number incremented (``1.2.3`` -> ``1.2.4``, ``2024.1a`` -> ``2024.2a``)."""
    numbers = list(re.finditer(r"\d+", version))
    if not numbers:
        return version + ".1"
    last = numbers[-1]
    return version[: last.start()] + str(int(last.group()) + 1) + version[last.end():]


def bumped(record: SourceRecord) -> SourceRecord:
    return replace(record, version=bump_version(record.version))


def plan(records: Sequence[SourceRecord], scale: float, python: str) -> list[ShadowPackage]:
    out = []
    for r in records:
        installed = max(MIN_PACKAGE_BYTES, int(r.size * scale))
        out.append(ShadowPackage(r, kind_of(r.name, r.subdir, r.build, installed), installed, python))
    return out


def python_version(records: Sequence[SourceRecord]) -> str:
    found = next((r.version for r in records if r.name == "python"), "3.12")
    return ".".join(found.split(".")[:2])


# -- content -------------------------------------------------------------------------------------------------

_CORPUS: bytes = b""
#: maps every byte to one of 16 values: "machine code"-like data, about 4 bits of entropy per byte
_LOW_ENTROPY = bytes((b * 7 % 16) * 5 + 0x40 if b % 3 else 0x0F for b in range(256))


def corpus() -> bytes:
    """A few MB of Python-like source text (gzip keeps about a third of it), built once per process."""
    global _CORPUS
    if _CORPUS:
        return _CORPUS
    rng = random.Random(20240601)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 11))) for _ in range(3000)]
    words = vocab
    lines: list[str] = []

    def w() -> str:
        return rng.choice(words) if rng.random() < 0.5 else rng.choice(words[:150])

    size = 0
    while size < 4_000_000:
        size += len(lines[-1]) + 1 if lines else 0
        indent = "    " * rng.randint(0, 3)
        roll = rng.random()
        if roll < 0.12:
            lines.append(f"{indent}def {w()}_{w()}(self, {w()}, {w()}=None, *, {w()}: int = {rng.randint(0, 99)}):")
        elif roll < 0.2:
            lines.append(f'{indent}"""{w().capitalize()} the {w()} of {w()} {w()}, {w()} it when {w()}."""')
        elif roll < 0.45:
            lines.append(f"{indent}{w()} = {w()}.{w()}({w()}, {w()}[{rng.randint(0, 9)}], {w()}={w()})")
        elif roll < 0.55:
            lines.append(f"{indent}if {w()} is not None and {w()} > {rng.randint(0, 999)}:")
        elif roll < 0.65:
            lines.append(f"{indent}return {w()}({w()}, {w()})")
        elif roll < 0.75:
            lines.append(f"{indent}# {w()} {w()} {w()} {w()} {w()} {w()}")
        elif roll < 0.82:
            lines.append(f"{indent}raise {w().capitalize()}Error(f\"{w()} {{{w()}!r}} {w()}\")")
        elif roll < 0.9:
            lines.append(f"{indent}for {w()} in {w()}.{w()}():")
        else:
            lines.append("")
    _CORPUS = "\n".join(lines).encode()
    return _CORPUS


def text_bytes(rng: random.Random, n: int, header: str = "") -> bytes:
    text = corpus()
    head = header.encode()[:n]
    n -= len(head)
    offset = rng.randrange(len(text))
    body = text[offset: offset + n]
    while len(body) < n:
        body += text[: n - len(body)]
    return head + body


def binary_bytes(rng: random.Random, n: int) -> bytes:
    """ELF-ish bytes: about 15% random, 35% low-entropy code, 30% text (symbols, strings), 20% zeros."""
    text = corpus()
    out = bytearray(b"\x7fELF\x02\x01\x01\x00")
    while len(out) < n:
        k = rng.choice((256, 512, 1024, 2048, 4096))
        roll = rng.random()
        if roll < 0.15:
            out += rng.randbytes(k)
        elif roll < 0.50:
            out += rng.randbytes(k).translate(_LOW_ENTROPY)
        elif roll < 0.80:
            offset = rng.randrange(len(text) - k)
            out += text[offset: offset + k]
        else:
            out += bytes(k)
    return bytes(out[:n])


def split_sizes(rng: random.Random, total: int, average: int, max_files: int, min_size: int = 64) -> list[int]:
    """``total`` bytes over about ``total / average`` files (log-normal sizes; at most ``max_files``)."""
    if total <= 0:
        return []
    count = max(1, min(max_files, round(total / average), total // min_size or 1))
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    scale = total / sum(weights)
    sizes = [max(1, int(x * scale)) for x in weights]
    sizes[0] += total - sum(sizes)
    if sizes[0] < 1:
        return [total]
    return sizes


def _dirs(rng: random.Random, root: str, count: int) -> list[str]:
    """``count`` directory paths under ``root``, a tree about 3 levels deep."""
    dirs = [root]
    while len(dirs) < count:
        parent = rng.choice(dirs)
        if parent.count("/") - root.count("/") < 3:
            dirs.append(f"{parent}/{_ident(rng)}")
    return dirs


def _ident(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))


def _unique(path: str, seen: set[str]) -> str:
    base, n = path, 1
    while path in seen:
        stem, dot, ext = base.rpartition(".")
        path = f"{stem}_{n}.{ext}" if dot and "/" not in ext else f"{base}_{n}"
        n += 1
    seen.add(path)
    return path


def _placeholder_text(rng: random.Random, size: int, header: str) -> bytes:
    """Text in which the prefix placeholder occurs every few lines (config files, scripts, .pc files)."""
    parts = [header.encode()]
    total = len(parts[0])
    while total < size:
        line = (f"{_ident(rng)}={PREFIX_PLACEHOLDER}/{_ident(rng)}/{_ident(rng)}\n".encode()
                + text_bytes(rng, rng.randint(40, 400)) + b"\n")
        parts.append(line)
        total += len(line)
    return b"".join(parts)


def package_files(pkg: ShadowPackage) -> list[PackageFile]:
    """The files of a synthesized package (deterministic for its file name and installed size)."""
    rec = pkg.record
    rng = random.Random(hashlib.sha256(f"{SHADOW_FORMAT}|{pkg.file_name}".encode()).digest())
    # every path a package owns is named after its whole name (``importlib-resources`` and
    # ``importlib_resources``, ``sqlite`` and ``libsqlite`` both exist): no two packages write one path
    module = rec.name
    base = rec.name
    total = pkg.installed_bytes
    files: list[PackageFile] = []
    seen: set[str] = set()

    def add(path: str, data: bytes, mode: int = 0o644, placeholder: bool = False) -> None:
        path = _unique(path, seen)
        if placeholder:
            files.append(PackageFile(path, data, mode=mode, prefix_placeholder=PREFIX_PLACEHOLDER,
                                     file_mode="text"))
        else:
            files.append(PackageFile(path, data, mode=mode))

    def link(path: str, target: str) -> None:
        files.append(PackageFile(_unique(path, seen), symlink_target=target))

    def py_tree(root: str, nbytes: int, max_files: int = 4000) -> None:
        sizes = split_sizes(rng, nbytes, 6_000, max_files)
        dirs = _dirs(rng, root, max(1, len(sizes) // 12))
        for i, size in enumerate(sizes):
            folder = dirs[i % len(dirs)]
            name = "__init__.py" if i < len(dirs) else f"{_ident(rng)}.py"
            if i % 97 == 50 and size > 200:  # a module that records its build prefix
                add(f"{folder}/_build_config.py", _placeholder_text(rng, size, f"# {rec.name} build paths\n"),
                    placeholder=True)
            else:
                add(f"{folder}/{name}", text_bytes(rng, size, f'"""{rec.name}: {folder}/{name}"""\n'))

    def sos(folder: str, nbytes: int, count: int, suffix: str, prefix: str = "") -> None:
        for size in split_sizes(rng, nbytes, max(1, nbytes // count), count, 256):
            add(f"{folder}/{prefix}{_ident(rng)}{suffix}", binary_bytes(rng, size), 0o755)

    def dist_info(site: str) -> None:
        info = f"{site}/{module}-{rec.version}.dist-info"
        add(f"{info}/METADATA", text_bytes(rng, min(4000, max(64, total // 50)), f"Name: {rec.name}\n"))
        add(f"{info}/INSTALLER", b"conda\n")
        add(f"{info}/RECORD", text_bytes(rng, min(6000, max(64, total // 40))))

    def script(path: str, python: str) -> None:
        body = (f"#!{PREFIX_PLACEHOLDER}/bin/{python}\n# -*- coding: utf-8 -*-\nimport sys\n"
                f"from {module.replace('-', '_')} import main\n")
        add(path, (body + "sys.exit(main())\n").encode(), 0o755, placeholder=True)

    py = f"python{pkg.python}"
    if pkg.kind == "meta":
        add(f"share/envyard-shadow/{rec.name}.txt", text_bytes(rng, total, f"{rec.name} {rec.version}\n"))
    elif pkg.kind == "python":
        add(f"bin/{py}", binary_bytes(rng, total * 5 // 100), 0o755)
        link("bin/python", py)
        link("bin/python3", py)
        soname = f"libpython{pkg.python}.so.1.0"
        add(f"lib/{soname}", binary_bytes(rng, total * 20 // 100), 0o755)
        link(f"lib/libpython{pkg.python}.so", soname)
        ext = f".cpython-{pkg.python.replace('.', '')}-x86_64-linux-gnu.so"
        sos(f"lib/{py}/lib-dynload", total * 20 // 100, 70, ext)
        py_tree(f"lib/{py}", total * 49 // 100)
        for size in split_sizes(rng, total * 4 // 100, 8_000, 200):
            add(f"include/{py}/{_ident(rng)}.h", text_bytes(rng, size, "/* header */\n"))
        add(f"bin/{py}-config", _placeholder_text(rng, 4000, "#!/bin/sh\n"), 0o755, placeholder=True)
        add(f"lib/pkgconfig/python-{pkg.python}.pc", _placeholder_text(rng, 600, "# pkg-config\n"), placeholder=True)
        add(f"lib/{py}/_sysconfigdata__linux_x86_64-linux-gnu.py",
            _placeholder_text(rng, max(2000, total * 1 // 200), "build_time_vars = {\n"), placeholder=True)
    elif pkg.kind == "python-ext":
        site = f"lib/{py}/site-packages"
        so_bytes = total * 55 // 100
        py_tree(f"{site}/{module}", total - so_bytes - min(10_000, total // 20))
        sos(f"{site}/{module}", so_bytes, max(1, min(12, so_bytes // 400_000 + 1)),
            f".cpython-{pkg.python.replace('.', '')}-x86_64-linux-gnu.so")
        dist_info(site)
        if rng.random() < 0.3:
            script(f"bin/{rec.name}", py)
    elif pkg.kind == "noarch-python":
        py_tree(f"site-packages/{module}", total - min(10_000, total // 20))
        dist_info("site-packages")
        if rng.random() < 0.3:
            script(f"python-scripts/{rec.name}", py)
    elif pkg.kind == "library":
        major = rng.randint(0, 30)  # lib<name>.so.N whatever the name (liblibsqlite.so: unique)
        soname = f"lib{base}.so.{major}"
        main_bytes = total * 70 // 100
        add(f"lib/{soname}.{rng.randint(0, 9)}.{rng.randint(0, 9)}", binary_bytes(rng, main_bytes), 0o755)
        real = files[-1].path.rsplit("/", 1)[1]
        link(f"lib/{soname}", real)
        link(f"lib/lib{base}.so", soname)
        sos("lib", total * 10 // 100, rng.randint(1, 4), ".so", f"lib{base}_")
        for size in split_sizes(rng, total * 15 // 100, 8_000, 600):
            add(f"include/{base}/{_ident(rng)}.h", text_bytes(rng, size, f"/* {rec.name} */\n"))
        add(f"lib/pkgconfig/{base}.pc", _placeholder_text(rng, 500, f"prefix={PREFIX_PLACEHOLDER}\n"),
            placeholder=True)
        add(f"lib/cmake/{base}/{base}Config.cmake", _placeholder_text(rng, 3000, "# CMake config\n"),
            placeholder=True)
        rest = total - sum(len(f.content) for f in files)
        if rest > 1000 and rng.random() < 0.4:
            add(f"bin/{base}", binary_bytes(rng, rest // 2), 0o755)
            rest -= rest // 2
        for size in split_sizes(rng, rest, 20_000, 40):
            add(f"share/doc/{rec.name}/{_ident(rng)}.txt", text_bytes(rng, size))
    else:  # noarch-generic: data files
        dirs = _dirs(rng, f"share/{rec.name}", 8)
        for i, size in enumerate(split_sizes(rng, total, 20_000, 2000)):
            folder = dirs[i % len(dirs)]
            if i % 2:
                add(f"{folder}/{_ident(rng)}.dat", binary_bytes(rng, size))
            else:
                add(f"{folder}/{_ident(rng)}.txt", text_bytes(rng, size))
        if rng.random() < 0.3:
            add(f"etc/conda/activate.d/{rec.name}.sh", _placeholder_text(rng, 300, "#!/bin/sh\n"), placeholder=True)
    return files


# -- channel -------------------------------------------------------------------------------------------------


def _write_one(pkg: ShadowPackage, out_dir: str) -> tuple[str, int]:
    """Write one archive atomically (temporary directory, then rename); returns its name and installed bytes."""
    target = Path(out_dir) / pkg.record.subdir / pkg.file_name
    if target.is_file():
        return pkg.file_name, 0
    rec = pkg.record
    noarch = {"noarch-python": "python", "noarch-generic": "generic"}.get(pkg.kind)
    if rec.subdir == "noarch" and noarch is None:
        noarch = "generic"
    index = index_json(rec.name, rec.version, rec.build, subdir=rec.subdir, build_number=rec.build_number,
                       depends=rec.depends, constrains=rec.constrains, noarch=noarch, license=rec.license,
                       timestamp_ms=FIXED_TIMESTAMP * 1000)
    files = package_files(pkg)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".writing-") as tmp:
        written = write_conda_package(Path(tmp), index, files, about={"summary": "envyard shadow package"},
                                      timestamp=FIXED_TIMESTAMP)
        os.replace(written, target)
    return pkg.file_name, sum(len(f.data) for f in files if f.data is not None)


def synthesize(packages: Sequence[ShadowPackage], channel: Path, workers: int | None = None) -> int:
    """Write every missing archive into ``channel/<subdir>/`` (in parallel, largest first); returns how many."""
    missing = [p for p in packages if not (channel / p.record.subdir / p.file_name).is_file()]
    if not missing:
        return 0
    missing.sort(key=lambda p: -p.installed_bytes)
    workers = workers or max(1, os.cpu_count() or 1)
    if workers == 1 or len(missing) == 1:
        for p in missing:
            _write_one(p, str(channel))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, missing, [str(channel)] * len(missing), chunksize=1))
    return len(missing)


def index_channel(channel: Path, packages: Sequence[ShadowPackage]) -> None:
    """(Re)index the channel unless every archive is already in its subdir's repodata.json."""
    from rattler.index import index_fs

    for subdir in ("noarch", "linux-64"):
        (channel / subdir).mkdir(parents=True, exist_ok=True)
    wanted: dict[str, set[str]] = {}
    for p in packages:
        wanted.setdefault(p.record.subdir, set()).add(p.file_name)
    for subdir, names in wanted.items():
        repodata = channel / subdir / "repodata.json"
        if not repodata.is_file() or not names <= set(json.loads(repodata.read_text()).get("packages.conda", {})):
            asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
            return
    if not (channel / "noarch" / "repodata.json").is_file():
        asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))


def locked(channel: Path, packages: Sequence[ShadowPackage]) -> dict[str, LockedCondaPackage]:
    """file name -> the locked package (file:// URL, the archive's sha256/md5/size from the index)."""
    repodata: dict[str, dict[str, Any]] = {}
    for subdir in {p.record.subdir for p in packages}:
        repodata[subdir] = json.loads((channel / subdir / "repodata.json").read_text())["packages.conda"]
    out = {}
    for p in packages:
        rec = repodata[p.record.subdir][p.file_name]
        out[p.file_name] = LockedCondaPackage(
            name=rec["name"], version=rec["version"], build=rec["build"], build_number=rec["build_number"],
            subdir=rec["subdir"], channel=channel.as_uri(),
            url=(channel / p.record.subdir / p.file_name).as_uri(), sha256=rec["sha256"], md5=rec["md5"],
            depends=tuple(rec.get("depends", ())), constrains=tuple(rec.get("constrains", ())),
            size=rec["size"], timestamp=rec.get("timestamp"), noarch=rec.get("noarch"), license=rec.get("license"))
    return out


def platform_lock(platform: str, packages: Iterable[LockedCondaPackage]) -> PlatformLock:
    return PlatformLock(platform, conda=tuple(sorted(packages, key=lambda p: p.name)))


def auto_scale(records: Sequence[SourceRecord], total_bytes: int) -> float:
    """The scale that makes the installed environment about ``total_bytes``."""
    weight = sum(r.size for r in records)
    return max(1e-6, total_bytes / weight) if weight else 1.0


def scale_tag(scale: float) -> str:
    exponent = math.floor(math.log10(scale))
    return f"{scale / 10 ** exponent:.3f}e{exponent}"
