"""Admin policies on environment specs: what channels, packages, versions, platforms, sizes and times a build may use.

Policies are set at three levels, global -> namespace -> environment. :func:`merge` combines them so that a nearer
level only narrows what the farther one allows: allowed channels and platforms intersect, deny lists, required
packages and version floors add up (the higher floor wins), size and time limits take the smaller value, and a
channel alias set farther out (an internal mirror an admin forces) cannot be replaced nearer in.

:func:`evaluate` checks a parsed spec before it is built and returns every :class:`Violation` (field, message, how
to fix it); :func:`check_lock` checks a solved lock, so that a denied package pulled in by a dependency, or a
version under a floor, fails the build with the dependency path (:mod:`builder.why`).

>>> outer = Policy(deny=[Denied(name="telnetlib3", reason="insecure")], allowed_platforms=["linux-64", "osx-arm64"])
>>> inner = Policy(allowed_platforms=["linux-64"], required=["ipykernel"], floors={"openssl": "3.0.0"})
>>> merged = merge([outer, inner])
>>> merged.allowed_platforms, [d.name for d in merged.deny], merged.required
(['linux-64'], ['telnetlib3'], ['ipykernel'])
>>> from envyard.builder.spec import parse_environment_yaml
>>> spec = parse_environment_yaml("channels: [conda-forge]\\ndependencies: [telnetlib3, openssl 1.1.1]\\n")
>>> [v.field for v in evaluate(spec, ["linux-64", "win-64"], merged)]
['platforms', 'dependencies', 'dependencies']
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import rattler
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envyard.builder.errors import EnvyardError, SpecError
from envyard.builder.model import EnvironmentLock, normalize_pypi_name
from envyard.builder.spec import CondaDependency, EnvironmentSpec, normalize_matchspec

__all__ = [
    "Denied",
    "Policy",
    "PolicyViolationError",
    "Violation",
    "check_installed_size",
    "check_lock",
    "evaluate",
    "merge",
    "parse_policy",
    "with_required",
]

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class Denied(BaseModel):
    """A package no build may contain (directly or through a dependency), and why."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="denied by policy", max_length=1000)

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class Policy(BaseModel):
    """One level's policy; a field left unset (None, empty) imposes nothing."""

    model_config = ConfigDict(extra="forbid")

    allowed_channels: list[str] | None = Field(
        default=None, description="Channel names or URLs (fnmatch globs) a spec may use; None: any.")
    channel_alias: str | None = Field(
        default=None, description="The base URL channel names resolve against (an internal mirror), forced.")
    deny: list[Denied] = Field(default_factory=list, description="Packages refused, with the reason.")
    required: list[str] = Field(default_factory=list,
                                description="Conda MatchSpecs added to every spec that has channels.")
    floors: dict[str, str] = Field(default_factory=dict, description="Package -> lowest version allowed.")
    allowed_platforms: list[str] | None = Field(default=None, description="Platforms a build may target.")
    max_installed_bytes: int | None = Field(default=None, ge=1, description="Largest installed environment.")
    build_time_limit_seconds: int | None = Field(default=None, ge=1, description="Longest a build may run.")

    @field_validator("required")
    @classmethod
    def _matchspecs(cls, value: list[str]) -> list[str]:
        out = []
        for text in value:
            spec = normalize_matchspec(text)
            try:
                rattler.MatchSpec(spec, strict=False)
            except Exception as exc:
                raise ValueError(f"required package {text!r} is not a conda MatchSpec: {exc}") from None
            out.append(spec)
        return out

    @field_validator("floors")
    @classmethod
    def _versions(cls, value: dict[str, str]) -> dict[str, str]:
        for name, version in value.items():
            try:
                rattler.Version(str(version))
            except Exception as exc:
                raise ValueError(f"floor of {name!r}: {version!r} is not a version: {exc}") from None
        return {name.strip().lower(): str(version) for name, version in value.items()}

    def denied(self) -> dict[str, str]:
        """Denied name -> reason (conda names as written; pip names compared by their PEP 503 form)."""
        return {d.name: d.reason for d in self.deny}


class Violation(BaseModel):
    """One way a spec or lock breaks a policy: where, what, and how to fix it."""

    field: str
    message: str
    fix: str
    package: str | None = None
    path: list[str] | None = None


