"""Compare two locks: per platform, which packages were added, removed or changed.

A package is changed when its version or build differs, and also when only what the
lock says about it differs: its categories or optional flag, its dependencies (as
constraints per name, so order and spelling do not count; not compared where either
lock has no dependency data) or its hashes (only a hash kind both record). Those
differences are listed in :attr:`PackageChange.details`.

>>> from envyard.builder.model import EnvironmentLock, LockedPipPackage, PlatformLock
>>> old = EnvironmentLock({"linux-64": PlatformLock("linux-64", pip=(LockedPipPackage("rich", "13.0", "u", None),))})
>>> new = EnvironmentLock({"linux-64": PlatformLock("linux-64", pip=(LockedPipPackage("rich", "14.1", "u", None),))})
>>> diff_locks(old, new).platforms["linux-64"].changed
(PackageChange(name='rich', manager='pip', old='13.0', new='14.1', details=()),)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from envyard.builder.lockfiles._common import pip_dependencies, split_dep
from envyard.builder.model import EnvironmentLock, LockedPipPackage, PackageCategory, PlatformLock, normalize_pypi_name


@dataclass(frozen=True, slots=True)
class PackageChange:
    name: str
    manager: str
    old: str | None
    new: str | None
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlatformDiff:
    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    changed: tuple[PackageChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _change_json(change: PackageChange) -> dict[str, Any]:
    found = asdict(change)
    if not change.details:
        del found["details"]
    return found


@dataclass(frozen=True, slots=True)
class LockDiff:
    platforms: Mapping[str, PlatformDiff]

    @property
    def empty(self) -> bool:
        return all(d.empty for d in self.platforms.values())

    def to_json(self) -> dict[str, Any]:
        return {
            platform: {kind: [_change_json(c) for c in getattr(diff, kind)] for kind in ("added", "removed", "changed")}
            for platform, diff in self.platforms.items()
        }


@dataclass(frozen=True, slots=True)
class _Facts:
    version: str
    categories: str
    dependencies: dict[str, frozenset[str]] | None
    hashes: dict[str, str]


def _categories(categories: Iterable[PackageCategory]) -> str:
    return ", ".join(f"{c.name}{' (optional)' if c.optional else ''}" for c in categories)


def _conda_constraints(depends: Iterable[str]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for spec in depends:
        name, rest = split_dep(spec)
        found.setdefault(name, set()).update(c.strip() for c in rest.split(",") if c.strip() not in ("", "*"))
    return {k: frozenset(v) for k, v in found.items()}


def _pip_constraints(pkg: LockedPipPackage) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for name, spec in pip_dependencies(pkg).items():
        found.setdefault(normalize_pypi_name(name), set()).update(
            c.strip() for c in spec.split(",") if c.strip() not in ("", "*")
        )
    return {k: frozenset(v) for k, v in found.items()}


def _facts(lock: EnvironmentLock, plock: PlatformLock | None) -> dict[tuple[str, str], _Facts]:
    if plock is None:
        return {}
    deps = lock.has_dependencies
    found = {
        ("conda", p.name): _Facts(
            f"{p.version}={p.build}",
            _categories(p.categories),
            _conda_constraints(p.depends) if deps else None,
            {k: v for k, v in (("md5", p.md5), ("sha256", p.sha256)) if v},
        )
        for p in plock.conda
    }
    found.update(
        {
            ("pip", p.normalized_name): _Facts(
                p.version,
                _categories(p.categories),
                _pip_constraints(p) if deps else None,
                {"sha256": p.sha256} if p.sha256 else {},
            )
            for p in plock.pip
        }
    )
    return found


def _format_constraints(constraints: frozenset[str]) -> str:
    return ",".join(sorted(constraints)) or "*"


def _details(a: _Facts, b: _Facts) -> tuple[str, ...]:
    details = []
    if a.categories != b.categories:
        details.append(f"category {a.categories} -> {b.categories}")
    if a.version == b.version:  # a new version brings its own dependencies and hashes
        if a.dependencies is not None and b.dependencies is not None and a.dependencies != b.dependencies:
            for name in sorted(a.dependencies.keys() | b.dependencies.keys()):
                old, new = a.dependencies.get(name), b.dependencies.get(name)
                if old is None and new is not None:
                    details.append(f"dependency + {name} {_format_constraints(new)}")
                elif new is None and old is not None:
                    details.append(f"dependency - {name} {_format_constraints(old)}")
                elif old != new and old is not None and new is not None:
                    details.append(f"dependency ~ {name} {_format_constraints(old)} -> {_format_constraints(new)}")
        for kind in sorted(a.hashes.keys() & b.hashes.keys()):
            if a.hashes[kind] != b.hashes[kind]:
                details.append(f"{kind} {a.hashes[kind]} -> {b.hashes[kind]}")
    return tuple(details)


def diff_platform(
    old: PlatformLock | None,
    new: PlatformLock | None,
    old_lock: EnvironmentLock | None = None,
    new_lock: EnvironmentLock | None = None,
) -> PlatformDiff:
    before = _facts(old_lock or EnvironmentLock({}), old)
    after = _facts(new_lock or EnvironmentLock({}), new)
    added, removed, changed = [], [], []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (k[1], k[0])):
        manager, name = key
        a, b = before.get(key), after.get(key)
        if a is None and b is not None:
            added.append(PackageChange(name, manager, None, b.version))
        elif b is None and a is not None:
            removed.append(PackageChange(name, manager, a.version, None))
        elif a is not None and b is not None:
            details = _details(a, b)
            if a.version != b.version or details:
                changed.append(PackageChange(name, manager, a.version, b.version, details))
    return PlatformDiff(tuple(added), tuple(removed), tuple(changed))


def diff_locks(old: EnvironmentLock, new: EnvironmentLock) -> LockDiff:
    """The differences between two locks, for every platform either has."""
    platforms = sorted(old.platforms.keys() | new.platforms.keys())
    return LockDiff({p: diff_platform(old.platforms.get(p), new.platforms.get(p), old, new) for p in platforms})
