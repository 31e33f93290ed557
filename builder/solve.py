"""The solve stage: conda specs + channels + virtual packages -> pinned conda packages, per platform.

Several platforms are solved concurrently on one shared :class:`rattler.Gateway`.
The solver's records are converted to :class:`LockedCondaPackage` here, once;
``indexed_timestamp`` and other cache-dependent fields are dropped so that a lock
depends only on the repodata's content.

Before solving, every requested spec is looked up in the loaded repodata: all specs
without a candidate are reported in one :class:`MissingPackagesError` (with the nearest
available versions), instead of the solver's one at a time. A relock passes the
previously locked packages still in the channels as rattler's ``locked_packages``, so
they are kept wherever they still fit. Every failing platform is reported, not the first.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import rattler
from rattler.exceptions import SolverError
from rattler.platform import Subdir

from envyard.builder.errors import (
    ChannelError,
    EnvyardError,
    LockfileError,
    MissingPackagesError,
    MissingVirtualPackageError,
    SolveError,
    SpecError,
)
from envyard.builder.model import LockedCondaPackage
from envyard.builder.records import check_records
from envyard.builder.url_policy import UrlPolicy
from envyard.builder.virtual_packages import VirtualPackage

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
    #: packages of a previous lock to keep where they still fit (rattler's ``locked_packages``)
    locked: tuple[LockedCondaPackage, ...] = ()
    #: ``locked`` was solved from these very inputs: if every one is still in the channels and they are
    #: still consistent, they are the solution (a relock of an unchanged spec does not solve again)
    locked_is_solution: bool = False


_SECONDS_LIMIT = 253402300799  # 9999-12-31 in seconds: larger timestamps are milliseconds (as rattler reads them)


def to_locked_package(record: rattler.RepoDataRecord) -> LockedCondaPackage:
    """Convert a solver record into envyard's lock model (no cache- or mtime-dependent fields).

    Read from the record's JSON (one call into rattler instead of one per field; a third of the time
    for a lock of 900 packages); timestamps in seconds are normalized to milliseconds, as rattler does.
    """
    data = json.loads(record.to_json())
    timestamp = data.get("timestamp")
    if isinstance(timestamp, int) and timestamp <= _SECONDS_LIMIT:
        timestamp *= 1000
    noarch = data.get("noarch")
    features = data.get("track_features") or ()
    if isinstance(features, str):
        features = features.replace(",", " ").split()
    return LockedCondaPackage(
        name=data["name"],
        version=data["version"],
        build=data["build"],
        build_number=int(data.get("build_number", 0)),
        subdir=data["subdir"],
        channel=str(data.get("channel") or "").rstrip("/"),
        url=data["url"],
        sha256=data.get("sha256"),
        md5=data.get("md5"),
        depends=tuple(data.get("depends", ())),
        constrains=tuple(data.get("constrains", ())),
        size=data.get("size"),
        timestamp=timestamp if isinstance(timestamp, int) else None,
        noarch="generic" if noarch is True else noarch if noarch in ("python", "generic") else None,
        license=data.get("license"),
        track_features=tuple(features),
    )


def spec_name(spec: str) -> str:
    """The normalized package name of a conda spec (``conda-forge::NumPy >=2`` -> ``numpy``)."""
    try:
        name = rattler.MatchSpec(spec, strict=False).name
    except Exception:
        return spec.split()[0] if spec.split() else spec
    return name.normalized if name is not None else spec


def _is_pin(spec: str) -> bool:
    """Whether a requested spec constrains the version or build (``numpy >=2``), not only the name."""
    try:
        match = rattler.MatchSpec(spec, strict=False)
    except Exception:
        return True
    return match.version is not None or match.build is not None or match.build_number is not None


def explain_failure(message: str, request: SolveRequest, *, cuda_hint: bool = True) -> SolveError:
    """Turn the solver's explanation into one typed error naming the user's specs involved.

    The solver's tree is kept as it is, as the error's multi-line ``explanation``.
    """
    body = message.removeprefix("Cannot solve the request because of: ").strip()
    declared = {v.name: v for v in request.virtual_packages}
    missing = sorted(dict(_MISSING_VIRTUAL.findall(body)).items())
    user_names = {spec_name(s): s for s in request.specs}
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
    pins = [s for s in mentioned if _is_pin(s)]
    if pins:
        hint = (f"relax or remove one of the pins ({', '.join(pins)}); the solver's explanation is below")
    else:
        hint = ("these packages cannot be installed together from these channels (see the solver's explanation "
                "below): drop one, or add a channel with builds that fit together")
    if "\n" not in body:
        return SolveError(f"{request.platform}: no solution for {specs}: {body}", hint=hint, details=involved)
    return SolveError(f"{request.platform}: no solution for {specs}", hint=hint, details=involved, explanation=body)


def _records(result: Sequence[Sequence[rattler.RepoDataRecord]]) -> list[rattler.RepoDataRecord]:
    return [record for records in result for record in records]


def _subdirs(request: SolveRequest) -> list[Subdir]:
    return [Subdir(request.platform), Subdir("noarch")]


def _nearest_versions(wanted: rattler.MatchSpec, available: Sequence[rattler.Version], count: int = 4) -> list[str]:
    """Up to ``count`` available versions closest to the version the spec names (else the highest ones)."""
    ordered = sorted(set(available))
    if not ordered:
        return []
    numbers = re.findall(r"\d+(?:\.\d+)*", str(wanted.version or ""))
    if not numbers:
        return [str(v) for v in reversed(ordered[-count:])]
    target = rattler.Version(numbers[0])
    below = [v for v in ordered if v < target]
    above = [v for v in ordered if v >= target]
    half = count // 2
    picked = below[-max(half, count - len(above)):] + above[: max(half, count - len(below))]
    return [str(v) for v in picked[:count]]


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The queries before solving: candidates of the requested specs, records of the previously locked packages."""

    checked: list[tuple[str, rattler.MatchSpec]]
    sources: list[str]
    requested: list[rattler.RepoDataRecord]
    locked: list[rattler.RepoDataRecord]


