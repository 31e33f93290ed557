"""The lock stage: a parsed spec -> a closed, verified :class:`EnvironmentLock` for every platform.

Sequence: per platform, build a :class:`SolveRequest` (selectors applied,
channels resolved, virtual packages chosen); solve all platforms concurrently;
resolve the pip section of each platform against its solved Python with uv;
check every lock is closed (on the solver's records); stamp each platform with the content hash of its inputs.

A lock records the options it was made with (:class:`LockProvenance`); a relock or
``--check`` inherits those the caller leaves unset (:func:`inherit_options`), and a
relock keeps the previous lock's packages wherever they still fit (``--update`` frees some,
``--update-all`` all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import rattler

from envyard.builder.channels import ChannelOptions, channel_url, qualify_spec
from envyard.builder.errors import PipResolutionError, SpecError, UsageError
from envyard.builder.model import (
    SUPPORTED_PLATFORMS,
    EnvironmentLock,
    LockedCondaPackage,
    LockedPipPackage,
    LockProvenance,
    PlatformLock,
)
from envyard.builder.progress import NullReporter, Reporter, Stage
from envyard.builder.solve import ChannelPriorityMode, SolveRequest, SolveStrategy, solve_platforms, spec_name
from envyard.builder.spec import EnvironmentSpec
from envyard.builder.url_policy import UrlPolicy
from envyard.builder.virtual_packages import VirtualPackage, virtual_packages_for

DEFAULT_PLATFORMS: tuple[str, ...] = ("linux-64",)
#: the options a relock or ``--check`` may take from the lock's record when the caller leaves them unset
INHERITABLE: frozenset[str] = frozenset({
    "platforms", "channel_alias", "mirrors", "cuda", "virtual_packages", "exclude_newer", "strategy",
    "channel_priority", "pip_index_url", "pip_find_links", "pip_no_index",
})
_TOKEN_PATH = re.compile(r"/t/[^/]+")


@dataclass(frozen=True, slots=True)
class LockOptions:
    """What a caller may set on top of the spec (CLI flags, service settings)."""

    platforms: tuple[str, ...] = ()
    channels: ChannelOptions = field(default_factory=ChannelOptions)
    cuda: str | None = None
    virtual_packages: Mapping[str, str] = field(default_factory=dict)
    exclude_newer: datetime | None = None
    strategy: SolveStrategy = "highest"
    channel_priority: ChannelPriorityMode = "strict"
    pip_index_url: str | None = None
    pip_find_links: tuple[str, ...] = ()
    pip_no_index: bool = False
    pip_cache_dir: Path | None = None
    pip_allow_sdists: bool = False  # building an sdist runs its code: only where the submitter is trusted
    environ: Mapping[str, str] | None = None
    #: Service builds: the URLs the lock may fetch, checked right before rattler and uv run (None: no check).
    url_policy: UrlPolicy | None = None
    #: options (names in :data:`INHERITABLE`) the caller did not set: taken from a previous lock's record
    inherit: frozenset[str] = frozenset()
    #: packages a relock re-solves freely; the others of the previous lock are kept where they still fit
    update: tuple[str, ...] = ()
    update_all: bool = False


def _public_url(url: str | None) -> str | None:
    """``url`` if it carries no credentials (user:password@, a /t/TOKEN/ path), else None: never recorded."""
    if not url:
        return None
    parts = urlsplit(url)
    return None if parts.username or parts.password or _TOKEN_PATH.search(parts.path) else url


def provenance_of(options: LockOptions) -> LockProvenance:
    """What a lock records of the options it was made with (see :class:`LockProvenance`)."""
    mirrors = {k: tuple(v) for k, v in options.channels.mirrors.items()}
    public_mirrors = all(_public_url(u) for k, v in mirrors.items() for u in (k, *v))
    return LockProvenance(
        platforms=tuple(dict.fromkeys(options.platforms)),
        channel_alias=_public_url(options.channels.channel_alias),
        mirrors=mirrors if public_mirrors else {},
        cuda=options.cuda,
        virtual_packages=dict(options.virtual_packages),
        exclude_newer=options.exclude_newer.isoformat() if options.exclude_newer else None,
        strategy=options.strategy,
        channel_priority=options.channel_priority,
        pip_index_url=_public_url(options.pip_index_url),
        pip_find_links=tuple(options.pip_find_links),
        pip_no_index=options.pip_no_index,
    )


def inherit_options(options: LockOptions, recorded: LockProvenance | None) -> LockOptions:
    """``options`` with every field named in ``options.inherit`` taken from ``recorded`` where it holds one."""
    if recorded is None or not options.inherit:
        return options
    take = options.inherit & INHERITABLE
    changes: dict[str, Any] = {}
    channels = options.channels
    if "channel_alias" in take and recorded.channel_alias:
        channels = replace(channels, channel_alias=recorded.channel_alias)
    if "mirrors" in take and recorded.mirrors:
        channels = replace(channels, mirrors={k: list(v) for k, v in recorded.mirrors.items()})
    if channels != options.channels:
        changes["channels"] = channels
    if "exclude_newer" in take and recorded.exclude_newer:
        with contextlib.suppress(ValueError):  # an unreadable date is not reused
            changes["exclude_newer"] = datetime.fromisoformat(recorded.exclude_newer)
    if "strategy" in take and recorded.strategy in ("highest", "lowest", "lowest-direct"):
        changes["strategy"] = cast(SolveStrategy, recorded.strategy)
    if "channel_priority" in take and recorded.channel_priority in ("strict", "disabled"):
        changes["channel_priority"] = cast(ChannelPriorityMode, recorded.channel_priority)
    for key in ("platforms", "cuda", "virtual_packages", "pip_index_url", "pip_find_links", "pip_no_index"):
        value = getattr(recorded, key)
        if key in take and value:
            changes[key] = dict(value) if key == "virtual_packages" else value
    return replace(options, **changes) if changes else options


@dataclass(frozen=True, slots=True)
class LockCheck:
    """What ``--check`` found: platforms whose inputs changed, that are not locked, or no longer wanted."""

    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    lock_missing: bool = False

    @property
    def status(self) -> Literal["fresh", "stale", "missing"]:
        if self.lock_missing:
            return "missing"
        return "stale" if self.stale or self.missing or self.extra else "fresh"


def target_platforms(spec: EnvironmentSpec, options: LockOptions) -> tuple[str, ...]:
    """The call's platforms, else the spec's ``platforms:``, else linux-64; validated and de-duplicated."""
    chosen = options.platforms or spec.platforms or DEFAULT_PLATFORMS
    for platform in chosen:
        if platform not in SUPPORTED_PLATFORMS:
            raise SpecError(
                f"unknown platform '{platform}'",
                file=spec.source,
                field="platforms",
                hint="use one of: " + ", ".join(SUPPORTED_PLATFORMS),
            )
    return tuple(dict.fromkeys(chosen))


def platform_virtual_packages(spec: EnvironmentSpec, platform: str, options: LockOptions) -> tuple[VirtualPackage, ...]:
    overrides = {**spec.virtual_packages, **options.virtual_packages}
    return virtual_packages_for(platform, cuda=options.cuda, variables=spec.variables, overrides=overrides)


def solve_request(
    spec: EnvironmentSpec,
    platform: str,
    options: LockOptions,
    locked: tuple[LockedCondaPackage, ...] = (),
    locked_is_solution: bool = False,
) -> SolveRequest:
    """The solver's input for one platform."""
    if not spec.channels:
        raise SpecError(
            "the spec names no channel",
            file=spec.source,
            field="channels",
            hint="add 'channels: [conda-forge]' (envyard never assumes the defaults channel)",
        )
    return SolveRequest(
        platform=platform,
        specs=tuple(qualify_spec(s, options.channels) for s in spec.conda_specs(platform)),
        channels=tuple(channel_url(c, options.channels) for c in spec.channels),
        virtual_packages=platform_virtual_packages(spec, platform, options),
        exclude_newer=options.exclude_newer,
        strategy=options.strategy,
        channel_priority=options.channel_priority,
        locked=locked,
        locked_is_solution=locked_is_solution and bool(locked),
    )


