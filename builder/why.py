"""``envyard why``: the dependency path from a requested spec down to a locked package.

>>> from builder.model import EnvironmentLock, LockedCondaPackage, PlatformLock
>>> def pkg(name, *deps):
...     return LockedCondaPackage(name, "1", "0", 0, "linux-64", "c", f"c/{name}.conda", None, None, deps)
>>> lock = EnvironmentLock({"linux-64": PlatformLock("linux-64", conda=(
...     pkg("pandas", "numpy >=1.26", "python"), pkg("numpy", "libblas"), pkg("libblas"), pkg("python")))},
...     requested={"linux-64": ("pandas >=2",)})
>>> why(lock, "libblas", "linux-64")
['pandas', 'numpy', 'libblas']
"""

from __future__ import annotations

import re
from collections import deque

from builder.errors import EnvyardError
from builder.model import EnvironmentLock, normalize_pypi_name


class PackageNotInLockError(EnvyardError):
    code = "package-not-in-lock"
    title = "Package not in lock"
    status = 404


_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _dep_name(spec: str) -> str:
    match = _NAME.match(spec.split("::")[-1].strip())
    return match.group(0).lower() if match else spec.lower()


def why(lock: EnvironmentLock, package: str, platform: str | None = None) -> list[str]:
    """The shortest chain of package names from a root (a requested spec) to ``package``.

    Roots are the requested specs when the lock records them, otherwise the
    packages nothing else depends on. pip packages are reached through their
    ``requires_dist``; a requested pip package is a root too.
    """
    platform = platform or lock.platform_names[0]
    if platform not in lock.platforms:
        raise PackageNotInLockError(
            f"the lock has no platform {platform}", hint="choose one of: " + ", ".join(lock.platform_names)
        )
    plock = lock.platforms[platform]
    graph: dict[str, list[str]] = {p.name.lower(): [_dep_name(d) for d in p.depends] for p in plock.conda}
    for p in plock.pip:
        graph[p.normalized_name] = [normalize_pypi_name(_dep_name(d.split(";")[0])) for d in p.requires_dist]
    target = package.lower()
    if target not in graph and normalize_pypi_name(target) in graph:
        target = normalize_pypi_name(target)
    if target not in graph:
        raise PackageNotInLockError(f"{package} is not in the lock for {platform}", field=package)
    requested = [*lock.requested.get(platform, ()), *lock.requested_pip.get(platform, ())]
    roots = [_dep_name(s) for s in requested if _dep_name(s) in graph]
    if not roots:
        depended = {d for deps in graph.values() for d in deps}
        roots = sorted(n for n in graph if n not in depended)
    queue: deque[list[str]] = deque([r] for r in dict.fromkeys(roots))
    seen = set(roots)
    while queue:
        path = queue.popleft()
        if path[-1] == target:
            return path
        for dep in graph.get(path[-1], []):
            if dep in graph and dep not in seen:
                seen.add(dep)
                queue.append([*path, dep])
    return [target]
