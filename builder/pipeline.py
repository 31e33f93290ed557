"""The orchestrator: short sequences of stage calls, shared by the CLI and the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import rattler

from builder.channels import channel_url, make_gateway
from builder.errors import SpecError
from builder.lock import LockOptions, lock_environment, stale_platforms, target_platforms
from builder.model import EnvironmentLock
from builder.progress import NullReporter, Reporter, Stage
from builder.spec import EnvironmentSpec, detect_input_kind, parse_environment_yaml, parse_requirements_txt
from builder.spec_pip import read_text

CONDA_LOCK_FILE = "conda-lock.yml"


@dataclass(frozen=True, slots=True)
class LockResult:
    lock: EnvironmentLock
    files: Mapping[str, Path]
    reexported: bool


def read_input(
    path: Path, environ: Mapping[str, str] | None = None, *, allow_includes: bool = True
) -> EnvironmentSpec | EnvironmentLock:
    """A spec to solve, or an existing lock (conda-lock.yml, pixi.lock, @EXPLICIT) to re-export.

    ``allow_includes=False`` for specs that are not the caller's own files (a service's builds):
    their pip ``-r`` lines are refused instead of read.
    """
    from builder.lockfiles import read_lockfile

    text = read_text(path, file=str(path), line=None)
    kind = detect_input_kind(path, text)
    if kind == "environment":
        return parse_environment_yaml(text, source=str(path), environ=environ, allow_includes=allow_includes)
    if kind == "requirements":
        return parse_requirements_txt(text, source=str(path), environ=environ, allow_includes=allow_includes)
    return read_lockfile(path)


def lock_to_directory(
    source: Path,
    out_dir: Path,
    options: LockOptions,
    *,
    cache_dir: Path,
    environ: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    gateway: rattler.Gateway | None = None,
    allow_includes: bool = True,
) -> LockResult:
    """Read ``source``; solve it (or take an existing lock as it is); write every lock format.

    ``allow_includes``: as in :func:`read_input` (false for a service's builds).
    """
    from builder.lockfiles import write_lock_files

    reporter = reporter or NullReporter()
    reporter.stage_started(Stage.PARSE, str(source))
    loaded = read_input(source, environ, allow_includes=allow_includes)
    reporter.stage_finished(Stage.PARSE)
    if isinstance(loaded, EnvironmentLock):
        lock, reexported = loaded, True
    else:
        if gateway is None:
            urls = [channel_url(c, options.channels) for c in loaded.channels]
            gateway = make_gateway(cache_dir / "repodata", options.channels, channel_urls=urls)
        lock = asyncio.run(lock_environment(loaded, options, gateway, reporter))
        reexported = False
    reporter.stage_started(Stage.LOCK, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_lock_files(lock, out_dir)
    reporter.stage_finished(Stage.LOCK, files=len(files))
    return LockResult(lock, files, reexported)


def check_directory(
    source: Path, out_dir: Path, options: LockOptions, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The platforms whose lock in ``out_dir`` is missing or stale for ``source``; no solve."""
    from builder.lockfiles import read_lockfile

    loaded = read_input(source, environ)
    if isinstance(loaded, EnvironmentLock):
        raise SpecError(
            "--check needs an environment spec, not a lockfile",
            file=source,
            hint="pass the environment.yml the lock was made from",
        )
    existing_path = out_dir / CONDA_LOCK_FILE
    if not existing_path.exists():
        return list(target_platforms(loaded, options))
    return stale_platforms(loaded, options, read_lockfile(existing_path))
