"""The virtual packages (``__glibc``, ``__cuda`` ...) a platform is solved with.

Defaults follow conda-lock's: glibc 2.28 and Linux 5.10 on Linux, macOS 11.0,
an ``__archspec`` per architecture, and ``__cuda`` only when asked for, either
by the caller (``--cuda 12.4``) or by ``CONDA_OVERRIDE_CUDA`` in the spec's
``variables`` (as conda-store reads it). Both can be overridden per spec and per call.

>>> [str(v) for v in virtual_packages_for("linux-64", cuda="12.4")]
['__archspec=1=x86_64', '__cuda=12.4=0', '__glibc=2.28=0', '__linux=5.10=0', '__unix=0=0']
>>> [str(v) for v in virtual_packages_for("osx-arm64", overrides={"__osx": "13.0"})]
['__archspec=1=arm64', '__osx=13.0=0', '__unix=0=0']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import rattler

from envyard.builder.errors import SpecError

_ARCH = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "linux-ppc64le": "ppc64le",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "x86_64",
    "win-arm64": "arm64",
}

#: name -> "version[ build]" per operating system family, without ``__cuda``.
DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "linux": {"__unix": "0", "__linux": "5.10", "__glibc": "2.28"},
    "osx": {"__unix": "0", "__osx": "11.0"},
    "win": {"__win": "0"},
}

#: conda's override variables and the virtual package each one sets.
OVERRIDE_VARIABLES: Mapping[str, str] = {
    "CONDA_OVERRIDE_CUDA": "__cuda",
    "CONDA_OVERRIDE_GLIBC": "__glibc",
    "CONDA_OVERRIDE_OSX": "__osx",
    "CONDA_OVERRIDE_LINUX": "__linux",
}

#: the operating system families on which each overridable package exists.
_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "__cuda": ("linux", "win"),
    "__glibc": ("linux",),
    "__linux": ("linux",),
    "__osx": ("osx",),
}


@dataclass(frozen=True, slots=True, order=True)
class VirtualPackage:
    """A virtual package the solver treats as installed."""

    name: str
    version: str
    build: str = "0"

    def __str__(self) -> str:
        return f"{self.name}={self.version}={self.build}"

    def to_rattler(self) -> rattler.GenericVirtualPackage:
        return rattler.GenericVirtualPackage(
            rattler.PackageName(self.name), rattler.Version(self.version), rattler.BuildString(self.build)
        )


def _parse(name: str, text: str) -> VirtualPackage:
    parts = str(text).split()
    if not parts or len(parts) > 2 or not name.startswith("__"):
        raise SpecError(
            f"virtual package {name}: '{text}' is not 'VERSION' or 'VERSION BUILD'",
            field="virtual-packages",
            hint="write for example __cuda: '12.4' or __archspec: '1 x86_64'",
        )
    try:
        rattler.Version(parts[0])
    except Exception as exc:
        raise SpecError(f"virtual package {name}: bad version '{parts[0]}': {exc}", field="virtual-packages") from exc
    return VirtualPackage(name, parts[0], parts[1] if len(parts) == 2 else "0")


def virtual_packages_for(
    platform: str,
    *,
    cuda: str | None = None,
    variables: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[VirtualPackage, ...]:
    """The virtual packages for ``platform``, sorted by name.

    Precedence, lowest first: defaults, the spec's ``CONDA_OVERRIDE_*`` variables,
    ``cuda`` (the call's ``--cuda``), explicit ``overrides`` (name -> "version[ build]").
    An override with an empty version removes that package.
    """
    family = platform.split("-", 1)[0]
    if family not in DEFAULTS or platform not in _ARCH:
        raise SpecError(
            f"unknown platform '{platform}'",
            field="platforms",
            hint="use one of: " + ", ".join(sorted(_ARCH)),
        )
    chosen: dict[str, str] = {"__archspec": f"1 {_ARCH[platform]}", **DEFAULTS[family]}
    for variable, name in OVERRIDE_VARIABLES.items():
        value = (variables or {}).get(variable)
        if value is not None and family in _FAMILIES[name]:
            chosen[name] = str(value)
    if cuda is not None and family != "osx":
        chosen["__cuda"] = cuda
    for name, value in (overrides or {}).items():
        chosen[name] = str(value)
    return tuple(sorted(_parse(name, text) for name, text in chosen.items() if str(text).strip()))
