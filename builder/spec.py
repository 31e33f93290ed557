"""Environment specs (``environment.yml``, ``requirements.txt``) parsed into frozen dataclasses.

Accepts what conda, conda-lock and mamba accept: MatchSpecs in any spacing, ``# [linux64]``
selector comments, ``- sel(osx): pkg`` items, a ``- pip:`` list with index options and
``-r`` includes, ``${VAR}`` in channel URLs (expanded from ``environ`` only). Every bad
input raises :class:`~builder.errors.SpecError` with file, line and field.

>>> spec = parse_environment_yaml('''
... channels: [conda-forge, nodefaults]
... dependencies:
...   - python >= 3.8, < 3.9
...   - cudatoolkit  # [linux64]
...   - sel(osx): llvm-openmp
... ''')
>>> spec.channels, spec.nodefaults
(('conda-forge',), True)
>>> spec.conda_specs("linux-64")
('python >=3.8,<3.9', 'cudatoolkit')
>>> spec.conda_specs("osx-arm64")
('python >=3.8,<3.9', 'llvm-openmp')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import rattler
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from envyard.builder.errors import SpecError
from envyard.builder.spec_pip import PipCollector, PipRequirement, PipSection, pip_canonical, read_text
from envyard.builder.spec_selectors import evaluate_selector
from envyard.builder.spec_yaml import (
    DEFAULT_LIMITS,
    SpecLimits,
    YamlSource,
    check_size,
    check_yaml_limits,
    compose_mapping,
    is_null,
    line_of,
    suggest,
)

__all__ = [
    "KNOWN_PLATFORMS", "TOP_LEVEL_KEYS", "CondaDependency", "EnvironmentSpec", "InputKind", "PipRequirement",
    "PipSection", "detect_input_kind", "normalize_matchspec", "parse_environment_yaml", "parse_requirements_txt",
    "read_spec",
]  # fmt: skip

InputKind = Literal["environment", "requirements", "conda-lock", "pixi-lock", "explicit"]

#: Top-level keys of environment.yml; the JSON schema lists exactly these.
TOP_LEVEL_KEYS: frozenset[str] = frozenset(
    {
        "name", "channels", "dependencies", "variables", "prefix", "platforms", "category",
        "virtual-packages", "pip-repositories", "allow-pypi-requests",
    }
)  # fmt: skip

_SEL_ITEM = re.compile(r"^sel\((.*)\)$")
_OP_SPACE = re.compile(r"(==|!=|~=|>=|<=|>|<|=)\s+(?=[\w*.])")
#: Every conda subdir rattler knows except noarch: what `platforms:` and selectors accept.
KNOWN_PLATFORMS: tuple[str, ...] = tuple(str(p) for p in rattler.Subdir.all() if str(p) != "noarch")


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CondaDependency:
    """One conda MatchSpec of ``dependencies``, with its source line and platform selector."""

    spec: str
    line: int | None
    selector: str | None


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """A parsed environment spec. ``raw_channels`` are the channels before ``${VAR}`` expansion."""

    name: str | None
    channels: tuple[str, ...]
    dependencies: tuple[CondaDependency, ...]
    pip: PipSection | None = None
    platforms: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=_empty, hash=False)
    virtual_packages: Mapping[str, str] = field(default_factory=_empty, hash=False)
    nodefaults: bool = False
    channel_env_vars: Mapping[str, tuple[str, ...]] = field(default_factory=_empty, hash=False)
    source: str | None = None
    raw_channels: tuple[str, ...] = ()

    def conda_specs(self, platform: str) -> tuple[str, ...]:
        """The MatchSpecs whose selector holds on ``platform`` (e.g. ``linux-64``), in order."""
        _check_platform(platform, self.source)
        return tuple(d.spec for d in self.dependencies if _holds(d.selector, platform))

    def pip_requirements(self, platform: str) -> tuple[str, ...]:
        """The pip requirement lines whose selector holds on ``platform`` (markers are kept)."""
        _check_platform(platform, self.source)
        if self.pip is None:
            return ()
        return tuple(r.text for r in self.pip.requirements if _holds(r.selector, platform))

    def canonical(self, platform: str | None = None) -> dict[str, Any]:
        """JSON-able canonical form for content hashing (no ``source``, no line numbers).

        With ``platform``, selectors are applied and dropped: the inputs of that platform's solve.
        """

        def deps() -> list[Any]:
            if platform is not None:
                return sorted(self.conda_specs(platform))
            return sorted(
                ({"spec": d.spec, "selector": d.selector} for d in self.dependencies),
                key=lambda d: (d["spec"], d["selector"] or ""),
            )

        return {
            "name": self.name,
            "channels": list(self.raw_channels or self.channels),
            "nodefaults": self.nodefaults,
            "dependencies": deps(),
            "pip": None if self.pip is None else pip_canonical(self.pip, platform, _holds),
            "platforms": sorted(self.platforms) if platform is None else [platform],
            "variables": dict(sorted(self.variables.items())),
            "virtual_packages": dict(sorted(self.virtual_packages.items())),
        }


def _holds(selector: str | None, platform: str) -> bool:
    return selector is None or evaluate_selector(selector, platform)


def _check_platform(platform: str, source: str | None) -> None:
    if platform not in KNOWN_PLATFORMS:
        raise SpecError(
            f"unknown platform {platform!r}",
            file=source,
            field="platform",
            hint=suggest(platform, KNOWN_PLATFORMS) or "use a conda subdir like 'linux-64'",
        )


def normalize_matchspec(text: str) -> str:
    """Collapse whitespace in a MatchSpec the way conda reads it.

    >>> normalize_matchspec("python >= 3.8, < 3.9")
    'python >=3.8,<3.9'
    >>> normalize_matchspec("jaxlib>=0.4.31=cuda12*")
    'jaxlib>=0.4.31=cuda12*'
    """
    text = " ".join(text.split())
    text = re.sub(r"\s*,\s*", ",", text)
    return _OP_SPACE.sub(r"\1", text)


def _matchspec(src: YamlSource, node: ScalarNode, field: str) -> str:
    text = normalize_matchspec(node.value)
    if not text:
        raise src.error("empty dependency", node, field)
    try:
        spec = rattler.MatchSpec(text, strict=False)
    except Exception as exc:  # rattler raises its own InvalidMatchSpecError
        message = str(exc).splitlines()[0]
        raise src.error(
            f"invalid MatchSpec {node.value!r}: {message}",
            node,
            field,
            hint="write conda specs like 'numpy >=1.26,<2' or 'conda-forge::numpy 1.26.*'",
        ) from None
    if spec.build and spec.build[0] in "<>=!~":
        raise src.error(
            f"invalid MatchSpec {node.value!r}: build string {spec.build!r} looks like a version constraint",
            node,
            field,
            hint="separate version constraints with ',' e.g. 'numpy >=1.2,<2'",
        )
    return text


def _channels(src: YamlSource, node: Node) -> tuple[list[str], list[str], dict[str, tuple[str, ...]], bool]:
    channels: list[str] = []
    seen: set[str] = set()
    raw: list[str] = []
    env_vars: dict[str, tuple[str, ...]] = {}
    nodefaults = False
    for item in src.sequence(node, "channels"):
        text = (src.scalar(item, "channels", "a list of channel names or URLs") or "").strip()
        if not text or any(c.isspace() for c in text):
            raise src.error(
                f"invalid channel {text!r}", item, "channels", hint="a channel is a name like 'conda-forge' or a URL"
            )
        if text == "nodefaults":
            nodefaults = True
            continue
        expanded, used = src.expand(text, item, "channels")
        if expanded not in seen:
            seen.add(expanded)
            channels.append(expanded)
            raw.append(text)
            if used:
                env_vars[expanded] = used
    return channels, raw, env_vars, nodefaults


def _dependencies(src: YamlSource, node: Node, pip: PipCollector) -> list[CondaDependency]:
    deps: list[CondaDependency] = []
    for item in src.sequence(node, "dependencies"):
        if isinstance(item, ScalarNode):
            if is_null(item):
                raise src.error("empty dependency", item, "dependencies")
            selector = src.trailing_selector(item, "dependencies")
            deps.append(CondaDependency(_matchspec(src, item, "dependencies"), line_of(item), selector))
            continue
        pairs = src.mapping(item, "dependencies") if isinstance(item, MappingNode) else []
        if len(pairs) != 1:
            raise src.error(
                "a dependency must be a MatchSpec string, '- pip: [...]' or '- sel(platform): spec'",
                item,
                "dependencies",
            )
        key, key_node, value = pairs[0]
        sel = _SEL_ITEM.match(key)
        if key == "pip":
            pip.found = True
            for pip_item in src.sequence(value, "pip"):
                _pip_item(src, pip_item, pip)
        elif sel:
            selector = src.check_selector(sel.group(1).strip(), key_node, "dependencies")
            if not isinstance(value, ScalarNode) or is_null(value):
                raise src.error(f"{key} needs a MatchSpec string", value, "dependencies")
            deps.append(CondaDependency(_matchspec(src, value, "dependencies"), line_of(value), selector))
        else:
            raise src.error(
                f"unknown dependency section {key!r}",
                key_node,
                "dependencies",
                hint="only '- pip:' lists and '- sel(platform): spec' items are allowed",
            )
    return deps


def _pip_item(src: YamlSource, item: Node, pip: PipCollector) -> None:
    selector = None
    if isinstance(item, MappingNode):
        pairs = src.mapping(item, "pip")
        sel = _SEL_ITEM.match(pairs[0][0]) if len(pairs) == 1 else None
        if sel is None:
            raise src.error(
                "a pip item must be a requirement string or '- sel(platform): requirement'",
                item,
                "pip",
                hint="quote pip lines that contain ': ', e.g. - \"--no-binary :all:\"",
            )
        selector = src.check_selector(sel.group(1).strip(), pairs[0][1], "pip")
        item = pairs[0][2]
    text = src.scalar(item, "pip", "a requirement string")
    if text is None:
        raise src.error("empty pip requirement", item, "pip")
    selector = selector or src.trailing_selector(item, "pip")
    pip.add_line(text, file=src.file, line=line_of(item), spec_line=line_of(item), selector=selector)


def parse_environment_yaml(
    text: str,
    *,
    source: str | None = None,
    environ: Mapping[str, str] | None = None,
    allow_includes: bool = False,
    limits: SpecLimits = DEFAULT_LIMITS,
) -> EnvironmentSpec:
    """Parse an ``environment.yml``.

    ``allow_includes``: pip ``-r FILE`` lines read FILE relative to ``source``'s directory (the local CLI,
    on the user's own files); without it they are a :class:`~builder.errors.SpecIncludeError` (specs
    submitted to the service, parsed by the server and its workers).
    """
    src = YamlSource.from_text(text, file=source, environ=environ or {})
    base_dir = Path(source).parent if source is not None else None
    pip = PipCollector(base_dir=base_dir, environ=src.environ, allow_includes=allow_includes)
    name: str | None = None
    channels: list[str] = []
    raw: list[str] = []
    env_vars: dict[str, tuple[str, ...]] = {}
    nodefaults = False
    deps: list[CondaDependency] = []
    platforms: list[str] = []
    variables: dict[str, str] = {}
    virtual: dict[str, str] = {}
    pip_repos: list[str] = []
    items = src.mapping(compose_mapping(text, source, limits), "spec")
    _check_keys(src, items)
    for key, _, value in items:
        if key == "name":
            name = src.scalar(value, key)
        elif key == "channels":
            channels, raw, env_vars, nodefaults = _channels(src, value)
        elif key == "dependencies":
            deps = _dependencies(src, value, pip)
        elif key == "platforms":
            platforms = _platforms(src, value)
        elif key == "variables":
            variables = _scalar_map(src, value, key)
        elif key == "virtual-packages":
            virtual = _virtual_packages(src, value)
        elif key == "pip-repositories":
            pip_repos = [_pip_repository(src, item) for item in src.sequence(value, key)]
    return EnvironmentSpec(
        name=name,
        channels=tuple(channels),
        dependencies=tuple(deps),
        pip=pip.build(extra_index_urls=pip_repos) if pip.found else None,
        platforms=tuple(platforms),
        variables=MappingProxyType(variables),
        virtual_packages=MappingProxyType(virtual),
        nodefaults=nodefaults,
        channel_env_vars=MappingProxyType(env_vars),
        source=source,
        raw_channels=tuple(raw),
    )


def _check_keys(src: YamlSource, items: list[tuple[str, Node, Node]]) -> None:
    """SpecError naming the first unknown top-level key (all of them in ``details``)."""
    unknown = [(key, node) for key, node, _ in items if key not in TOP_LEVEL_KEYS]
    if not unknown:
        return
    key, node = unknown[0]
    others = ", ".join(repr(k) for k, _ in unknown[1:])
    err = src.error(
        f"unknown key {key!r}" + (f" (also unknown: {others})" if others else ""),
        node,
        key,
        hint=suggest(key, TOP_LEVEL_KEYS) or f"known keys: {', '.join(sorted(TOP_LEVEL_KEYS))}",
    )
    err.details["unknown_keys"] = {k: suggest(k, TOP_LEVEL_KEYS) for k, _ in unknown}
    raise err


def _pip_repository(src: YamlSource, item: Node) -> str:
    url = src.expand((src.scalar(item, "pip-repositories") or "").strip(), item, "pip-repositories")[0]
    if not re.match(r"^https?://", url):
        raise src.error(f"pip repository {url!r} is not an http(s) URL", item, "pip-repositories")
    return url


def _platforms(src: YamlSource, node: Node) -> list[str]:
    platforms: list[str] = []
    for item in src.sequence(node, "platforms"):
        text = (src.scalar(item, "platforms") or "").strip()
        if text not in KNOWN_PLATFORMS:
            raise src.error(
                f"unknown platform {text!r}",
                item,
                "platforms",
                hint=suggest(text, KNOWN_PLATFORMS) or "use conda subdirs like 'linux-64'",
            )
        if text not in platforms:
            platforms.append(text)
    return platforms


def _scalar_map(src: YamlSource, node: Node, field: str) -> dict[str, str]:
    """A mapping of names to scalars, values as written in the YAML (``12.10`` stays ``12.10``)."""
    result: dict[str, str] = {}
    for key, _, value in src.mapping(node, field):
        if not isinstance(value, ScalarNode) or is_null(value):
            hint = 'quote an empty value: ""' if is_null(value) else None
            raise src.error(f"{field}.{key} must be a string or number", value, f"{field}.{key}", hint=hint)
        result[key] = str(value.value)
    return result


def _virtual_packages(src: YamlSource, node: Node) -> dict[str, str]:
    result = _scalar_map(src, node, "virtual-packages")
    lines = {key: value for key, _, value in src.mapping(node, "virtual-packages")}
    for key, value in result.items():
        field_name = f"virtual-packages.{key}"
        if not re.fullmatch(r"__[a-z0-9_-]+", key):
            raise src.error(
                f"virtual package name {key!r} must start with '__'",
                lines[key],
                field_name,
                hint="e.g. __cuda, __glibc, __osx, __archspec",
            )
        version, _, build = value.strip().partition(" ")
        try:
            rattler.Version(version)
            if len(build.split()) > 1:
                raise ValueError(f"build string {build.strip()!r} contains spaces")
        except Exception as exc:
            raise src.error(
                f"invalid version {version!r} for {key}: {exc}",
                lines[key],
                field_name,
                hint='write "version" or "version build", e.g. "12.4" or "1 x86_64_v3"',
            ) from None
        result[key] = f"{version} {build.strip()}".strip()
    return result


def parse_requirements_txt(
    text: str,
    *,
    source: str | None = None,
    environ: Mapping[str, str] | None = None,
    allow_includes: bool = False,
    limits: SpecLimits = DEFAULT_LIMITS,
) -> EnvironmentSpec:
    """A pip-only spec from a requirements file (index options, continuations; ``-r`` as in
    :func:`parse_environment_yaml`)."""
    check_size(text, source, limits)  # parsing requirements is linear: the size bounds the work
    pip = PipCollector(
        base_dir=Path(source).parent if source is not None else None,
        environ=environ or {},
        allow_includes=allow_includes,
    )
    pip.add_file_text(text, file=source, spec_line=None, selector=None)
    return EnvironmentSpec(name=None, channels=(), dependencies=(), pip=pip.build(), source=source)


_TOP_KEY = re.compile(r'^(["\']?)([A-Za-z_][\w.-]*)\1[ \t]*:(?!//)', re.MULTILINE)


def detect_input_kind(path: str | os.PathLike[str], text: str) -> InputKind:
    """What a file is, by content first: an ``@EXPLICIT`` list, a conda-lock or pixi lock, a spec."""
    if re.search(r"^[ \t]*@EXPLICIT[ \t]*$", text, re.MULTILINE):
        return "explicit"
    keys = {m.group(2) for m in _TOP_KEY.finditer(text)}
    if not keys and re.match(r"\s*(#[^\n]*\n\s*)*[{]", text):
        check_yaml_limits(text, os.fspath(path))
        try:  # flow-style (JSON-like) YAML: rare and small, so parse it
            loaded = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            loaded = None
        keys = {str(k) for k in loaded} if isinstance(loaded, dict) else set()
    if "version" in keys and "environments" in keys:
        return "pixi-lock"
    if "package" in keys and ("version" in keys or "metadata" in keys):
        return "conda-lock"
    suffix = Path(path).suffix.lower()
    if suffix in (".yml", ".yaml"):
        return "environment"
    if suffix in (".txt", ".in") or not keys:
        return "requirements"
    return "environment"


def read_spec(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None, allow_includes: bool = True
) -> EnvironmentSpec:
    """Read a spec file from the local disk (``-r`` includes are read unless ``allow_includes`` is false);
    lockfiles (conda-lock, pixi, ``@EXPLICIT``) are a SpecError naming their kind."""
    source = os.fspath(path)
    text = read_text(Path(source), file=source, line=None)
    kind = detect_input_kind(source, text)
    if kind == "environment":
        return parse_environment_yaml(text, source=source, environ=environ, allow_includes=allow_includes)
    if kind == "requirements":
        return parse_requirements_txt(text, source=source, environ=environ, allow_includes=allow_includes)
    what = {"conda-lock": "a conda-lock", "pixi-lock": "a pixi", "explicit": "an @EXPLICIT"}[kind]
    raise SpecError(
        f"this is {what} lockfile, not an environment spec",
        file=source,
        hint="install or convert it as a lock instead of solving it",
        details={"kind": kind},
    )
