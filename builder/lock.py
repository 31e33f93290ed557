"""The lock stage: a parsed spec -> a closed, verified :class:`EnvironmentLock` for every platform.

Sequence: per platform, build a :class:`SolveRequest` (selectors applied,
channels resolved, virtual packages chosen); solve all platforms concurrently;
resolve the pip section of each platform against its solved Python with uv;
check every lock is closed (on the solver's records); stamp each platform with the content hash of its inputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import rattler

from builder.channels import ChannelOptions, channel_url, qualify_spec
from builder.errors import PipResolutionError, SpecError
from builder.model import SUPPORTED_PLATFORMS, EnvironmentLock, LockedCondaPackage, LockedPipPackage, PlatformLock
from builder.progress import NullReporter, Reporter, Stage
from builder.solve import ChannelPriorityMode, SolveRequest, SolveStrategy, solve_platforms
from builder.spec import EnvironmentSpec
from builder.url_policy import UrlPolicy
from builder.virtual_packages import VirtualPackage, virtual_packages_for

DEFAULT_PLATFORMS: tuple[str, ...] = ("linux-64",)


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


def solve_request(spec: EnvironmentSpec, platform: str, options: LockOptions) -> SolveRequest:
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


def _pip_packages(
    spec: EnvironmentSpec, platform: str, conda: tuple[LockedCondaPackage, ...], options: LockOptions
) -> tuple[LockedPipPackage, ...]:
    from builder.pip_resolve import PipTarget, resolve_pip_requirements

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
) -> EnvironmentLock:
    """Solve, resolve pip, verify and assemble the lock of ``spec`` for every target platform."""
    reporter = reporter or NullReporter()
    platforms = target_platforms(spec, options)
    requests = [solve_request(spec, p, options) for p in platforms]
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
    )
