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
from builder.lockfiles._common import Warn, no_warnings
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
    warnings: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()  # the pixi.lock environments re-exported


def read_input(
    path: Path, environ: Mapping[str, str] | None = None, *, environment: str | None = None, warn: Warn = no_warnings
) -> EnvironmentSpec | dict[str, EnvironmentLock]:
    """A spec to solve, or the environments of an existing lock to re-export (``default`` first).

    ``environment`` picks a pixi.lock environment (``default`` unless given; ``all`` for
    every one); it is an error for a spec.
    """
    from builder.lockfiles import ALL_ENVIRONMENTS, read_lock_environments, read_lockfile

    text = read_text(path, file=str(path), line=None)
    kind = detect_input_kind(path, text)
    if kind in ("environment", "requirements") and environment is not None:
        raise SpecError(
            "--environment selects an environment of a lockfile being re-exported",
            file=path,
            hint="drop --environment when locking a spec",
        )
    if kind == "environment":
        return parse_environment_yaml(text, source=str(path), environ=environ)
    if kind == "requirements":
        return parse_requirements_txt(text, source=str(path), environ=environ)
    if environment == ALL_ENVIRONMENTS:
        return read_lock_environments(path, warn=warn)
    return {environment or "default": read_lockfile(path, environment=environment, warn=warn)}


def lock_to_directory(
    source: Path,
    out_dir: Path,
    options: LockOptions,
    *,
    cache_dir: Path,
    environ: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    gateway: rattler.Gateway | None = None,
    environment: str | None = None,
) -> LockResult:
    """Read ``source``; solve it (or take an existing lock as it is); write every lock format.

    Nothing in ``out_dir`` changes unless every file could be written. What was skipped
    on reading or cannot be held by a format is returned in ``warnings``, one line each.
    """
    from builder.lockfiles import write_lock_files

    warnings: list[str] = []
    reporter = reporter or NullReporter()
    reporter.stage_started(Stage.PARSE, str(source))
    loaded = read_input(source, environ, environment=environment, warn=warnings.append)
    reporter.stage_finished(Stage.PARSE)
    environments: dict[str, EnvironmentLock] = {}
    if isinstance(loaded, dict):
        lock, reexported = next(iter(loaded.values())), True
        environments = loaded if len(loaded) > 1 else {}
    else:
        if gateway is None:
            urls = [channel_url(c, options.channels) for c in loaded.channels]
            gateway = make_gateway(cache_dir / "repodata", options.channels, channel_urls=urls)
        lock = asyncio.run(lock_environment(loaded, options, gateway, reporter))
        reexported = False
    reporter.stage_started(Stage.LOCK, str(out_dir))
    files = write_lock_files(lock, out_dir, warn=warnings.append, environments=environments)
    reporter.stage_finished(Stage.LOCK, files=len(files))
    names = tuple(loaded) if isinstance(loaded, dict) else ()
    return LockResult(lock, files, reexported, tuple(dict.fromkeys(warnings)), names)


def check_directory(
    source: Path, out_dir: Path, options: LockOptions, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The platforms whose lock in ``out_dir`` is missing or stale for ``source``; no solve."""
    from builder.lockfiles import read_lockfile

    loaded = read_input(source, environ)
    if not isinstance(loaded, EnvironmentSpec):
        raise SpecError(
            "--check needs an environment spec, not a lockfile",
            file=source,
            hint="pass the environment.yml the lock was made from",
        )
    existing_path = out_dir / CONDA_LOCK_FILE
    if not existing_path.exists():
        return list(target_platforms(loaded, options))
    return stale_platforms(loaded, options, read_lockfile(existing_path))