def content_hash(spec: EnvironmentSpec, platform: str, options: LockOptions) -> str:
    """sha256 of everything a platform's solve depends on except the repodata itself.

    The channel alias and mirrors are left out: where packages are fetched from
    does not change what was asked for.
    """
    inputs: dict[str, Any] = {
        "spec": spec.canonical(),
        "platform": platform,
        "conda_specs": list(spec.conda_specs(platform)),
        "pip": list(spec.pip_requirements(platform)),
        "virtual_packages": [str(v) for v in platform_virtual_packages(spec, platform, options)],
        "exclude_newer": options.exclude_newer.isoformat() if options.exclude_newer else None,
        "strategy": options.strategy,
        "channel_priority": options.channel_priority,
    }
    encoded = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def stale_platforms(spec: EnvironmentSpec, options: LockOptions, existing: EnvironmentLock) -> list[str]:
    """The platforms whose lock is missing or was made from other inputs (no solve)."""
    return [
        platform
        for platform in target_platforms(spec, options)
        if existing.content_hash.get(platform) != content_hash(spec, platform, options)
    ]


def check_lock(spec: EnvironmentSpec, options: LockOptions, existing: EnvironmentLock | None) -> LockCheck:
    """Compare a lock with what ``spec`` and ``options`` would lock now (no solve); ``options`` as inherited."""
    targets = target_platforms(spec, options)
    if existing is None:
        return LockCheck(missing=targets, lock_missing=True)
    missing = tuple(p for p in targets if p not in existing.platforms)
    stale = tuple(p for p in targets if p in existing.platforms
                  and existing.content_hash.get(p) != content_hash(spec, p, options))
    extra = tuple(p for p in existing.platform_names if p not in targets)
    return LockCheck(stale=stale, missing=missing, extra=extra)


