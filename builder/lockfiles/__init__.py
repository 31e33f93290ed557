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
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, get_args

import yaml

from envyard.builder.errors import LockfileError
from envyard.builder.lockfiles._common import Warn, no_warnings
from envyard.builder.lockfiles._yaml import YAML_LOADER, yaml_error
from envyard.builder.lockfiles.condalock import conda_lock_from_document, parse_conda_lock, render_conda_lock
from envyard.builder.lockfiles.explicit import explicit_file_name, parse_explicit, render_explicit
from envyard.builder.lockfiles.pixi import (
    parse_pixi_environments,
    parse_pixi_lock,
    parse_pixi_text,
    render_pixi_lock,
    write_pixi_lock,
)
from envyard.builder.model import EnvironmentLock

LockFormat = Literal["conda-lock", "pixi", "explicit"]
ALL_FORMATS: tuple[LockFormat, ...] = get_args(LockFormat)
ALL_ENVIRONMENTS = "all"
CONDA_LOCK_FILE = "conda-lock.yml"
PIXI_LOCK_FILE = "pixi.lock"
_PIXI_MARKER = re.compile(r"^environments:", re.MULTILINE)

__all__ = [
    "ALL_ENVIRONMENTS",
    "ALL_FORMATS",
    "LockFormat",
    "CONDA_LOCK_FILE",
    "PIXI_LOCK_FILE",
    "Warn",
    "detect_format",
    "explicit_file_name",
    "parse_conda_lock",
    "parse_explicit",
    "parse_pixi_environments",
    "parse_lockfile",
    "parse_pixi_lock",
    "parse_pixi_text",
    "read_lock_environments",
    "read_lockfile",
    "render_conda_lock",
    "render_explicit",
    "render_pixi_lock",
    "write_lock_files",
    "write_pixi_lock",
]


