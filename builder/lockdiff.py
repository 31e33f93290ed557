"""Compare two locks: per platform, which packages were added, removed or changed.

>>> from builder.model import EnvironmentLock, LockedPipPackage, PlatformLock
>>> old = EnvironmentLock({"linux-64": PlatformLock("linux-64", pip=(LockedPipPackage("rich", "13.0", "u", None),))})
>>> new = EnvironmentLock({"linux-64": PlatformLock("linux-64", pip=(LockedPipPackage("rich", "14.1", "u", None),))})
>>> diff_locks(old, new).platforms["linux-64"].changed
(PackageChange(name='rich', manager='pip', old='13.0', new='14.1'),)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from builder.model import EnvironmentLock, PlatformLock


@dataclass(frozen=True, slots=True)
class PackageChange:
    name: str
    manager: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class PlatformDiff:
    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    changed: tuple[PackageChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True, slots=True)
class LockDiff:
    platforms: Mapping[str, PlatformDiff]

    @property
    def empty(self) -> bool:
        return all(d.empty for d in self.platforms.values())

    def to_json(self) -> dict[str, Any]:
        return {platform: asdict(diff) for platform, diff in self.platforms.items()}


def _versions(lock: PlatformLock | None) -> dict[tuple[str, str], str]:
    if lock is None:
        return {}
    found = {("conda", p.name): f"{p.version}={p.build}" for p in lock.conda}
    found.update({("pip", p.normalized_name): p.version for p in lock.pip})
    return found


def diff_platform(old: PlatformLock | None, new: PlatformLock | None) -> PlatformDiff:
    before, after = _versions(old), _versions(new)
    added, removed, changed = [], [], []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (k[1], k[0])):
        manager, name = key
        a, b = before.get(key), after.get(key)
        if a is None:
            added.append(PackageChange(name, manager, None, b))
        elif b is None:
            removed.append(PackageChange(name, manager, a, None))
        elif a != b:
            changed.append(PackageChange(name, manager, a, b))
    return PlatformDiff(tuple(added), tuple(removed), tuple(changed))


def diff_locks(old: EnvironmentLock, new: EnvironmentLock) -> LockDiff:
    """The differences between two locks, for every platform either has."""
    platforms = sorted(old.platforms.keys() | new.platforms.keys())
    return LockDiff({p: diff_platform(old.platforms.get(p), new.platforms.get(p)) for p in platforms})