async def _query(
    gateway: rattler.Gateway, sources: list[str], request: SolveRequest, specs: list[rattler.MatchSpec]
) -> list[rattler.RepoDataRecord]:
    if not specs:
        return []
    return _records(await gateway.query(sources, _subdirs(request), specs, recursive=False))


async def _look_up(request: SolveRequest, specs: Sequence[rattler.MatchSpec], gateway: rattler.Gateway) -> _Lookup:
    """Query (concurrently, non-recursively) the requested specs and the locked packages by exact version and
    build, against the repodata the solve loads anyway."""
    checked = [(text, spec) for text, spec in zip(request.specs, specs, strict=True)
               if spec.name is not None and not spec.name.normalized.startswith("__")]
    sources = list(request.channels)
    for _, spec in checked:
        if spec.channel is not None and (url := str(spec.channel.base_url).rstrip("/")) not in sources:
            sources.append(url)
    locked = [rattler.MatchSpec(f"{p.name} =={p.version} {p.build}", strict=False)
              for p in request.locked if not p.name.startswith("__")]
    requested_records, locked_records = await asyncio.gather(
        _query(gateway, sources, request, [s for _, s in checked]),
        _query(gateway, list(request.channels), request, locked),
    )
    return _Lookup(checked, sources, requested_records, locked_records)


async def find_missing_specs(
    request: SolveRequest, lookup: _Lookup, gateway: rattler.Gateway
) -> MissingPackagesError | None:
    """Every requested spec with no candidate in the request's channels, as one error (None if all have one).

    Uses the records of :func:`_look_up`; a second query (only on failure) finds the available versions
    of the names that are missing.
    """
    found: dict[str, list[rattler.RepoDataRecord]] = {}
    for record in lookup.requested:
        found.setdefault(record.name.normalized, []).append(record)
    missing = [(text, spec) for text, spec in lookup.checked
               if not any(spec.matches(r) for r in found.get(spec.name.normalized, ()))]
    if not missing:
        return None
    sources = lookup.sources
    names = list(dict.fromkeys(spec.name.normalized for _, spec in missing))
    versions: dict[str, list[rattler.Version]] = {}
    bare = [rattler.MatchSpec(n) for n in names]
    for record in _records(await gateway.query(sources, _subdirs(request), bare, recursive=False)):
        versions.setdefault(record.name.normalized, []).append(record.version)
    all_names: list[str] | None = None
    entries, reasons = [], []
    for text, spec in missing:
        name = spec.name.normalized
        entry: dict[str, object] = {"spec": text}
        if name in versions:
            entry["available"] = nearest = _nearest_versions(spec, versions[name])
            reasons.append(f"no matching version; nearest available: {', '.join(nearest)}")
        else:
            if all_names is None:
                all_names = [n.normalized for n in await gateway.names(sources, _subdirs(request))]
            entry["did_you_mean"] = similar = difflib.get_close_matches(name, all_names, n=3, cutoff=0.75)
            reasons.append("no package of that name" + (f" (did you mean {', '.join(similar)}?)" if similar else ""))
        entries.append(entry)
    wanted = ", ".join(f"'{text}'" for text, _ in missing)
    pins = [text for text, spec in missing if _is_pin(text) and spec.name.normalized in versions]
    hint = ("relax the pins with no matching version, " if pins else "") + (
        "check the names, or add the channel that provides them")
    message = (f"{request.platform}: no solution for {wanted}: no candidates in {', '.join(sources)} "
               f"({request.platform}, noarch)")
    single = len(missing) == 1
    return MissingPackagesError(
        message + (f"; {reasons[0]}" if single else ""),
        hint=hint,
        details={"platform": request.platform, "specs": [text for text, _ in missing], "channels": sources,
                 "missing": entries},
        explanation=None if single else "\n".join(f"'{text}': {reason}"
                                                  for (text, _), reason in zip(missing, reasons, strict=True)),
    )


