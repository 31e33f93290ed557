"""Lockfile formats: read any of them into an :class:`~builder.model.EnvironmentLock`, write all of them.

* ``conda-lock.yml`` - conda-lock's unified format, version 1 (:mod:`.condalock`)
* ``pixi.lock`` - rattler-lock / pixi, version 7 (:mod:`.pixi`)
* ``conda-<platform>.lock`` - conda's ``@EXPLICIT`` files (:mod:`.explicit`)

Every writer is byte-deterministic: the same lock gives the same bytes, whatever the
clock, the working directory or the files' modification times. Every reader raises
:class:`~builder.errors.LockfileError` (file, line where known, hint) for input it
cannot read, never a bare library exception.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, get_args

import yaml

from builder.errors import LockfileError
from builder.lockfiles._yaml import YAML_LOADER, yaml_error
from builder.lockfiles.condalock import conda_lock_from_document, parse_conda_lock, render_conda_lock
from builder.lockfiles.explicit import parse_explicit, render_explicit
from builder.lockfiles.pixi import parse_pixi_lock, write_pixi_lock
from builder.model import EnvironmentLock

LockFormat = Literal["conda-lock", "pixi", "explicit"]
ALL_FORMATS: tuple[LockFormat, ...] = get_args(LockFormat)
CONDA_LOCK_FILE = "conda-lock.yml"
PIXI_LOCK_FILE = "pixi.lock"
_PIXI_MARKER = re.compile(r"^environments:", re.MULTILINE)

__all__ = [
    "ALL_FORMATS",
    "LockFormat",
    "explicit_file_name",
    "parse_conda_lock",
    "parse_explicit",
    "parse_pixi_lock",
    "read_lockfile",
    "render_conda_lock",
    "render_explicit",
    "write_lock_files",
    "write_pixi_lock",
]


def explicit_file_name(platform: str) -> str:
    """``conda-<platform>.lock``, the name conda-lock gives rendered explicit files."""
    return f"conda-{platform}.lock"


def _prepare(target: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a new temporary file next to ``target``; returns its path."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _text_writer(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return write


def write_lock_files(
    lock: EnvironmentLock, out_dir: Path, formats: Iterable[LockFormat] = ALL_FORMATS
) -> dict[str, Path]:
    """Write the lock in each format into ``out_dir``; returns file name -> path written.

    ``conda-lock.yml``, ``pixi.lock`` and one ``conda-<platform>.lock`` per platform,
    each replaced atomically (a reader never sees a half-written file). All files are
    written to temporary files first, so a lock that one format cannot hold
    (:class:`LockfileError`) leaves the directory as it was.
    """
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in ALL_FORMATS]
    if unknown:
        raise LockfileError(
            f"unknown lock format(s): {', '.join(map(str, unknown))}", hint=f"choose from {', '.join(ALL_FORMATS)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {}
    if "conda-lock" in wanted:
        writers[CONDA_LOCK_FILE] = _text_writer(render_conda_lock(lock))
    if "explicit" in wanted:
        for platform in lock.platform_names:
            writers[explicit_file_name(platform)] = _text_writer(render_explicit(lock, platform))
    if "pixi" in wanted:
        writers[PIXI_LOCK_FILE] = lambda tmp: write_pixi_lock(lock, tmp)
    prepared: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            prepared[name] = _prepare(out_dir / name, write)
        for name, tmp in prepared.items():
            os.replace(tmp, out_dir / name)
    finally:
        for tmp in prepared.values():
            tmp.unlink(missing_ok=True)
    return {name: out_dir / name for name in sorted(writers)}


def detect_format(text: str) -> tuple[LockFormat, object]:
    """The format of lockfile ``text`` and, for YAML formats, the loaded document.

    Raises :class:`yaml.YAMLError` for YAML that does not parse and ``ValueError``
    for content that is none of the formats.
    """
    if any(line.strip() == "@EXPLICIT" for line in text.splitlines()):
        return "explicit", None
    if _PIXI_MARKER.search(text):
        return "pixi", None  # rattler parses it (and reports its errors) itself
    doc = yaml.load(text, Loader=YAML_LOADER)
    if isinstance(doc, dict):
        if "environments" in doc:
            return "pixi", doc
        if "package" in doc or "metadata" in doc:
            return "conda-lock", doc
    raise ValueError("neither an @EXPLICIT file nor a conda-lock or pixi lock file")


def read_lockfile(path: str | os.PathLike[str], *, environment: str | None = None) -> EnvironmentLock:
    """Read a lockfile of any supported format, detected from its content."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LockfileError(f"not UTF-8 text ({exc.reason})", file=path, hint="lock files are text") from None
    except OSError as exc:
        raise LockfileError(
            f"cannot read the lock file: {exc.strerror or exc}", file=path, hint="check the path and its permissions"
        ) from None
    try:
        kind, doc = detect_format(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path) from None
    except ValueError as exc:
        raise LockfileError(
            str(exc), file=path, hint="envyard reads conda-lock.yml, pixi.lock and @EXPLICIT files"
        ) from None
    if kind == "explicit":
        return parse_explicit(text, source=path)
    if kind == "pixi":
        return parse_pixi_lock(path, environment=environment)
    return conda_lock_from_document(doc, text=text, source=path)