def _render_all(
    lock: EnvironmentLock,
    wanted: list[LockFormat],
    warn: Warn,
    environments: Mapping[str, EnvironmentLock],
) -> dict[str, str]:
    """File name -> text for every wanted format; a format that cannot hold the lock raises here."""
    texts: dict[str, str] = {}
    single = [name for fmt, name in (("conda-lock", CONDA_LOCK_FILE), ("explicit", "conda-<platform>.lock"))
              if fmt in wanted]  # fmt: skip
    others = [name for name, env in environments.items() if env is not lock]
    if others and single:
        where = f"are written to {PIXI_LOCK_FILE} only" if "pixi" in wanted else "are not written"
        warn(
            f"{' and '.join(single)} hold one environment ({next(iter(environments))}): "
            f"environment{'s' if len(others) > 1 else ''} {', '.join(others)} {where}"
        )
    if "conda-lock" in wanted:
        texts[CONDA_LOCK_FILE] = render_conda_lock(lock, warn)
    if "explicit" in wanted:
        for platform in lock.platform_names:
            texts[explicit_file_name(platform)] = render_explicit(lock, platform, warn)
        if lock.custom_metadata:
            keys = ", ".join(lock.custom_metadata)
            warn(f"conda-<platform>.lock (@EXPLICIT) has no custom metadata: not written: {keys}")
    if "pixi" in wanted:
        try:
            texts[PIXI_LOCK_FILE] = render_pixi_lock(lock, warn, environments=environments or None)
        except LockfileError as exc:
            exc.file = PIXI_LOCK_FILE
            raise
    return texts


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def write_lock_files(
    lock: EnvironmentLock,
    out_dir: Path,
    formats: Iterable[LockFormat] = ALL_FORMATS,
    *,
    warn: Warn = no_warnings,
    environments: Mapping[str, EnvironmentLock] | None = None,
) -> dict[str, Path]:
    """Write the lock in each format into ``out_dir``; returns file name -> path written.

    ``conda-lock.yml``, ``pixi.lock`` (environment ``default``, or each of ``environments``) and
    one ``conda-<platform>.lock`` per platform. Every file is rendered first and written
    into a staging directory beside ``out_dir``, then moved into place (each file
    replaced atomically); any error before that leaves ``out_dir`` as it was, and an
    ``out_dir`` that did not exist is not created. What a format cannot hold is reported
    through ``warn``, one line each. Errors name the file in ``out_dir``, never a
    temporary one.
    """
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in ALL_FORMATS]
    if unknown:
        raise LockfileError(
            f"unknown lock format(s): {', '.join(map(str, unknown))}", hint=f"choose from {', '.join(ALL_FORMATS)}"
        )
    out_dir = Path(out_dir)
    try:
        texts = _render_all(lock, wanted, warn, environments or {})
    except LockfileError as exc:
        if exc.file is not None and not os.path.isabs(exc.file):
            exc.file = str(out_dir / exc.file)
        raise
    if out_dir.exists() and not out_dir.is_dir():
        raise LockfileError("the output path is not a directory", file=out_dir, hint="choose a directory with -o")
    created = _missing_ancestors(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    except OSError as exc:
        _remove_dirs(created)
        raise LockfileError(
            f"cannot write the lock files: {exc.strerror or exc}",
            file=out_dir,
            hint="check the directory's permissions",
        ) from None
    try:
        for name, text in texts.items():
            _write_text(staging / name, text)
        if not out_dir.exists():
            os.chmod(staging, 0o755)
            os.replace(staging, out_dir)  # the whole directory appears at once
        else:
            for name in texts:
                os.replace(staging / name, out_dir / name)
    except OSError as exc:
        raise LockfileError(
            f"cannot write the lock files: {exc.strerror or exc}",
            file=out_dir,
            hint="check the directory's permissions",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not out_dir.exists():
            _remove_dirs(created)
    return {name: out_dir / name for name in sorted(texts)}


def _remove_dirs(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o644)


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


def read_lockfile(
    path: str | os.PathLike[str], *, environment: str | None = None, warn: Warn = no_warnings
) -> EnvironmentLock:
    """Read a lockfile of any supported format, detected from its content.

    ``environment`` names the pixi.lock environment to read (``default`` unless given);
    packages that cannot be locked as artifacts are skipped with a ``warn`` line each.
    """
    path, kind, doc, text = _load(path)
    if kind == "explicit":
        return parse_explicit(text, source=path)
    if kind == "pixi":
        return parse_pixi_lock(path, environment=environment, warn=warn)
    return conda_lock_from_document(doc, text=text, source=path)


def parse_lockfile(
    text: str, *, source: str | os.PathLike[str] = "<lockfile>", environment: str | None = None,
    warn: Warn = no_warnings,
) -> EnvironmentLock:
    r"""Read lockfile ``text`` of any supported format, detected from its content, like :func:`read_lockfile`;
    ``source`` (a file name) names it in errors.

    >>> parse_lockfile("# platform: linux-64\n@EXPLICIT\n", source="conda-linux-64.lock").platform_names
    ('linux-64',)
    """
    kind, doc = _detect(text, source)
    if kind == "explicit":
        return parse_explicit(text, source=source)
    if kind == "pixi":
        return parse_pixi_text(text, source=source, environment=environment, warn=warn)
    return conda_lock_from_document(doc, text=text, source=source)


def read_lock_environments(path: str | os.PathLike[str], *, warn: Warn = no_warnings) -> dict[str, EnvironmentLock]:
    """Every environment of a lockfile, ``default`` first (one for conda-lock and @EXPLICIT files)."""
    path, kind, doc, text = _load(path)
    if kind == "pixi":
        return parse_pixi_environments(path, warn=warn)
    if kind == "explicit":
        return {"default": parse_explicit(text, source=path)}
    return {"default": conda_lock_from_document(doc, text=text, source=path)}


def _load(path: str | os.PathLike[str]) -> tuple[Path, LockFormat, object, str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LockfileError(f"not UTF-8 text ({exc.reason})", file=path, hint="lock files are text") from None
    except OSError as exc:
        raise LockfileError(
            f"cannot read the lock file: {exc.strerror or exc}", file=path, hint="check the path and its permissions"
        ) from None
    kind, doc = _detect(text, path)
    return path, kind, doc, text


def _detect(text: str, source: str | os.PathLike[str]) -> tuple[LockFormat, object]:
    """:func:`detect_format`, its errors as :class:`LockfileError` naming ``source``."""
    try:
        return detect_format(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, source) from None
    except ValueError as exc:
        raise LockfileError(
            str(exc), file=source, hint="envyard reads conda-lock.yml, pixi.lock and @EXPLICIT files"
        ) from None