def _locked_records(request: SolveRequest, lookup: _Lookup) -> list[rattler.RepoDataRecord]:
    """The repodata records of the request's previously locked packages that are still in its channels.

    Looked up (by :func:`_look_up`) by exact name, version and build and matched by subdir and file name, so
    a lock made through another channel alias or mirror still counts; the records are the channel's own
    (with the ``constrains`` and timestamps that lockfiles do not keep). Packages newer than
    ``exclude_newer`` are left out.
    """
    wanted = {(p.subdir, p.file_name) for p in request.locked}
    limit = request.exclude_newer
    kept = []
    for record in lookup.locked:
        key = tuple(record.url.split("#", 1)[0].rsplit("/", 2)[-2:])
        if key not in wanted:
            continue
        wanted.discard(key)
        if limit is not None and record.timestamp is not None and record.timestamp > limit:
            continue
        kept.append(record)
    return kept


async def solve_platform(request: SolveRequest, gateway: rattler.Gateway) -> tuple[LockedCondaPackage, ...]:
    """Solve one platform; the result is sorted by package name."""
    try:
        specs = [rattler.MatchSpec(s, strict=False) for s in request.specs]
    except Exception as exc:
        raise SpecError(f"invalid spec: {exc}", field="dependencies") from exc
    try:
        lookup = await _look_up(request, specs, gateway)
        missing = await find_missing_specs(request, lookup, gateway)
        if missing is not None:
            raise missing
        locked = _locked_records(request, lookup) if request.locked else None
        if locked and request.locked_is_solution and _still_valid(locked, request):
            return tuple(sorted((to_locked_package(r) for r in locked), key=lambda p: p.name))
        records = await rattler.solve(
            list(request.channels),
            specs,
            gateway=gateway,
            platforms=_subdirs(request),
            locked_packages=locked,
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
    except EnvyardError:
        raise
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


def _still_valid(records: Sequence[rattler.RepoDataRecord], request: SolveRequest) -> bool:
    """Whether the previous solution is whole in the channels and still closed under their current records."""
    if len(records) != sum(1 for p in request.locked if not p.name.startswith("__")):
        return False
    try:
        verify_solution(records, request)
    except LockfileError:
        return False  # a patched or removed record: solve again
    return True


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


def combine_failures(failures: Sequence[tuple[str, EnvyardError]], total: int) -> EnvyardError:
    """One error for several failing platforms: each platform's error and explanation, in platform order."""
    if len(failures) == 1:
        return failures[0][1]
    errors = [err for _, err in failures]
    kinds = {type(err) for err in errors}
    cls: type[EnvyardError] = errors[0].__class__ if len(kinds) == 1 else (
        SolveError if all(isinstance(e, SolveError) for e in errors) else errors[0].__class__)
    hints = {err.hint for err in errors}
    lines = []
    for err in errors:
        lines.append(err.one_line() if len(hints) > 1 else " ".join(err.message.split()))
        lines.extend(err.explanation_lines())
    platforms = [p for p, _ in failures]
    return cls(
        f"{len(failures)} of {total} platforms cannot be solved: {', '.join(platforms)}",
        hint=hints.pop() if len(hints) == 1 else None,
        details={"platforms": {p: err.to_problem() for p, err in failures}},
        explanation="\n".join(lines),
    )


async def solve_platforms(
    requests: Sequence[SolveRequest], gateway: rattler.Gateway, url_policy: UrlPolicy | None = None
) -> dict[str, tuple[LockedCondaPackage, ...]]:
    """Solve several platforms concurrently; every failing platform is reported (one error for all).

    ``url_policy`` (service builds): every channel is checked against it first (:func:`check_channel_hosts`).
    """
    if url_policy is not None:
        check_channel_hosts(requests, url_policy)
    results = await asyncio.gather(*(solve_platform(r, gateway) for r in requests), return_exceptions=True)
    failures: list[tuple[str, EnvyardError]] = []
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, EnvyardError):
            failures.append((request.platform, result))
        elif isinstance(result, BaseException):
            raise result
    if failures:
        raise combine_failures(failures, len(requests))
    return {r.platform: res for r, res in zip(requests, results, strict=True)}  # type: ignore[misc]
