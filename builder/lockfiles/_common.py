"""Helpers shared by the lockfile readers and writers: conda file names and URLs, dependencies, ordering.

>>> split_conda_url("https://conda.anaconda.org/conda-forge/linux-64/zlib-1.3.1-hb9d3cd8_2.conda")
('https://conda.anaconda.org/conda-forge', 'linux-64', 'zlib-1.3.1-hb9d3cd8_2.conda')
>>> split_conda_filename("python_abi-3.12-8_cp312.conda")
('python_abi', '3.12', '8_cp312')
>>> [build_number_of(b) for b in ("hb9d3cd8_2", "h85951f9_2_cpython", "8_cp312", "conda_forge")]
[2, 2, 8, 0]
>>> dep_name("python_abi 3.12.* *_cp312"), dep_name("conda-forge::numpy>=1.26")
('python_abi', 'numpy')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from packaging.requirements import InvalidRequirement, Requirement

from envyard.builder.model import LockedCondaPackage, LockedPipPackage, PackageCategory, normalize_pypi_name

Warn = Callable[[str], None]
"""Where readers and writers report what they skip or cannot hold: one line per call."""


def no_warnings(message: str) -> None:
    """The default :data:`Warn`: callers that do not pass one accept the loss."""


def describe_categories(packages: Iterable[LockedCondaPackage | LockedPipPackage]) -> str | None:
    """``"3 packages of categories dev, test"`` for packages not simply required in ``main``; None if none are."""
    odd = [p for p in packages if p.categories != (PackageCategory("main", False),)]
    if not odd:
        return None
    names = sorted({c.name for p in odd for c in p.categories} - {"main"})
    optional = sum(any(c.optional for c in p.categories) for p in odd)
    text = f"{len(odd)} package{'s' if len(odd) != 1 else ''}"
    if names:
        text += f" of categor{'ies' if len(names) != 1 else 'y'} {', '.join(names)}"
    if optional:
        text += f" ({optional} optional)"
    return text


CONDA_SUFFIXES = (".conda", ".tar.bz2")
_MD5 = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DEP_NAME = re.compile(r"^\s*(?:[^\s:]+::)?([^\s=<>!~\[]+)")
_SHA256_FRAGMENT = re.compile(r"#sha256=([0-9a-fA-F]{64})$")


def is_md5(value: object) -> bool:
    return isinstance(value, str) and _MD5.fullmatch(value) is not None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def split_conda_filename(file_name: str) -> tuple[str, str, str]:
    """``name-version-build.conda`` -> (name, version, build); ValueError if it is not one."""
    for suffix in CONDA_SUFFIXES:
        if file_name.endswith(suffix):
            parts = file_name[: -len(suffix)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1], parts[2]
            break
    raise ValueError(f"{file_name!r} is not a conda package file name (name-version-build.conda|.tar.bz2)")


def split_conda_url(url: str) -> tuple[str, str, str]:
    """A package URL -> (channel URL, subdir, file name); ValueError without both."""
    base = url.split("#", 1)[0]
    channel_and_subdir, _, file_name = base.rpartition("/")
    channel, _, subdir = channel_and_subdir.rpartition("/")
    if not (channel and subdir and file_name):
        raise ValueError(f"{url!r} is not a conda package URL (<channel>/<subdir>/<file>)")
    return channel, subdir, file_name


def build_number_of(build: str) -> int:
    """The build number conda-build puts in the build string: its last all-digit ``_`` segment, else 0.

    Usually the end (``py312h66e93f0_0``), but variants put it in front of a suffix
    (``h85951f9_2_cpython``, ``8_cp312``, ``7_kmp_llvm``). File names carry nothing
    better; formats that record the real number (pixi.lock, rattler's v3) use it.
    """
    numbers = [part for part in build.split("_") if part.isdigit()]
    return int(numbers[-1]) if numbers else 0


def conda_package_from_url(
    url: str,
    *,
    name: str | None = None,
    version: str | None = None,
    build: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    depends: Iterable[str] = (),
    **extra: object,
) -> LockedCondaPackage:
    """A :class:`LockedCondaPackage` whose build, subdir and channel come from its URL."""
    channel, subdir, file_name = split_conda_url(url)
    file_pkg, file_version, file_build = split_conda_filename(file_name)
    name = name or file_pkg
    version = version or file_version
    if build is None:
        stem = file_name.removesuffix(".conda").removesuffix(".tar.bz2")
        prefix = f"{name}-{version}-"
        build = stem[len(prefix) :] if stem.startswith(prefix) else file_build
    return LockedCondaPackage(
        name=name,
        version=version,
        build=build,
        build_number=build_number_of(build),
        subdir=subdir,
        channel=channel,
        url=url,
        sha256=sha256,
        md5=md5,
        depends=tuple(depends),
        **extra,  # type: ignore[arg-type]
    )


def split_sha256_fragment(url: str) -> tuple[str, str | None]:
    """Split a ``#sha256=HEX`` fragment (PEP 503) off a distribution URL."""
    match = _SHA256_FRAGMENT.search(url)
    if match is None:
        return url, None
    return url[: match.start()], match.group(1).lower()


@lru_cache(maxsize=65536)  # the same few thousand specs recur in every format written and every toposort
def _split_dep(spec: str) -> tuple[str, str]:
    match = _DEP_NAME.match(spec)
    if match is None:
        return spec.strip(), ""
    return match.group(1), spec[match.end() :].strip()


def split_dep(spec: str) -> tuple[str, str]:
    """A conda dependency spec as (name, the rest): ``"libgcc >=13"`` -> ``("libgcc", ">=13")``."""
    return _split_dep(spec)


def dep_name(spec: str) -> str:
    """The package name of a conda dependency spec (``"libgcc >=13"`` -> ``"libgcc"``)."""
    return _split_dep(spec)[0]


def conda_dependencies(pkg: LockedCondaPackage) -> dict[str, str]:
    """conda-lock's ``dependencies`` mapping: name -> the rest of the spec ('' for none).

    >>> conda_dependencies(conda_package_from_url("https://x.org/c/noarch/a-1-0.conda",
    ...     md5="0" * 32, depends=("python >=3.9", "python_abi 3.12.* *_cp312", "tzdata")))
    {'python': '>=3.9', 'python_abi': '3.12.* *_cp312', 'tzdata': ''}
    """
    deps: dict[str, str] = {}
    for spec in pkg.depends:
        name, rest = _split_dep(spec)
        previous = deps.get(name, "")
        deps[name] = f"{previous},{rest}" if previous and rest else previous or rest
    return dict(sorted(deps.items()))


@lru_cache(maxsize=8192)
def _parse_requirement(text: str) -> tuple[str, str] | None:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    if req.marker is not None and "extra" in str(req.marker):
        return None  # only installed with an extra that was not requested
    return normalize_pypi_name(req.name), str(req.specifier) or "*"


def pip_dependencies(pkg: LockedPipPackage) -> dict[str, str]:
    """conda-lock's ``dependencies`` mapping of a pip package: as recorded, else from its ``requires_dist``."""
    if pkg.dependencies is not None:
        return dict(pkg.dependencies)
    deps: dict[str, str] = {}
    for text in pkg.requires_dist:
        parsed = _parse_requirement(text)
        if parsed is not None:
            deps.setdefault(*parsed)
    return dict(sorted(deps.items()))


def toposort_names(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Names in dependency order, as conda's (and conda-lock's) toposort orders them.

    Each round emits, alphabetically, every name whose dependencies are all emitted;
    a cycle is broken at the name with fewest open dependencies. Names that are only
    depended upon (virtual packages) take part, so callers filter them out.

    >>> toposort_names({"b": ["a"], "a": [], "c": ["b", "__glibc"], "python": ["pip"], "pip": ["python"]})
    ['__glibc', 'a', 'python', 'b', 'pip', 'c']
    """
    open_deps = {name: set(deps) - {name} for name, deps in graph.items()}
    if "python" in open_deps:
        open_deps["python"].discard("pip")
    for name in set().union(*open_deps.values()) - open_deps.keys():
        open_deps[name] = set()
    order: list[str] = []
    while open_deps:
        ready = sorted(name for name, deps in open_deps.items() if not deps)
        if not ready:
            ready = [min(open_deps, key=lambda name: (len(open_deps[name]), name))]
        for name in ready:
            del open_deps[name]
        order.extend(ready)
        done = set(ready)
        for deps in open_deps.values():
            deps -= done
    return order


def toposorted_conda(packages: Iterable[LockedCondaPackage]) -> list[LockedCondaPackage]:
    """Installable conda packages (no virtual ones) in dependency order."""
    by_name = {p.name: p for p in packages if not p.name.startswith("__")}
    order = toposort_names({name: conda_dependencies(p) for name, p in by_name.items()})
    return [by_name[name] for name in order if name in by_name]


def toposorted_pip(packages: Iterable[LockedPipPackage]) -> list[LockedPipPackage]:
    """pip packages in dependency order (by normalized name)."""
    by_name = {p.normalized_name: p for p in packages}
    graph = {name: {normalize_pypi_name(d) for d in pip_dependencies(p)} for name, p in by_name.items()}
    order = toposort_names(graph)
    return [by_name[name] for name in order if name in by_name]
