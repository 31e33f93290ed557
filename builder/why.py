"""``envyard why``: the dependency paths from a requested spec down to a locked package.

>>> from envyard.builder.model import EnvironmentLock, LockedCondaPackage, PlatformLock
>>> def pkg(name, *deps):
...     return LockedCondaPackage(name, "1", "0", 0, "linux-64", "c", f"c/{name}.conda", None, None, deps)
>>> lock = EnvironmentLock({"linux-64": PlatformLock("linux-64", conda=(
...     pkg("pandas", "numpy >=1.26", "python"), pkg("numpy", "libblas", "python"), pkg("libblas"), pkg("python")))},
...     requested={"linux-64": ("pandas >=2",)})
>>> why(lock, "libblas", "linux-64")
['pandas', 'numpy', 'libblas']
>>> why_all(lock, "python", "linux-64").paths
(('pandas', 'python'), ('pandas', 'numpy', 'python'))
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from envyard.builder.errors import EnvyardError
from envyard.builder.model import EnvironmentLock, PlatformLock, normalize_pypi_name

__all__ = [
    "DEFAULT_MAX_PATHS",
    "NoDependencyDataError",
    "NoDependencyPathError",
    "PackageNotInLockError",
    "WhyPaths",
    "why",
    "why_all",
]

DEFAULT_MAX_PATHS = 50
_MAX_EXPANSIONS = 200_000  # partial paths looked at before giving up on finding more


class PackageNotInLockError(EnvyardError):
    code = "package-not-in-lock"
    title = "Package not in lock"
    status = 404


class NoDependencyDataError(EnvyardError):
    """The lock records no dependencies (an ``@EXPLICIT`` file), so nothing can be traced."""

    code = "no-dependency-data"
    title = "Lock has no dependency information"
    status = 422


class NoDependencyPathError(EnvyardError):
    """The package is locked, but no recorded dependency leads to it from a root."""

    code = "no-dependency-path"
    title = "No dependency path"
    status = 404


_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _dep_name(spec: str) -> str:
    match = _NAME.match(spec.split("::")[-1].strip())
    return match.group(0).lower() if match else spec.lower()


def _pip_requirements(requires_dist: Iterable[str]) -> list[str]:
    """Names a pip package needs (requirements that apply only with an extra are left out)."""
    names = []
    for text in requires_dist:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            names.append(normalize_pypi_name(_dep_name(text)))
            continue
        if req.marker is None or "extra" not in str(req.marker):
            names.append(normalize_pypi_name(req.name))
    return names


def _graph(plock: PlatformLock) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Node -> the nodes it depends on, and node -> its label. pip nodes are ``pip:<name>``.

    A pip requirement is met by the pip package of that name, else by the conda package
    whose PEP 503 name matches (conda-installed Python packages satisfy pip requirements).
    """
    conda_by_pypi = {normalize_pypi_name(p.name): p.name.lower() for p in plock.conda}
    pip_names = {p.normalized_name for p in plock.pip}
    graph: dict[str, list[str]] = {p.name.lower(): [_dep_name(d) for d in p.depends] for p in plock.conda}
    labels = {p.name.lower(): p.name for p in plock.conda}
    for p in plock.pip:
        node = f"pip:{p.normalized_name}"
        labels[node] = f"{p.name} (pip)"
        graph[node] = [
            f"pip:{name}" if name in pip_names else conda_by_pypi.get(name, f"pip:{name}")
            for name in _pip_requirements(p.requires_dist)
        ]
    return graph, labels


def _roots(lock: EnvironmentLock, platform: str, graph: dict[str, list[str]]) -> list[str]:
    plock = lock.platforms[platform]
    pip_names = {p.normalized_name for p in plock.pip}
    roots = [_dep_name(s) for s in lock.requested.get(platform, ())]
    for spec in lock.requested_pip.get(platform, ()):
        name = normalize_pypi_name(_dep_name(spec))
        roots.append(f"pip:{name}" if name in pip_names else name)
    roots = [r for r in dict.fromkeys(roots) if r in graph]
    if roots:
        return roots
    depended = {d for deps in graph.values() for d in deps}
    return sorted(n for n in graph if n not in depended)


@dataclass(frozen=True, slots=True)
class WhyPaths:
    """Dependency paths (package labels, root first), shortest first; ``truncated`` if more exist."""

    package: str
    platform: str
    paths: tuple[tuple[str, ...], ...]
    truncated: bool = False


def _target(graph: dict[str, list[str]], package: str, platform: str) -> str:
    name = package.lower()
    for candidate in (name, normalize_pypi_name(name), f"pip:{normalize_pypi_name(name)}"):
        if candidate in graph:
            return candidate
    raise PackageNotInLockError(f"{package} is not in the lock for {platform}", field=package)


def why_all(
    lock: EnvironmentLock, package: str, platform: str | None = None, *, max_paths: int = DEFAULT_MAX_PATHS
) -> WhyPaths:
    """Every dependency path (no package twice) from a root to ``package``, shortest first, at most ``max_paths``.

    Roots are the requested specs when the lock records them, otherwise the packages
    nothing else depends on. pip packages are followed through their ``requires_dist``.
    """
    if not lock.platforms:
        raise PackageNotInLockError("the lock has no platforms", field=package)
    platform = platform or lock.platform_names[0]
    if platform not in lock.platforms:
        raise PackageNotInLockError(
            f"the lock has no platform {platform}", hint="choose one of: " + ", ".join(lock.platform_names)
        )
    graph, labels = _graph(lock.platforms[platform])
    target = _target(graph, package, platform)
    if not lock.has_dependencies:
        raise NoDependencyDataError(
            f"this lock carries no dependency information, so it cannot tell why {package} is in it",
            hint="@EXPLICIT files list packages only; ask a conda-lock.yml or pixi.lock of the same environment",
        )
    roots = _roots(lock, platform, graph)
    # nodes from which the target can be reached: paths only go through them
    reverse: dict[str, set[str]] = {}
    for node, deps in graph.items():
        for dep in deps:
            reverse.setdefault(dep, set()).add(node)
    reaches = {target}
    pending = deque([target])
    while pending:
        for parent in reverse.get(pending.popleft(), ()):
            if parent not in reaches:
                reaches.add(parent)
                pending.append(parent)
    queue: deque[tuple[str, ...]] = deque((r,) for r in roots if r in reaches)
    found: list[tuple[str, ...]] = []
    expansions = 0
    truncated = False
    while queue:  # breadth first: complete paths come out shortest first
        path = queue.popleft()
        if path[-1] == target:
            if len(found) == max_paths:
                truncated = True
                break
            found.append(path)
            continue
        expansions += 1
        if expansions > _MAX_EXPANSIONS:
            truncated = True
            break
        for dep in dict.fromkeys(graph.get(path[-1], ())):
            if dep in reaches and dep not in path:
                queue.append((*path, dep))
    if not found:
        raise NoDependencyPathError(
            f"{package} is in the lock for {platform}, but no recorded dependency leads to it from "
            + ("a requested package" if lock.requested.get(platform) or lock.requested_pip.get(platform) else "a root"),
            hint="it may be needed only through an optional extra or was added by hand",
        )
    return WhyPaths(package, platform, tuple(tuple(labels.get(n, n) for n in p) for p in found), truncated)


def why(lock: EnvironmentLock, package: str, platform: str | None = None) -> list[str]:
    """The shortest chain of package names from a root (a requested spec) to ``package``."""
    return list(why_all(lock, package, platform, max_paths=1).paths[0])
