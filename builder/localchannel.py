"""Build a local conda channel from small package recipes, offline.

A recipe file is YAML (several documents allowed), one package per document::

    package: {name: libgreet, version: "1.2.0"}
    build: {number: 0, string: h4f8a2b1_0}      # noarch: generic|python for noarch packages
    platforms: [linux-64, osx-arm64]              # ignored for noarch packages
    requirements: {run: ["demo-data 2024.*"]}
    files: {share/x.txt: "text with @PREFIX@"}    # @PREFIX@ is recorded as a prefix placeholder
    about: {license: MIT, summary: ...}

Packages are assembled with rattler-build's ``assemble_package`` (fixed
timestamps, so the channel is byte-reproducible) and indexed with
``rattler.index.index_fs``. Used by the demo, by tests and by benchmarks.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from builder.errors import SpecError

#: The timestamp every demo package carries (reproducible archives).
FIXED_TIMESTAMP = datetime(2024, 6, 1, tzinfo=UTC)
PREFIX_MARKER = "@PREFIX@"


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
    files: Mapping[str, str]
    license: str | None = None
    summary: str | None = None


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
            files={str(k): str(v) for k, v in doc.get("files", {}).items()},
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


def assemble(recipe: PackageRecipe, platform: str, out_dir: Path, *, timestamp: datetime = FIXED_TIMESTAMP) -> Path:
    """Assemble one ``.conda`` archive of ``recipe`` for ``platform`` into ``out_dir/<platform>/``."""
    from rattler_build import assemble_package

    subdir_dir = out_dir / platform
    subdir_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="envyard-stage-") as stage:
        stage_dir = Path(stage)
        for rel, text in recipe.files.items():
            target = stage_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.replace(PREFIX_MARKER, str(stage_dir)))
            if rel.startswith("bin/"):
                target.chmod(0o755)
        output = assemble_package(
            name=recipe.name,
            version=recipe.version,
            target_platform=platform,
            build_string=recipe.build_string,
            build_number=recipe.build_number,
            output_dir=subdir_dir,
            files_dir=stage_dir,
            depends=list(recipe.depends),
            noarch=recipe.noarch,  # type: ignore[arg-type]
            license=recipe.license,
            summary=recipe.summary,
            timestamp=timestamp,
            compression_threads=1,
        )
    return Path(output.path)


def build_channel(recipe_paths: Iterable[Path], out_dir: Path) -> list[Path]:
    """Assemble every recipe for its platforms into ``out_dir`` and index the channel."""
    from rattler.index import index_fs

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "noarch").mkdir(exist_ok=True)
    built = [assemble(r, p, out_dir) for r in read_recipes(recipe_paths) for p in r.platforms]
    asyncio.run(index_fs(out_dir, write_zst=False, write_shards=False, force=True))
    return built