def locked_to_keep(previous: EnvironmentLock | None, platform: str, options: LockOptions) -> tuple[
        LockedCondaPackage, ...]:
    """The previous lock's conda packages of ``platform`` a relock should keep where they still fit."""
    if previous is None or options.update_all or platform not in previous.platforms:
        return ()
    freed = {name.lower() for name in options.update}
    return tuple(p for p in previous.platforms[platform].conda if p.name.lower() not in freed)


def unchanged(spec: EnvironmentSpec, platform: str, options: LockOptions, previous: EnvironmentLock | None) -> bool:
    """Whether ``previous`` locked ``platform`` from these very inputs and nothing is to be updated."""
    if previous is None or options.update or options.update_all:
        return False
    recorded = previous.content_hash.get(platform)
    return recorded is not None and recorded == content_hash(spec, platform, options)


def check_update_names(spec: EnvironmentSpec, options: LockOptions, previous: EnvironmentLock | None) -> None:
    """``--update NAME`` must name a package of the previous lock or of the spec (a typo frees nothing)."""
    if not options.update:
        return
    if options.update_all:
        raise UsageError("--update and --update-all exclude each other", hint="pass one of them")
    known = {p.name.lower() for pl in (previous.platforms.values() if previous else ()) for p in pl.conda}
    for platform in target_platforms(spec, options):
        known.update(spec_name(s).lower() for s in spec.conda_specs(platform))
    unknown = [n for n in options.update if n.lower() not in known]
    if unknown:
        raise UsageError(
            f"--update: {', '.join(unknown)} is neither locked nor requested",
            hint="name packages of the lock (conda-lock.yml in the output directory) or of the spec",
        )