class PolicyViolationError(SpecError):
    """A spec (at submission) or a solved lock (in the worker) that breaks the policies it is built under."""

    code = "policy-violation"
    title = "The spec breaks a policy"

    def __init__(self, violations: Sequence[Violation], *, file: str | None = None) -> None:
        first = violations[0]
        more = f" (and {len(violations) - 1} more violation(s))" if len(violations) > 1 else ""
        super().__init__(f"{first.message}{more}", file=file, field=first.field, hint=first.fix,
                         details={"violations": [v.model_dump(exclude_none=True) for v in violations]},
                         explanation="\n".join(f"{v.field}: {v.message} (fix: {v.fix})" for v in violations))
        self.violations = list(violations)

    def __reduce__(self) -> tuple[Any, ...]:  # spec checks run in other processes: the error crosses back pickled
        return (type(self), (self.violations,), self.__dict__)


def parse_policy(text: str, source: str = "policy.yaml") -> Policy:
    """A :class:`Policy` from YAML or JSON text; a SpecError naming the file and the field otherwise."""
    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=source,
                        line=mark.line + 1 if mark is not None else None,
                        hint="a policy is a YAML mapping, e.g. 'deny: [{name: foo, reason: ...}]'") from None
    return policy_from_data(loaded if loaded is not None else {}, source)


def policy_from_data(data: Any, source: str = "policy") -> Policy:
    if not isinstance(data, dict):
        raise SpecError("a policy must be a mapping", file=source, hint="keys: " + ", ".join(Policy.model_fields))
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        hint = "known keys: " + ", ".join(Policy.model_fields) if error["type"] == "extra_forbidden" else None
        raise SpecError(f"{error['msg']}", file=source, field=where, hint=hint) from None


def _narrow(outer: list[str] | None, inner: list[str] | None) -> list[str] | None:
    if outer is None:
        return None if inner is None else list(inner)
    if inner is None:
        return list(outer)
    return [item for item in inner if any(fnmatch.fnmatchcase(item, pattern) for pattern in outer)]


