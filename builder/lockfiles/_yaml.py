"""YAML for the lockfile readers and writers: scalars written by hand, errors that point at a line.

>>> [yaml_scalar(s) for s in ("1.10", "3.12.*", "*", ">=1.2", "true", "", "2024a", "1e3")]
["'1.10'", '3.12.*', "'*'", "'>=1.2'", "'true'", "''", '2024a', "'1e3'"]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from os import PathLike

import yaml

from envyard.builder.errors import LockfileError

_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# What a YAML 1.2 (core schema) reader would take for a number although PyYAML does not.
_YAML12_NUMBER = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_ESCAPES = {"\0": "\\0", "\t": "\\t", "\n": "\\n", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _double_quoted(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code <= 0x7E:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


@lru_cache(maxsize=65536)
def yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar that every YAML reader reads back as this very string.

    Plain where PyYAML would write it plain, single-quoted where it would quote, and
    double-quoted (escaped) for anything that is not printable ASCII.
    """
    if not text:
        return "''"
    if not (text.isascii() and text.isprintable()):
        return _double_quoted(text)
    first, second = text[0], text[1:2]
    needs_quotes = (
        first in "#,[]{}&*!|>'\"%@`"
        or (first in "?:-" and second in ("", " "))
        or text.startswith(("---", "..."))
        or first == " "
        or text[-1] in " :"
        or ": " in text
        or " #" in text
        or _RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) != _STR_TAG  # type: ignore[no-untyped-call]
        or _YAML12_NUMBER.fullmatch(text) is not None
    )
    if not needs_quotes:
        return text
    return "'" + text.replace("'", "''") + "'"


# --- errors ---------------------------------------------------------------------------------

YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_error(exc: yaml.YAMLError, source: str | PathLike[str]) -> LockfileError:
    """A :class:`LockfileError` for YAML that does not parse, pointing at the bad line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return LockfileError(
        f"not valid YAML: {problem}",
        file=source,
        line=mark.line + 1 if mark is not None else None,
        hint="the file is truncated or was edited by hand; regenerate it with `envyard lock`",
    )


def yaml_line(text: str, path: Iterable[str | int]) -> int | None:
    """1-based line of the node at ``path`` (mapping keys / list indexes) in YAML ``text``.

    Where the path ends early (a missing key), the line of the deepest node that exists.

    >>> yaml_line("a:\\n  b:\\n  - x\\n  - y\\n", ("a", "b", 1)), yaml_line("a:\\n  b: 1\\n", ("a", "c"))
    (4, 2)
    """
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.YAMLError:
        return None
    found = node
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if node is None:
            break
        found = node
    return found.start_mark.line + 1 if found is not None else None