def _pip_packages(
    spec: EnvironmentSpec, platform: str, conda: tuple[LockedCondaPackage, ...], options: LockOptions
) -> tuple[LockedPipPackage, ...]:
    from envyard.builder.pip_resolve import PipTarget, resolve_pip_requirements

    requirements = spec.pip_requirements(platform)
    if not requirements:
        return ()
    by_name = {p.name: p for p in conda}
    python = by_name.get("python")
    if python is None:
        raise PipResolutionError(
            f"{platform}: the spec has a pip section but its conda packages include no python",
            file=spec.source,
            field="dependencies",
            hint="add 'python' (and 'pip') to the conda dependencies",
        )
    virtual = {v.name: v.version for v in platform_virtual_packages(spec, platform, options)}
    section = spec.pip
    return resolve_pip_requirements(
        requirements,
        PipTarget(
            platform=platform,
            python_version=python.version,
            glibc_version=virtual.get("__glibc"),
            macos_version=virtual.get("__osx"),
        ),
        conda_provided={name: p.version for name, p in by_name.items()},
        index_url=(section.index_url if section else None) or options.pip_index_url,
        extra_index_urls=section.extra_index_urls if section else (),
        find_links=(*(section.find_links if section else ()), *options.pip_find_links),
        no_index=options.pip_no_index,
        exclude_newer=options.exclude_newer,
        cache_dir=options.pip_cache_dir,
        environ=options.environ,
        allow_sdists=options.pip_allow_sdists,
        url_policy=options.url_policy,
    )


async def lock_environment(
    spec: EnvironmentSpec,
    options: LockOptions,
    gateway: rattler.Gateway,
    reporter: Reporter | None = None,
    previous: EnvironmentLock | None = None,
) -> EnvironmentLock:
    """Solve, resolve pip, verify and assemble the lock of ``spec`` for every target platform.

    With a ``previous`` lock, its packages are kept wherever they still fit the spec (see
    :func:`locked_to_keep`); ``options`` should already be inherited from its record.
    """
    reporter = reporter or NullReporter()
    check_update_names(spec, options, previous)
    platforms = target_platforms(spec, options)
    requests = [
        solve_request(spec, p, options, locked_to_keep(previous, p, options), unchanged(spec, p, options, previous))
        for p in platforms
    ]
    reporter.stage_started(Stage.SOLVE, ", ".join(platforms))
    solved = await solve_platforms(requests, gateway, options.url_policy)
    reporter.stage_finished(Stage.SOLVE, packages=sum(len(v) for v in solved.values()))

    pip: dict[str, tuple[LockedPipPackage, ...]] = {}
    if any(spec.pip_requirements(p) for p in platforms):
        reporter.stage_started(Stage.PIP, ", ".join(platforms))
        results = await asyncio.gather(
            *(asyncio.to_thread(_pip_packages, spec, p, solved[p], options) for p in platforms)
        )
        pip = dict(zip(platforms, results, strict=True))
        reporter.stage_finished(Stage.PIP, packages=sum(len(v) for v in pip.values()))

    locks = {
        r.platform: PlatformLock(
            r.platform,
            conda=solved[r.platform],
            pip=pip.get(r.platform, ()),
            virtual_packages=tuple(str(v) for v in r.virtual_packages),
        )
        for r in requests
    }
    return EnvironmentLock(
        platforms=dict(sorted(locks.items())),
        name=spec.name,
        channels=tuple(spec.raw_channels),
        channel_env_vars=dict(spec.channel_env_vars),
        content_hash={p: content_hash(spec, p, options) for p in sorted(platforms)},
        requested={r.platform: tuple(spec.conda_specs(r.platform)) for r in requests},
        requested_pip={p: tuple(spec.pip_requirements(p)) for p in platforms if spec.pip_requirements(p)},
        sources=(Path(spec.source).name,) if spec.source else (),
        provenance=provenance_of(options),
    )
