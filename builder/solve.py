"""The solve stage: conda specs + channels + virtual packages -> pinned conda packages, per platform.

Several platforms are solved concurrently on one shared :class:`rattler.Gateway`.
The solver's records are converted to :class:`LockedCondaPackage` here, once;
``indexed_timestamp`` and other cache-dependent fields are dropped so that a lock
depends only on the repodata's content.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import rattler
from rattler.exceptions import SolverError
from rattler.platform import Subdir

from builder.errors import ChannelError, MissingVirtualPackageError, SolveError, SpecError
from builder.model import LockedCondaPackage
from builder.records import check_records
from builder.url_policy import UrlPolicy
from builder.virtual_packages import VirtualPackage

SolveStrategy = Literal["highest", "lowest", "lowest-direct"]
ChannelPriorityMode = Literal["strict", "disabled"]

_MISSING_VIRTUAL = re.compile(
    r"(__[a-z0-9_]+)([^\n]*?), (?:for which no candidates were found|which cannot be installed)"
)


@dataclass(frozen=True, slots=True)
class SolveRequest:
    """Everything one platform's solve depends on."""

    platform: str
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    virtual_packages: tuple[VirtualPackage, ...]
    exclude_newer: datetime | None = None
    strategy: SolveStrategy = "highest"
    channel_priority: ChannelPriorityMode = "strict"


