"""Pack stage: an installed prefix as a relocatable archive in conda-pack's layout.

The archive holds the prefix's files at its root, plus ``bin/conda-unpack`` (run
once after unpacking; it rewrites the packed prefix path to wherever the archive
was unpacked) and ``bin/activate`` / ``bin/deactivate``, exactly where conda-pack
puts them, so tooling written for conda-pack archives (Kubernetes init
containers, Spark/Dask shipping) works unchanged.

``conda-unpack`` is POSIX sh: with a Python in the environment (or on PATH) it
runs :mod:`builder.relocate` (embedded), which also handles binary files;
without one it rewrites text files with ``sed`` and refuses if binary files
need relocating. Lock-built archives are packed for a long placeholder prefix,
so binary relocation has room for any realistic unpack path.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from envyard.builder import relocate
from envyard.builder.errors import ImageError
from envyard.builder.tarstream import Compression, TarSpec, compressed, tree_entries, write_tar

#: The prefix lock-built archives are installed for (long, so binary files can be relocated anywhere shorter).
PACKED_PREFIX = "/opt/envyard-packed-env" + "/_placehold" * 16

_UNPACK_TEMPLATE = r"""#!/bin/sh
# conda-unpack (written by envyard pack): relocate this environment to where it was unpacked.
# Run it once after unpacking: ./bin/conda-unpack
set -eu
PREFIX=$(cd "$(dirname "$0")/.." && pwd -P)
OLD=@OLD@
ENTRIES=$(cat <<'ENVYARD_ENTRIES'
@ENTRIES@
ENVYARD_ENTRIES
)
for py in "$PREFIX/bin/python" python3 python; do
    if [ "$("$py" -c "import os, re, sys; print(6 * 7)" 2>/dev/null)" = 42 ]; then
        exec "$py" - "$PREFIX" "$OLD" "$ENTRIES" <<'ENVYARD_PY'
@RELOCATE@

import sys
_entries = [tuple(line.split("\t", 1)[::-1]) for line in sys.argv[3].splitlines() if line]
relocate(sys.argv[1], sys.argv[2], sys.argv[1], _entries)
ENVYARD_PY
    fi
done
escape() { printf '%s' "$1" | sed -e 's/[\/&|.*^$[]/\\&/g'; }
old_re=$(escape "$OLD"); new_re=$(escape "$PREFIX")
printf '%s\n' "$ENTRIES" | while IFS="$(printf '\t')" read -r mode path; do
    [ -n "$path" ] || continue
    if [ "$mode" = binary ]; then
        echo "conda-unpack: $path needs binary relocation, which needs a Python; none found" >&2
        exit 1
    fi
    sed -i "s|$old_re|$new_re|g" "$PREFIX/$path"
done
"""

_ACTIVATE = r"""# envyard: source this file to activate the unpacked environment (conda-pack compatible)
_envyard_here=$(cd "$(dirname "${BASH_SOURCE:-$0}")/.." 2>/dev/null && pwd -P)
if [ -n "${ZSH_VERSION:-}" ]; then _envyard_here=$(cd "$(dirname "${(%):-%x}")/.." && pwd -P); fi
export _ENVYARD_OLD_PATH="$PATH"
export CONDA_PREFIX="$_envyard_here"
export PATH="$CONDA_PREFIX/bin:$PATH"
for _envyard_script in "$CONDA_PREFIX"/etc/conda/activate.d/*.sh; do
    [ -e "$_envyard_script" ] && . "$_envyard_script"
done
unset _envyard_here _envyard_script
"""

_DEACTIVATE = r"""# envyard: source this file to deactivate the environment activated by bin/activate
for _envyard_script in "$CONDA_PREFIX"/etc/conda/deactivate.d/*.sh; do
    [ -e "$_envyard_script" ] && . "$_envyard_script"
done
export PATH="${_ENVYARD_OLD_PATH:-$PATH}"
unset CONDA_PREFIX _ENVYARD_OLD_PATH _envyard_script
"""


@dataclass(frozen=True, slots=True)
class PackResult:
    archive: Path
    files: int
    relocated_files: int
    packed_prefix: str


def relocation_entries(prefix: Path, packed_prefix: str) -> list[tuple[str, str]]:
    """``(path, 'text' | 'binary')`` for every file that records ``packed_prefix``.

    From ``conda-meta`` (files with a prefix placeholder) plus scripts whose shebang
    names the prefix (pip and noarch-python entry points).
    """
    entries: dict[str, str] = {}
    for record_file in sorted((prefix / "conda-meta").glob("*.json")):
        record = json.loads(record_file.read_text())
        for item in record.get("paths_data", {}).get("paths", []):
            if item.get("prefix_placeholder"):
                entries[item["_path"]] = item.get("file_mode", "text")
    shebang = f"#!{packed_prefix}/".encode()
    for script in sorted((prefix / "bin").iterdir()) if (prefix / "bin").is_dir() else []:
        if script.is_file() and not script.is_symlink():
            with open(script, "rb") as fh:
                if fh.read(len(shebang)) == shebang:
                    entries.setdefault(f"bin/{script.name}", "text")
    return sorted(entries.items())


def unpack_script(packed_prefix: str, entries: list[tuple[str, str]]) -> str:
    """The ``bin/conda-unpack`` script for a prefix packed at ``packed_prefix``."""
    if "'" in packed_prefix:
        raise ImageError(f"cannot pack a prefix whose path contains a quote: {packed_prefix}")
    source = inspect.getsource(relocate).split('"""', 2)[2]
    return (_UNPACK_TEMPLATE.replace("@OLD@", f"'{packed_prefix}'")
            .replace("@ENTRIES@", "\n".join(f"{mode}\t{path}" for path, mode in entries))
            .replace("@RELOCATE@", source.strip()))


def compression_for(output: Path) -> Compression:
    name = output.name
    if name.endswith((".tar.gz", ".tgz")):
        return "gzip"
    if name.endswith((".tar.zst", ".tzst")):
        return "zstd"
    if name.endswith(".tar"):
        return "none"
    raise ImageError(f"cannot tell the archive format from {output.name!r}", file=output,
                     hint="name the output .tar.gz, .tar.zst or .tar")


def pack_prefix(prefix: Path, output: Path, *, packed_prefix: str, mtime: int = 0) -> PackResult:
    """Write ``prefix`` (installed for ``packed_prefix``) as a conda-pack style archive at ``output``."""
    compression = compression_for(output)
    if not (prefix / "conda-meta").is_dir():
        raise ImageError(f"{prefix} is not a conda environment (no conda-meta/)", file=prefix,
                         hint="pack a prefix made by envyard install, or pass a lock")
    entries = relocation_entries(prefix, packed_prefix)
    with tempfile.TemporaryDirectory(prefix="envyard-pack-") as tmp:
        extra = Path(tmp)
        (extra / "bin").mkdir()
        for name, text in (("conda-unpack", unpack_script(packed_prefix, entries)),
                           ("activate", _ACTIVATE), ("deactivate", _DEACTIVATE)):
            (extra / "bin" / name).write_text(text)
            (extra / "bin" / name).chmod(0o755 if name == "conda-unpack" else 0o644)
        extra_files = {f"bin/{name}": extra / "bin" / name for name in ("conda-unpack", "activate", "deactivate")}
        files = sorted(set(tree_entries(prefix)) - set(extra_files))
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        try:
            with open(partial, "wb") as sink, compressed(sink, compression) as out:
                written = write_tar(out, prefix, files, TarSpec(mtime=mtime), sources=extra_files)  # type: ignore[arg-type]
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    return PackResult(output, written, len(entries), packed_prefix)