def _smaller(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def merge(levels: Iterable[Policy | None]) -> Policy:
    """The effective policy of ``levels`` ordered farthest (global) first: a nearer level only narrows."""
    merged = Policy()
    for level in levels:
        if level is None:
            continue
        deny = merged.denied()
        for item in level.deny:
            deny.setdefault(item.name, item.reason)
        floors = dict(merged.floors)
        for name, version in level.floors.items():
            if name not in floors or rattler.Version(version) > rattler.Version(floors[name]):
                floors[name] = version
        merged = Policy(
            allowed_channels=_narrow(merged.allowed_channels, level.allowed_channels),
            channel_alias=merged.channel_alias or level.channel_alias,
            deny=[Denied(name=n, reason=r) for n, r in deny.items()],
            required=list(dict.fromkeys([*merged.required, *level.required])),
            floors=floors,
            allowed_platforms=_narrow(merged.allowed_platforms, level.allowed_platforms),
            max_installed_bytes=_smaller(merged.max_installed_bytes, level.max_installed_bytes),
            build_time_limit_seconds=_smaller(merged.build_time_limit_seconds, level.build_time_limit_seconds),
        )
    return merged


def _name(spec: str) -> str:
    match = _NAME.match(spec.split("::")[-1].strip())
    return match.group(0).lower() if match else spec.lower()


def _channel_allowed(channel: str, allowed: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(channel, pattern) or fnmatch.fnmatchcase(channel.rstrip("/"), pattern.rstrip("/"))
               for pattern in allowed)


def _below_floor(spec: str, floor: str) -> bool:
    """The MatchSpec admits only versions under ``floor``: an exact pin under it, or an upper bound at or under it."""
    try:
        match = rattler.MatchSpec(spec, strict=False)
    except Exception:
        return False
    version = str(match.version) if match.version is not None else ""
    if not version or version == "*":
        return False
    low = rattler.Version(floor)
    for part in version.split("|"):
        allows_floor_or_more = True
        for constraint in part.split(","):
            constraint = constraint.strip()
            op = re.match(r"(==|<=|<|=|!=|>=|>|~=)?(.*)", constraint)
            assert op is not None
            operator, number = op.group(1) or "==", op.group(2).rstrip(".*").rstrip("*")
            if not number:
                continue
            try:
                bound = rattler.Version(number)
            except Exception:
                continue
            prefix = constraint.endswith("*") or operator == "="  # 1.1.* and =1.1: versions starting 1.1
            if prefix and operator in ("==", "="):
                if bound < low and not str(low).startswith(number):
                    allows_floor_or_more = False
            elif (operator == "==" and bound < low) or (operator == "<" and bound <= low) or (
                    operator == "<=" and bound < low):
                allows_floor_or_more = False
        if allows_floor_or_more:
            return False
    return True


def evaluate(spec: EnvironmentSpec, platforms: Sequence[str], policy: Policy) -> list[Violation]:
    """Every violation of ``policy`` by ``spec`` built for ``platforms`` (empty: the spec may be built)."""
    found: list[Violation] = []
    if policy.allowed_platforms is not None:
        for platform in platforms:
            if platform not in policy.allowed_platforms:
                found.append(Violation(field="platforms", message=f"platform {platform} is not allowed",
                                       fix="build for " + (", ".join(policy.allowed_platforms) or "no platform")))
    if policy.allowed_channels is not None:
        for channel in spec.raw_channels or spec.channels:
            if not _channel_allowed(channel, policy.allowed_channels):
                found.append(Violation(field="channels", message=f"channel {channel} is not allowed",
                                       fix="use only: " + ", ".join(policy.allowed_channels)))
    denied = policy.denied()
    pip_denied = {normalize_pypi_name(n): r for n, r in denied.items()}
    for dependency in spec.dependencies:
        name = _name(dependency.spec)
        where = f" (line {dependency.line})" if dependency.line else ""
        if name in denied:
            found.append(Violation(field="dependencies", package=name,
                                   message=f"{name} is denied{where}: {denied[name]}",
                                   fix=f"remove {name} from the spec"))
        floor = policy.floors.get(name)
        if floor is not None and _below_floor(dependency.spec, floor):
            found.append(Violation(field="dependencies", package=name,
                                   message=f"{dependency.spec}{where} is below the version floor {name} >={floor}",
                                   fix=f"ask for {name} >={floor}"))
    if spec.pip is not None:
        for requirement in spec.pip.requirements:
            name = normalize_pypi_name(_name(requirement.text))
            if name in pip_denied:
                found.append(Violation(field="pip", package=name,
                                       message=f"{name} is denied: {pip_denied[name]}",
                                       fix=f"remove {name} from the pip section"))
    return found


def with_required(spec: EnvironmentSpec, policy: Policy) -> EnvironmentSpec:
    """``spec`` with the policy's required packages added (a spec without channels, pip only, is left alone)."""
    if not policy.required or not spec.channels:
        return spec
    present = {_name(d.spec) for d in spec.dependencies}
    added = tuple(CondaDependency(r, None, None) for r in policy.required if _name(r) not in present)
    return replace(spec, dependencies=spec.dependencies + added) if added else spec


def check_lock(lock: EnvironmentLock, policy: Policy) -> list[Violation]:
    """Denied packages and versions under a floor in a solved lock, each with the dependency path to it."""
    from envyard.builder.why import why

    denied = policy.denied()
    pip_denied = {normalize_pypi_name(n): r for n, r in denied.items()}
    found: list[Violation] = []

    def path(name: str, platform: str) -> list[str]:
        try:
            return why(lock, name, platform)
        except EnvyardError:
            return [name]

    for platform in lock.platform_names:
        plock = lock.platforms[platform]
        for package in plock.conda:
            name = package.name.lower()
            if name in denied:
                chain = path(name, platform)
                found.append(Violation(
                    field="dependencies", package=name, path=chain,
                    message=f"{platform}: {name} is denied ({denied[name]}), pulled in by " + " -> ".join(chain),
                    fix=f"remove or replace {chain[0]}" if len(chain) > 1 else f"remove {name} from the spec"))
            floor = policy.floors.get(name)
            if floor is not None and rattler.Version(package.version) < rattler.Version(floor):
                chain = path(name, platform)
                found.append(Violation(
                    field="dependencies", package=name, path=chain,
                    message=f"{platform}: {name} {package.version} is below the version floor {floor}, pulled in by "
                    + " -> ".join(chain), fix=f"add '{name} >={floor}' to the spec"))
        for pip_package in plock.pip:
            name = pip_package.normalized_name
            if name in pip_denied:
                chain = path(name, platform)
                found.append(Violation(
                    field="pip", package=name, path=chain,
                    message=f"{platform}: {name} is denied ({pip_denied[name]}), pulled in by " + " -> ".join(chain),
                    fix=f"remove or replace {chain[0]}"))
    return found


def check_installed_size(platform: str, size: int, policy: Policy) -> list[Violation]:
    """A violation when an installed environment of ``size`` bytes exceeds the policy's maximum."""
    from envyard.builder.progress import format_size

    limit = policy.max_installed_bytes
    if limit is None or size <= limit:
        return []
    return [Violation(field="max_installed_bytes",
                      message=f"{platform}: the installed environment is {format_size(size)}, over the maximum of "
                      f"{format_size(limit)}", fix="remove large packages, or ask an admin to raise the maximum")]