def _hex(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.hex() if isinstance(value, bytes) else str(value)


def _timestamp_ms(value: datetime | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def to_locked_package(record: rattler.RepoDataRecord) -> LockedCondaPackage:
    """Convert a solver record into envyard's lock model (no cache- or mtime-dependent fields)."""
    noarch = record.noarch
    return LockedCondaPackage(
        name=record.name.source,
        version=str(record.version),
        build=str(record.build),
        build_number=int(record.build_number),
        subdir=str(record.subdir),
        channel=str(record.channel).rstrip("/"),
        url=str(record.url),
        sha256=_hex(record.sha256),
        md5=_hex(record.md5),
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
        size=record.size,
        timestamp=_timestamp_ms(record.timestamp),
        noarch=None if not noarch or noarch.none else ("python" if noarch.python else "generic"),
        license=record.license,
        track_features=tuple(record.track_features),
    )


def _spec_name(spec: str) -> str:
    try:
        name = rattler.MatchSpec(spec, strict=False).name
    except Exception:
        return spec.split()[0] if spec.split() else spec
    return name.normalized if name is not None else spec


def explain_failure(message: str, request: SolveRequest, *, cuda_hint: bool = True) -> SolveError:
    """Turn the solver's explanation into one typed error naming the user's specs involved."""
    body = message.removeprefix("Cannot solve the request because of: ").strip()
    declared = {v.name: v for v in request.virtual_packages}
    missing = sorted(dict(_MISSING_VIRTUAL.findall(body)).items())
    user_names = {_spec_name(s): s for s in request.specs}
    mentioned = [
        spec
        for name, spec in user_names.items()
        if re.search(rf"(?<![\w.\-]){re.escape(name)}(?![\w.\-])", body, re.IGNORECASE)
    ]
    involved = {"platform": request.platform, "specs": mentioned, "explanation": body}
    if missing:
        name, needed = missing[0]
        have = f" ({name} {declared[name].version} is declared)" if name in declared else " (not declared)"
        hints = {
            "__cuda": "ask for CUDA with --cuda VERSION (e.g. --cuda 12.4) or set CONDA_OVERRIDE_CUDA under "
            "the spec's 'variables'",
            "__glibc": "raise the glibc version with --virtual-package __glibc=2.34 or CONDA_OVERRIDE_GLIBC",
            "__osx": "raise the macOS version with --virtual-package __osx=13.0 or CONDA_OVERRIDE_OSX",
        }
        return MissingVirtualPackageError(
            f"{request.platform}: the solution needs the virtual package {name}{needed.rstrip()}{have}; "
            f"needed by {', '.join(mentioned) or 'a dependency'}",
            hint=hints.get(name, f"declare it with --virtual-package {name}=VERSION"),
            details={**involved, "virtual_package": name},
        )
    specs = ", ".join(f"'{s}'" for s in mentioned) or "the requested specs"
    return SolveError(
        f"{request.platform}: no solution for {specs}: {body}",
        hint="relax or remove one of the pins named above, or add the channel that provides the package",
        details=involved,
    )


async def solve_platform(request: SolveRequest, gateway: rattler.Gateway) -> tuple[LockedCondaPackage, ...]:
    """Solve one platform; the result is sorted by package name."""
    try:
        specs = [rattler.MatchSpec(s, strict=False) for s in request.specs]
    except Exception as exc:
        raise SpecError(f"invalid spec: {exc}", field="dependencies") from exc
    try:
        records = await rattler.solve(
            list(request.channels),
            specs,
            gateway=gateway,
            platforms=[Subdir(request.platform), Subdir("noarch")],
            virtual_packages=[v.to_rattler() for v in request.virtual_packages],
            exclude_newer=request.exclude_newer,
            strategy=request.strategy,
            channel_priority=(
                rattler.ChannelPriority.Strict
                if request.channel_priority == "strict"
                else rattler.ChannelPriority.Disabled
            ),
            timestamp_policy="allow-missing",
        )
    except SolverError as exc:
        raise explain_failure(str(exc), request) from None
    except Exception as exc:  # gateway / network / repodata errors
        text = str(exc)
        if "solve" in type(exc).__name__.lower():
            raise explain_failure(text, request) from None
        raise _repodata_error(text or type(exc).__name__, request) from None
    verify_solution(records, request)
    return tuple(sorted((to_locked_package(r) for r in records), key=lambda p: p.name))


_URL_IN_ERROR = re.compile(r"\b(?:https?|s3|file|oci)://[^\s()'`\"]+")


def _repodata_error(text: str, request: SolveRequest) -> ChannelError:
    """The gateway's failure naming the URL it could not load (else the channels) and the deepest cause."""
    text = re.sub(r"://[^/@\s]+@", "://***@", text)
    lines = [line.removeprefix("Caused by: ").strip() for line in text.splitlines() if line.strip()]
    url = next(iter(_URL_IN_ERROR.findall(text)), None)
    where = url.rstrip(".,:;") if url else "the channels " + ", ".join(request.channels)
    cause = f" ({lines[-1]})" if len(lines) > 1 else ""
    return ChannelError(
        f"{request.platform}: cannot load repodata from {where}: {lines[0] if lines else text}{cause}",
        hint="check the channel names and URLs, --channel-alias and mirrors, and that this machine reaches "
             "that host",
        details={"channels": list(request.channels), "url": url, "error": text},
    )


def verify_solution(records: Sequence[rattler.RepoDataRecord], request: SolveRequest) -> None:
    """Check, on the solver's own records, that the solution is closed and meets every requested spec."""
    check_records(
        records,
        request.specs,
        platform=request.platform,
        what="the solver's result",
        hint="this is a solver or repodata defect; report it with the spec and the channel",
    )


def check_channel_hosts(requests: Sequence[SolveRequest], policy: UrlPolicy) -> None:
    """ForbiddenUrlError for the first channel (or ``channel::`` / URL spec) ``policy`` refuses, hosts freshly
    resolved: rattler's gateway fetches internally, so this runs right before it is handed the channels."""
    checked = policy.cached()
    for request in requests:
        for channel in request.channels:
            checked.check(channel, what="channel", field="channels")
        for spec in request.specs:
            head = spec.split()[0] if spec.split() else spec
            source = spec.rsplit("::", 1)[0] if "::" in spec else head if "://" in head else None
            if source is not None and "://" in source:  # qualify_spec leaves pkgs/ and defaults names to rattler
                checked.check(source, what="channel", field="dependencies")


async def solve_platforms(
    requests: Sequence[SolveRequest], gateway: rattler.Gateway, url_policy: UrlPolicy | None = None
) -> dict[str, tuple[LockedCondaPackage, ...]]:
    """Solve several platforms concurrently; the first failure (in platform order) is raised.

    ``url_policy`` (service builds): every channel is checked against it first (:func:`check_channel_hosts`).
    """
    if url_policy is not None:
        check_channel_hosts(requests, url_policy)
    results = await asyncio.gather(*(solve_platform(r, gateway) for r in requests), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return {r.platform: res for r, res in zip(requests, results, strict=True)}  # type: ignore[misc]
