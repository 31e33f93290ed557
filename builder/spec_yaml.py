"""Reading composed YAML nodes with line numbers: the primitives :mod:`builder.spec` is built on.

Working on nodes (not loaded objects) keeps each value's line, its raw text
(``12.10`` stays ``12.10``) and the raw line it sits on (for ``# [selector]`` comments).

>>> src = YamlSource.from_text("deps:\\n  - zlib  # [linux]\\n", file="env.yml", environ={})
>>> root = compose_mapping("deps:\\n  - zlib  # [linux]\\n", "env.yml")
>>> [(key, line_of(k)) for key, k, _ in src.mapping(root, "spec")]
[('deps', 1)]
>>> item = src.sequence(src.mapping(root, "spec")[0][2], "deps")[0]
>>> item.value, line_of(item), src.trailing_selector(item, "deps")
('zlib', 2, 'linux')
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from envyard.builder.errors import SpecError, SpecLimitError
from envyard.builder.spec_selectors import SelectorError, parse_selector

__all__ = [
    "DEFAULT_LIMITS", "NULL_TAG", "SpecLimits", "YamlSource", "check_size", "check_yaml_limits", "compose_mapping",
    "is_null", "line_of", "suggest",
]  # fmt: skip

NULL_TAG = "tag:yaml.org,2002:null"
_SEL_COMMENT = re.compile(r"^\s*#[^\[\]]*\[([^\[\]]+)\]")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_YAML_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
#: libyaml's parser and composer when PyYAML was built with it (10x faster), else the pure-Python ones.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class SpecLimits:
    """Bounds on a YAML document, checked before it is composed (size) and while it is scanned (the rest).

    They keep one submitted spec from costing the server more than a fraction of a second: a spec
    past any of them is a :class:`~builder.errors.SpecLimitError` naming the line and the limit.
    """

    max_chars: int = 1_000_000
    max_depth: int = 64
    max_nodes: int = 200_000
    max_mapping_keys: int = 10_000
    max_sequence_items: int = 50_000


DEFAULT_LIMITS = SpecLimits()


def _limit_error(what: str, limit: int, name: str, source: str | None, line: int | None, hint: str) -> SpecLimitError:
    return SpecLimitError(
        f"{what} (the limit is {limit:,})",
        file=source,
        line=line,
        hint=hint,
        details={"limit": name, "maximum": limit},
    )


def check_size(text: str, source: str | None, limits: SpecLimits = DEFAULT_LIMITS) -> None:
    """SpecLimitError if ``text`` is longer than ``limits.max_chars``: the first check, before any parsing."""
    if len(text) > limits.max_chars:
        raise _limit_error(
            f"the spec has {len(text):,} characters", limits.max_chars, "max_chars", source, None,
            "an environment spec is a few kilobytes; split generated content into separate environments",
        )  # fmt: skip


def check_yaml_limits(text: str, source: str | None, limits: SpecLimits = DEFAULT_LIMITS) -> None:
    """SpecLimitError if ``text`` is too long, nests too deep or has too many nodes, keys or items.

    One pass over the parser's events (no recursion, no node tree): linear in the document's size,
    stopping at the first limit passed. Syntax errors are left to :func:`compose_mapping`.

    >>> check_yaml_limits("a: " + "[" * 100 + "]" * 100, "env.yml")
    Traceback (most recent call last):
    ...
    envyard.builder.errors.SpecLimitError: env.yml:1: the YAML nests deeper than 64 levels (the limit is 64) (hint: ...)
    """
    check_size(text, source, limits)
    # per open collection, the children it may still take (keys and values count for mappings)
    room: list[int] = []
    mappings: list[bool] = []
    nodes_left = limits.max_nodes
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            kind = type(event)
            if kind is ScalarEvent or kind is AliasEvent or kind is MappingStartEvent or kind is SequenceStartEvent:
                nodes_left -= 1
                if nodes_left < 0:
                    raise _over(limits, "max_nodes", source, event)
                if room:
                    room[-1] -= 1
                    if room[-1] < 0:
                        raise _over(limits, "max_mapping_keys" if mappings[-1] else "max_sequence_items", source,
                                    event)
                if kind is MappingStartEvent or kind is SequenceStartEvent:
                    if len(room) >= limits.max_depth:
                        raise _over(limits, "max_depth", source, event)
                    mapping = kind is MappingStartEvent
                    room.append(2 * limits.max_mapping_keys if mapping else limits.max_sequence_items)
                    mappings.append(mapping)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                room.pop()
                mappings.pop()
    except yaml.YAMLError:
        return  # compose_mapping reports it with its line


_LIMITS = {
    "max_nodes": ("the YAML has more than {:,} nodes", "an environment spec needs far fewer entries"),
    "max_mapping_keys": ("a mapping has more than {:,} keys", "an environment spec needs far fewer keys here"),
    "max_sequence_items": ("a list has more than {:,} items", "an environment spec needs far fewer items here"),
    "max_depth": ("the YAML nests deeper than {} levels", "an environment spec nests a few levels; flatten it"),
}


def _over(limits: SpecLimits, name: str, source: str | None, event: yaml.Event) -> SpecLimitError:
    limit = int(getattr(limits, name))
    message, hint = _LIMITS[name]
    line = int(event.start_mark.line) + 1 if event.start_mark else None
    return _limit_error(message.format(limit), limit, name, source, line, hint)


def line_of(node: Node) -> int:
    """1-based line where ``node`` starts."""
    return int(node.start_mark.line) + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def suggest(word: str, choices: Collection[str]) -> str | None:
    """``did you mean 'x'?`` for the closest of ``choices``, if any is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def compose_mapping(text: str, source: str | None, limits: SpecLimits = DEFAULT_LIMITS) -> MappingNode:
    """The root mapping node of a YAML spec; SpecError for syntax errors, empty or non-mapping files.

    :func:`check_yaml_limits` runs first: nothing past a limit reaches the composer.
    """
    check_yaml_limits(text, source, limits)
    try:
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            if _LOADER is yaml.SafeLoader:
                raise
            root = yaml.compose(text, Loader=yaml.SafeLoader)  # PyYAML's own wording and marks for the error
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        jinja = "{%" in text or "{{" in text
        raise SpecError(
            f"invalid YAML: {exc.problem or exc.context}",
            file=source,
            line=mark.line + 1 if mark else None,
            hint="this looks like a Jinja recipe, not an environment.yml"
            if jinja
            else "check indentation, quoting and ':' near this line",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=source) from None
    if root is None or is_null(root):
        raise SpecError("empty spec", file=source, hint="an environment.yml needs at least 'dependencies:'")
    if not isinstance(root, MappingNode):
        raise SpecError(
            "an environment spec must be a YAML mapping",
            file=source,
            line=line_of(root),
            hint="start with keys like 'name:', 'channels:' and 'dependencies:'",
        )
    return root


