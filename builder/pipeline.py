"""The orchestrator: short sequences of stage calls, shared by the CLI and the worker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import rattler

from envyard.builder.channels import channel_url, make_gateway
from envyard.builder.errors import EnvyardError, SpecError
from envyard.builder.lock import LockCheck, LockOptions, check_lock, inherit_options, lock_environment
from envyard.builder.lockfiles._common import Warn, no_warnings
from envyard.builder.model import SUPPORTED_PLATFORMS, EnvironmentLock, LockProvenance, PlatformLock
from envyard.builder.progress import NullReporter, Reporter, Stage
from envyard.builder.spec import EnvironmentSpec, detect_input_kind, parse_environment_yaml, parse_requirements_txt
from envyard.builder.spec_pip import read_text

CONDA_LOCK_FILE = "conda-lock.yml"
_EXPLICIT_FILE = re.compile(r"^conda-(?P<platform>[a-z0-9]+-[a-z0-9]+)\.lock$")
_INPUT_HASH = re.compile(r"^#\s*input_hash:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class LockResult:
    lock: EnvironmentLock
    files: Mapping[str, Path]
    reexported: bool
    #: the options the lock was made with (the caller's, with unset ones inherited from the previous lock)
    options: LockOptions | None = None
    #: per-platform files of platforms the new lock no longer has, removed from the output directory
    removed: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()  # the pixi.lock environments re-exported


@dataclass(frozen=True, slots=True)
class DirectoryCheck:
    """``--check``'s finding, and the options (inherited from the lock's record) it checked against."""

    check: LockCheck
    options: LockOptions
    #: the options the lock on disk records (None without a lock, or for a lock made elsewhere)
    recorded: LockProvenance | None = None
    #: platform -> why it is stale or extra, where it is not the usual reason (a per-platform file)
    details: Mapping[str, str] = field(default_factory=dict)


def read_input(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    allow_includes: bool = True,
    environment: str | None = None,
    warn: Warn = no_warnings,
) -> EnvironmentSpec | dict[str, EnvironmentLock]:
    """A spec to solve, or the environments of an existing lock to re-export (``default`` first).

    ``environment`` picks a pixi.lock environment (``default`` unless given; ``all`` for
    every one); it is an error for a spec. ``allow_includes=False`` for specs that are not the
    caller's own files (a service's builds): their pip ``-r`` lines are refused instead of read.
    """
    from envyard.builder.lockfiles import ALL_ENVIRONMENTS, read_lock_environments, read_lockfile

    text = read_text(path, file=str(path), line=None)
    kind = detect_input_kind(path, text)
    if kind in ("environment", "requirements") and environment is not None:
        raise SpecError(
            "--environment selects an environment of a lockfile being re-exported",
            file=path,
            hint="drop --environment when locking a spec",
        )
    if kind == "environment":
        return parse_environment_yaml(text, source=str(path), environ=environ, allow_includes=allow_includes)
    if kind == "requirements":
        return parse_requirements_txt(text, source=str(path), environ=environ, allow_includes=allow_includes)
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
    allow_includes: bool = True,
    environment: str | None = None,
    adjust: Callable[[EnvironmentSpec], EnvironmentSpec] | None = None,
) -> LockResult:
    """Read ``source``; solve it (or take an existing lock as it is); write every lock format.

    ``allow_includes``: as in :func:`read_input` (false for a service's builds). Nothing in ``out_dir``
    changes unless every file could be written. What was skipped on reading or cannot be held by a
    format is returned in ``warnings``, one line each.
    """
    from envyard.builder.lockfiles import write_lock_files

    warnings: list[str] = []
    reporter = reporter or NullReporter()
    reporter.stage_started(Stage.PARSE, str(source))
    loaded = read_input(source, environ, allow_includes=allow_includes, environment=environment,
                        warn=warnings.append)
    reporter.stage_finished(Stage.PARSE)
    previous, unreadable = read_previous_lock(out_dir)
    warnings.extend(unreadable)
    environments: dict[str, EnvironmentLock] = {}
    if isinstance(loaded, dict):
        lock, reexported = next(iter(loaded.values())), True
        environments = loaded if len(loaded) > 1 else {}
    else:
        if adjust is not None:
            loaded = adjust(loaded)
        options = inherit_options(options, previous.provenance if previous else None)
        if gateway is None:
            urls = [channel_url(c, options.channels) for c in loaded.channels]
            gateway = make_gateway(cache_dir / "repodata", options.channels, channel_urls=urls)
        lock = asyncio.run(lock_environment(loaded, options, gateway, reporter, previous=previous))
        reexported = False
    reporter.stage_started(Stage.LOCK, str(out_dir))
    files = write_lock_files(lock, out_dir, warn=warnings.append, environments=environments)
    removed = remove_leftover_platform_files(out_dir, lock, previous)
    reporter.stage_finished(Stage.LOCK, files=len(files))
    names = tuple(loaded) if isinstance(loaded, dict) else ()
    return LockResult(lock, files, reexported, options=options, removed=removed,
                      warnings=tuple(dict.fromkeys(warnings)), environments=names)


def read_lock_head(path: Path) -> EnvironmentLock:
    """A ``conda-lock.yml``'s metadata (platforms, content hashes, recorded options) without its packages.

    Only the text before the ``package:`` list is parsed (what ``--check`` needs; the package list of a
    large lock takes a second to load); a file laid out otherwise is read whole.
    """
    import yaml

    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.lockfiles._yaml import YAML_LOADER
    from envyard.builder.lockfiles.condalock import conda_lock_from_document

    text = path.read_text(encoding="utf-8")
    head, found, _ = text.partition("\npackage:")
    if not found or "\nmetadata:" not in head:
        return read_lockfile(path)
    try:
        doc = yaml.load(head, Loader=YAML_LOADER)
    except yaml.YAMLError:
        return read_lockfile(path)  # reports the error with its line
    return conda_lock_from_document(doc, text=head, source=path)


def _explicit_platforms(out_dir: Path, head: EnvironmentLock) -> dict[str, PlatformLock] | None:
    """Each platform's packages from its ``conda-<platform>.lock`` (quick to read), if every one is there and
    carries the input hash ``conda-lock.yml`` records for it; else None."""
    from envyard.builder.lockfiles.explicit import parse_explicit

    found = {}
    for platform in head.platform_names:
        path = out_dir / f"conda-{platform}.lock"
        if not path.is_file():
            return None
        lock = parse_explicit(path.read_text(encoding="utf-8"), source=path)
        if platform not in lock.platforms or lock.content_hash.get(platform) != head.content_hash.get(platform):
            return None
        found[platform] = lock.platforms[platform]
    return found


def read_previous_lock(out_dir: Path) -> tuple[EnvironmentLock | None, tuple[str, ...]]:
    """The lock a relock replaces (``out_dir/conda-lock.yml``), or None; one that cannot be read is a warning.

    Its metadata comes from ``conda-lock.yml``; its conda packages from the explicit files when they
    match it (what a relock needs of them: name, version, build, URL, md5), else from ``conda-lock.yml``.
    """
    from envyard.builder.lockfiles import read_lockfile

    path = out_dir / CONDA_LOCK_FILE
    if not path.is_file():
        return None, ()
    try:
        head = read_lock_head(path)
        platforms = _explicit_platforms(out_dir, head)
        return (replace(head, platforms=platforms) if platforms is not None else read_lockfile(path)), ()
    except EnvyardError as err:
        return None, (f"the existing {path} cannot be read and is replaced without reusing it: {err.one_line()}",)


def _explicit_files(out_dir: Path) -> dict[str, Path]:
    """``platform -> conda-<platform>.lock`` in ``out_dir``, for the platforms envyard knows."""
    found = {}
    for path in out_dir.glob("conda-*.lock") if out_dir.is_dir() else ():
        match = _EXPLICIT_FILE.match(path.name)
        if match and match.group("platform") in SUPPORTED_PLATFORMS:
            found[match.group("platform")] = path
    return found


def _explicit_header(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(line for _, line in zip(range(40), fh, strict=False))


def remove_leftover_platform_files(
    out_dir: Path, lock: EnvironmentLock, previous: EnvironmentLock | None
) -> tuple[Path, ...]:
    """Remove ``conda-<platform>.lock`` files of platforms ``lock`` does not have (a relock dropped them).

    Only files envyard wrote (its generator line) or that belonged to the previous lock are removed.
    """
    from envyard.builder.lockfiles.explicit import GENERATOR

    removed = []
    before = set(previous.platforms) if previous else set()
    for platform, path in sorted(_explicit_files(out_dir).items()):
        if platform in lock.platforms:
            continue
        if platform in before or _explicit_header(path).startswith(GENERATOR):
            path.unlink(missing_ok=True)
            removed.append(path)
    return tuple(removed)



def check_directory(
    source: Path, out_dir: Path, options: LockOptions, environ: Mapping[str, str] | None = None
) -> DirectoryCheck:
    """Whether the lock in ``out_dir`` is fresh for ``source``, with the options it was made with; no solve.

    Besides ``conda-lock.yml``, the ``conda-<platform>.lock`` files are checked: one whose input hash
    differs makes its platform stale, one of a platform not wanted (any more) makes it extra.
    """
    loaded = read_input(source, environ)
    if not isinstance(loaded, EnvironmentSpec):
        raise SpecError(
            "--check needs an environment spec, not a lockfile",
            file=source,
            hint="pass the environment.yml the lock was made from",
        )
    existing_path = out_dir / CONDA_LOCK_FILE
    existing = read_lock_head(existing_path) if existing_path.is_file() else None
    options = inherit_options(options, existing.provenance if existing else None)
    check = check_lock(loaded, options, existing)
    details: dict[str, str] = {}
    if existing is not None:
        stale, extra = list(check.stale), list(check.extra)
        for platform, path in _explicit_files(out_dir).items():
            if platform not in existing.platforms or platform in check.missing:
                if platform not in extra and platform not in check.missing:
                    extra.append(platform)
                    details[platform] = f"{path.name} is left from an earlier lock"
                continue
            found = _INPUT_HASH.search(_explicit_header(path))
            if found and found.group(1) != existing.content_hash.get(platform) and platform not in stale:
                stale.append(platform)
                details[platform] = f"{path.name} does not match {CONDA_LOCK_FILE}"
        check = replace(check, stale=tuple(sorted(stale)), extra=tuple(sorted(extra)))
    return DirectoryCheck(check, options, existing.provenance if existing else None, details)
