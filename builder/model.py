"""The lock as envyard holds it in memory, independent of any lockfile format.

Every reader (conda-lock.yml, pixi.lock, ``@EXPLICIT``) produces an
:class:`EnvironmentLock`; every writer renders one. The solver's output is
converted into it once, at the boundary (:func:`builder.solve` does that).

>>> pkg = LockedCondaPackage(name="zlib", version="1.3.1", build="hb9d3cd8_2", build_number=2,
...     subdir="linux-64", channel="https://conda.anaconda.org/conda-forge",
...     url="https://conda.anaconda.org/conda-forge/linux-64/zlib-1.3.1-hb9d3cd8_2.conda",
...     sha256="a" * 64, md5="b" * 32, depends=("libgcc >=13",))
>>> pkg.file_name
'zlib-1.3.1-hb9d3cd8_2.conda'
>>> lock = EnvironmentLock(platforms={"linux-64": PlatformLock("linux-64", conda=(pkg,))})
>>> lock.platform_names
('linux-64',)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, NamedTuple

SUPPORTED_PLATFORMS: tuple[str, ...] = (
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "osx-64",
    "osx-arm64",
    "win-64",
    "win-arm64",
)

_NORMALIZE = re.compile(r"[-_.]+")


def normalize_pypi_name(name: str) -> str:
    """PEP 503 normalized name.

    >>> normalize_pypi_name("Typing_Extensions")
    'typing-extensions'
    """
    return _NORMALIZE.sub("-", name).lower()


class PackageCategory(NamedTuple):
    """A category a package is locked in (conda-lock's ``category``/``optional``).

    ``main`` packages are installed by default; ``optional`` ones (conda-lock's
    ``dev``, ``test`` ... extras) only when their category is asked for.
    """

    name: str
    optional: bool


MAIN_CATEGORY: tuple[PackageCategory, ...] = (PackageCategory("main", False),)


def is_main_only(categories: tuple[PackageCategory, ...]) -> bool:
    """True for the default: one required ``main`` category."""
    return categories == MAIN_CATEGORY


@dataclass(frozen=True, slots=True)
class LockedCondaPackage:
    """One conda package pinned in a lock, with everything needed to fetch and verify it."""

    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    channel: str
    url: str
    sha256: str | None
    md5: str | None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    size: int | None = None
    timestamp: int | None = None
    noarch: str | None = None
    license: str | None = None
    track_features: tuple[str, ...] = ()
    categories: tuple[PackageCategory, ...] = MAIN_CATEGORY

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def manager(self) -> Literal["conda"]:
        return "conda"


@dataclass(frozen=True, slots=True)
class LockedPipPackage:
    """One Python distribution from a package index, pinned by URL and hash."""

    name: str
    version: str
    url: str
    sha256: str | None
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    categories: tuple[PackageCategory, ...] = MAIN_CATEGORY
    # conda-lock's ``dependencies`` map (name -> specifier, '*' for any) exactly as a
    # conda-lock file recorded it; None where the dependencies come from ``requires_dist``.
    dependencies: tuple[tuple[str, str], ...] | None = None
    source_url: str | None = None  # conda-lock's ``source: {type: url, url: ...}``

    @property
    def normalized_name(self) -> str:
        return normalize_pypi_name(self.name)

    @property
    def manager(self) -> Literal["pip"]:
        return "pip"


@dataclass(frozen=True, slots=True)
class PlatformLock:
    """The packages of one platform, conda packages sorted by name, then pip packages."""

    platform: str
    conda: tuple[LockedCondaPackage, ...] = ()
    pip: tuple[LockedPipPackage, ...] = ()
    virtual_packages: tuple[str, ...] = ()

    def conda_by_name(self) -> dict[str, LockedCondaPackage]:
        return {p.name: p for p in self.conda}


@dataclass(frozen=True, slots=True)
class LockProvenance:
    """How a lock was made: the options, beyond the spec, that a solve depended on.

    ``envyard lock --check`` and a plain relock reuse them unless the command line sets
    them again. ``platforms`` is recorded only when chosen on the command line (a spec's
    own ``platforms:`` stay the spec's). Channel alias, mirrors and the pip index are
    recorded only without credentials in them. Formats hold it as string pairs
    (:meth:`to_metadata`): conda-lock.yml in ``custom_metadata`` (``envyard.option.KEY``),
    ``@EXPLICIT`` files as ``# envyard.option.KEY: VALUE`` header lines. pixi.lock has no place for
    them (py-rattler 0.28 writes platforms, channels and packages only): it keeps the platforms and
    each platform's virtual packages (``__cuda`` from ``--cuda`` among them), not the options.

    >>> made = LockProvenance(platforms=("linux-64", "osx-arm64"), cuda="12.4", strategy="highest")
    >>> made.to_metadata()["platforms"]
    '["linux-64","osx-arm64"]'
    >>> LockProvenance.from_metadata(made.to_metadata()) == made
    True
    """

    platforms: tuple[str, ...] = ()
    channel_alias: str | None = None
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cuda: str | None = None
    virtual_packages: Mapping[str, str] = field(default_factory=dict)
    exclude_newer: str | None = None
    strategy: str | None = None
    channel_priority: str | None = None
    pip_index_url: str | None = None
    pip_find_links: tuple[str, ...] = ()
    pip_no_index: bool = False

    def to_metadata(self) -> dict[str, str]:
        """The recorded options as sorted ``key -> string`` pairs (lists and maps as compact JSON)."""
        out: dict[str, str] = {}
        for key in ("channel_alias", "cuda", "exclude_newer", "strategy", "channel_priority", "pip_index_url"):
            value = getattr(self, key)
            if value:
                out[key] = value
        for key in ("platforms", "pip_find_links"):
            if getattr(self, key):
                out[key] = json.dumps(list(getattr(self, key)), separators=(",", ":"))
        if self.mirrors:
            out["mirrors"] = json.dumps({k: list(v) for k, v in sorted(self.mirrors.items())}, separators=(",", ":"))
        if self.virtual_packages:
            out["virtual_packages"] = json.dumps(dict(sorted(self.virtual_packages.items())), separators=(",", ":"))
        if self.pip_no_index:
            out["pip_no_index"] = "true"
        return dict(sorted(out.items()))

    @classmethod
    def from_metadata(cls, values: Mapping[str, str]) -> LockProvenance:
        """Read :meth:`to_metadata`'s pairs back; ValueError naming the key of a value that is not valid."""
        known = {f.name for f in dataclass_fields(cls)}
        fields: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known or not isinstance(value, str):
                raise ValueError(f"unknown lock option {key!r}")
            try:
                if key in ("platforms", "pip_find_links"):
                    parsed = json.loads(value)
                    if not (isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)):
                        raise ValueError
                    fields[key] = tuple(parsed)
                elif key in ("mirrors", "virtual_packages"):
                    parsed = json.loads(value)
                    if not isinstance(parsed, dict):
                        raise ValueError
                    if key == "mirrors":
                        fields[key] = {str(k): tuple(str(u) for u in v) for k, v in parsed.items()}
                    else:
                        fields[key] = {str(k): str(v) for k, v in parsed.items()}
                elif key == "pip_no_index":
                    fields[key] = value == "true"
                else:
                    fields[key] = value
            except (TypeError, ValueError):
                raise ValueError(f"lock option {key!r} has an unreadable value {value!r}") from None
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class EnvironmentLock:
    """A whole lock: per-platform package sets plus the metadata every format needs.

    ``requested`` maps a platform to the conda specs the user asked for there
    (after selectors); ``requested_pip`` to the pip requirements. Both are empty
    for locks imported from formats that do not record them (``@EXPLICIT``).
    ``content_hash`` maps a platform to the hash of the inputs it was solved from;
    ``provenance`` records the options it was made with (None when unknown: imported locks).
    ``custom_metadata`` holds free-form string entries (conda-lock's ``custom_metadata``)
    other than the ones envyard maps to its own fields; writers keep every key.
    ``has_dependencies`` is False for locks read from a format without dependency
    data (``@EXPLICIT``): their empty ``depends`` mean "unknown", not "none".
    """

    platforms: Mapping[str, PlatformLock]
    name: str | None = None
    channels: tuple[str, ...] = ()
    channel_env_vars: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    content_hash: Mapping[str, str] = field(default_factory=dict)
    requested: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    requested_pip: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    provenance: LockProvenance | None = None
    custom_metadata: Mapping[str, str] = field(default_factory=dict)
    has_dependencies: bool = True

    @property
    def platform_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.platforms))