@dataclass(frozen=True, slots=True)
class YamlSource:
    """A spec's file name, raw lines and ``environ``: what every node reader needs for errors."""

    file: str | None
    lines: tuple[str, ...]
    environ: Mapping[str, str]

    @classmethod
    def from_text(cls, text: str, *, file: str | None, environ: Mapping[str, str]) -> YamlSource:
        return cls(file, tuple(_YAML_BREAK.split(text)), environ)

    def error(self, message: str, node: Node | None, field: str | None, hint: str | None = None) -> SpecError:
        return SpecError(message, file=self.file, line=line_of(node) if node else None, field=field, hint=hint)

    def scalar(self, node: Node, field: str, what: str = "a string") -> str | None:
        """A scalar's text as written (None for null); SpecError for lists and mappings."""
        if not isinstance(node, ScalarNode):
            raise self.error(f"{field} must be {what}", node, field)
        return None if node.tag == NULL_TAG else str(node.value)

    def sequence(self, node: Node, field: str) -> list[Node]:
        """A list's items (null is the empty list)."""
        if is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(f"{field} must be a list", node, field)
        return list(node.value)

    def mapping(self, node: Node, field: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping (null is empty); duplicate keys are an error."""
        if is_null(node):
            return []
        if not isinstance(node, MappingNode):
            raise self.error(f"{field} must be a mapping", node, field)
        pairs: list[tuple[str, Node, Node]] = []
        seen: set[str] = set()
        for key_node, value in node.value:
            key = self.scalar(key_node, field, "a mapping with string keys")
            if key is None or key in seen:
                raise self.error(f"duplicate or empty key {key!r}", key_node, key or field)
            seen.add(key)
            pairs.append((key, key_node, value))
        return pairs

    def trailing_selector(self, node: Node, field: str) -> str | None:
        """The ``# [selector]`` comment after a scalar item, validated."""
        if not isinstance(node, ScalarNode) or node.style in ("|", ">"):
            return None
        end = node.end_mark
        rest = self.lines[end.line][end.column :] if end.line < len(self.lines) else ""
        match = _SEL_COMMENT.match(rest)
        return self.check_selector(match.group(1).strip(), node, field) if match else None

    def check_selector(self, text: str, node: Node, field: str) -> str:
        """``text`` if it is a valid selector expression, else SpecError at ``node``."""
        try:
            parse_selector(text)
        except SelectorError as exc:
            raise self.error(
                f"invalid selector [{text}]: {exc}",
                node,
                field,
                hint="combine platform names with and/or/not, e.g. [linux and not aarch64]",
            ) from None
        return text

    def expand(self, value: str, node: Node, field: str) -> tuple[str, tuple[str, ...]]:
        """``value`` with ``${VAR}``/``$VAR`` taken from ``environ``, and the names used, in order."""
        used: list[str] = []

        def sub(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.environ:
                raise self.error(
                    f"environment variable {name!r} used in {value!r} is not set",
                    node,
                    field,
                    hint=f"set {name} in the environment of the build",
                )
            used.append(name)
            return self.environ[name]

        return _VAR.sub(sub, value), tuple(dict.fromkeys(used))
