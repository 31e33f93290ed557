"""Build a local conda channel from small package recipes, offline.

A recipe file is YAML (several documents allowed), one package per document::

    package: {name: libgreet, version: "1.2.0"}
    build: {number: 0, string: h4f8a2b1_0}      # noarch: generic|python for noarch packages
    platforms: [linux-64, osx-arm64]              # ignored for noarch packages
    requirements: {run: ["demo-data 2024.*"]}
    files:
      share/x.txt: "text with @PREFIX@"           # text; @PREFIX@ is recorded as a prefix placeholder
      bin/tool: {copy: /usr/bin/tool}             # bytes from the host (relative: to the recipe file)
      bin/alias: {symlink: tool}                  # a symlink, target as written
      libexec/run: {text: "#!/bin/sh\\n", mode: 0o755}
    about: {license: MIT, summary: ...}

Files under ``bin/`` (and ``python-scripts/``) are executable, copied files keep
the host file's executable bit, and ``mode:`` overrides both. Copied files that
contain :data:`~builder.condapkg.PREFIX_PLACEHOLDER` are recorded as binary
placeholders. A ``noarch: python`` package lays its files out as conda expects:
``site-packages/...`` (installed to ``lib/pythonX.Y/site-packages``, so the
environment needs a ``python`` package) and ``python-scripts/...`` (to ``bin/``).

Packages are written by :func:`builder.condapkg.write_conda_package` with a fixed
timestamp, so the archives are byte-reproducible, and indexed with
``rattler.index.index_fs``. Used by the demo, by tests and by benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from envyard.builder.condapkg import PREFIX_PLACEHOLDER, PackageFile, index_json, write_conda_package
from envyard.builder.errors import SpecError

#: The timestamp every demo package carries (reproducible archives).
FIXED_TIMESTAMP = datetime(2024, 6, 1, tzinfo=UTC)
PREFIX_MARKER = "@PREFIX@"
_EXECUTABLE_DIRS = ("bin/", "python-scripts/")
_FILE_KEYS = frozenset({"text", "copy", "symlink", "mode"})


@dataclass(frozen=True, slots=True)
class RecipeFile:
    """One entry under ``files:``: text (``@PREFIX@`` allowed), a host file to copy, or a symlink."""

    text: str | None = None
    copy: Path | None = None
    symlink: str | None = None
    mode: int | None = None


@dataclass(frozen=True, slots=True)
class PackageRecipe:
    """One package to assemble."""

    name: str
    version: str
    build_string: str
    build_number: int
    platforms: tuple[str, ...]
    noarch: str | None
    depends: tuple[str, ...]
    files: Mapping[str, RecipeFile]
    license: str | None = None
    summary: str | None = None


def _mode(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"invalid mode {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text, 0) if text.lower().startswith("0o") else int(text, 8)


def _recipe_file(rel: str, value: Any, source: Path) -> RecipeFile:
    """One ``files:`` entry; ``ValueError`` when it is none of the known forms."""
    if isinstance(value, str):
        return RecipeFile(text=value)
    if not isinstance(value, Mapping) or not value.keys() <= _FILE_KEYS:
        raise ValueError(f"files: {rel}: expected a string or one of {{text|copy|symlink, mode}}")
    kinds = [key for key in ("text", "copy", "symlink") if key in value]
    if len(kinds) != 1:
        raise ValueError(f"files: {rel}: give exactly one of text, copy and symlink")
    mode = None if value.get("mode") is None else _mode(value["mode"])
    if "copy" in value:
        copy = source.parent / Path(str(value["copy"])).expanduser()
        if not copy.is_file():
            raise ValueError(f"files: {rel}: {copy} is not a file")
        return RecipeFile(copy=copy, mode=mode)
    if "symlink" in value:
        if mode is not None:
            raise ValueError(f"files: {rel}: a symlink has no mode")
        return RecipeFile(symlink=str(value["symlink"]))
    return RecipeFile(text=str(value["text"]), mode=mode)


def _recipe(doc: Mapping[str, Any], source: Path, index: int) -> PackageRecipe:
    try:
        package, build = doc["package"], doc.get("build", {})
        noarch = build.get("noarch")
        return PackageRecipe(
            name=str(package["name"]),
            version=str(package["version"]),
            build_string=str(build.get("string", f"{build.get('number', 0)}")),
            build_number=int(build.get("number", 0)),
            platforms=("noarch",) if noarch else tuple(doc.get("platforms", ["linux-64"])),
            noarch=noarch,
            depends=tuple(doc.get("requirements", {}).get("run", [])),
            files={str(k): _recipe_file(str(k), v, source) for k, v in (doc.get("files") or {}).items()},
            license=doc.get("about", {}).get("license"),
            summary=doc.get("about", {}).get("summary"),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SpecError(
            f"recipe #{index + 1} is incomplete: {exc}",
            file=source,
            hint="each document needs package: {name, version}; see builder/localchannel.py",
        ) from None


def read_recipes(paths: Iterable[Path]) -> list[PackageRecipe]:
    """All recipes from recipe files and directories of ``*.yaml`` files."""
    recipes = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            try:
                docs = list(yaml.safe_load_all(file.read_text()))
            except yaml.YAMLError as exc:
                line = getattr(getattr(exc, "problem_mark", None), "line", None)
                raise SpecError(f"invalid YAML: {exc}", file=file, line=None if line is None else line + 1) from None
            recipes += [_recipe(doc, file, i) for i, doc in enumerate(docs) if doc]
    return recipes


def package_file(rel: str, spec: RecipeFile) -> PackageFile:
    """The archive entry for one recipe file (reads ``copy`` sources from the host).

    >>> package_file("bin/hi", RecipeFile(text="#!/bin/sh\\necho @PREFIX@\\n")).file_mode
    'text'
    """
    if spec.symlink is not None:
        return PackageFile(rel, symlink_target=spec.symlink)
    mode = spec.mode
    if mode is None:
        executable = rel.startswith(_EXECUTABLE_DIRS) or (spec.copy is not None and spec.copy.stat().st_mode & 0o111)
        mode = 0o755 if executable else 0o644
    if spec.copy is not None:
        data = spec.copy.read_bytes()
        binary = PREFIX_PLACEHOLDER.encode() in data
        return PackageFile(rel, data, mode=mode, prefix_placeholder=PREFIX_PLACEHOLDER if binary else None,
                           file_mode="binary" if binary else None)
    text = str(spec.text)
    relocatable = PREFIX_MARKER in text
    return PackageFile(rel, text.replace(PREFIX_MARKER, PREFIX_PLACEHOLDER).encode(), mode=mode,
                       prefix_placeholder=PREFIX_PLACEHOLDER if relocatable else None,
                       file_mode="text" if relocatable else None)


def assemble(recipe: PackageRecipe, platform: str, out_dir: Path, *, timestamp: datetime = FIXED_TIMESTAMP) -> Path:
    """Assemble one ``.conda`` archive of ``recipe`` for ``platform`` into ``out_dir/<platform>/``."""
    seconds = int(timestamp.timestamp())
    index = index_json(
        recipe.name,
        recipe.version,
        recipe.build_string,
        subdir=platform,
        build_number=recipe.build_number,
        depends=recipe.depends,
        noarch=recipe.noarch,
        license=recipe.license,
        timestamp_ms=seconds * 1000,
    )
    about = {key: value for key, value in (("license", recipe.license), ("summary", recipe.summary)) if value}
    files = [package_file(rel, spec) for rel, spec in recipe.files.items()]
    return write_conda_package(out_dir / platform, index, files, about=about, timestamp=seconds)


def build_channel(recipe_paths: Iterable[Path], out_dir: Path) -> list[Path]:
    """Assemble every recipe for its platforms into ``out_dir`` and index the channel."""
    from rattler.index import index_fs

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "noarch").mkdir(exist_ok=True)
    built = [assemble(r, p, out_dir) for r in read_recipes(recipe_paths) for p in r.platforms]
    asyncio.run(index_fs(out_dir, write_zst=False, write_shards=False, force=True))
    with contextlib.suppress(OSError):
        (out_dir / ".tmp").rmdir()  # the indexer's empty scratch directory
    return built
