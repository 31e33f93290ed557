"""Inline pip ``-r FILE`` includes into a spec's text, on the user's own disk, before it is sent to a server.

A server never reads files named by a spec (:class:`~builder.errors.SpecIncludeError`), so the
CLI expands them first: each ``-r FILE`` line of a ``- pip:`` list (or of a requirements file)
becomes the lines of FILE (comments and blank lines dropped, continuations joined, nested
``-r`` expanded the same way), with the item's selector kept. Everything else of the text is
left as written; a spec without includes comes back unchanged.

>>> import tempfile, pathlib
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "reqs.txt").write_text("requests>=2  # http\\n\\nrich\\n")
>>> print(inline_includes("dependencies:\\n  - pip:\\n    - -r reqs.txt  # [linux]\\n", tmp / "env.yml"), end="")
dependencies:
  - pip:
    - "requests>=2"  # [linux]
    - "rich"  # [linux]
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from envyard.builder.errors import SpecError
from envyard.builder.spec import detect_input_kind
from envyard.builder.spec_pip import MAX_INCLUDE_DEPTH, logical_lines, read_text
from envyard.builder.spec_yaml import compose_mapping, line_of

__all__ = ["inline_includes"]

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ITEM_PREFIX = re.compile(r"^\s*-\s+(sel\([^)]*\)\s*:\s+)?$")


def _include_target(text: str) -> str | None:
    """FILE of a line that is exactly ``-r FILE`` / ``--requirement FILE`` (any spelling), else None."""
    text = _COMMENT.sub("", text).strip()
    if not text.startswith(("-r", "--requirement")):
        return None
    try:
        tokens = shlex.split(text)
    except ValueError:
        return None
    first = tokens[0]
    if first in ("-r", "--requirement") and len(tokens) == 2:
        return tokens[1]
    if len(tokens) == 1 and first.startswith("--requirement="):
        return first.partition("=")[2]
    if len(tokens) == 1 and first.startswith("-r") and not first.startswith("--"):
        return first[2:].lstrip("=")
    return None


def _expand(target: str, base: Path, root: Path, file: str, line: int | None, depth: int) -> list[str]:
    """The requirement lines of ``target`` (relative to ``base``), nested includes expanded."""
    if "://" in target:
        raise SpecError(f"remote requirements files are not supported: {target!r}", file=file, line=line,
                        field="pip", hint="copy the requirements into the spec")
    if depth >= MAX_INCLUDE_DEPTH:
        raise SpecError(f"'-r {target}' nests requirement files more than {MAX_INCLUDE_DEPTH} deep", file=file,
                        line=line, field="pip", hint="check for a cycle of -r includes")
    path = base / target
    if not path.resolve().is_relative_to(root):
        raise SpecError(f"'-r {target}' points outside the spec's directory", file=file, line=line, field="pip",
                        hint="keep included requirement files next to the spec")
    lines: list[str] = []
    for number, text in logical_lines(read_text(path, file=file, line=line, field="pip")):
        text = _COMMENT.sub("", text).strip()
        nested = _include_target(text) if text else None
        if nested is not None:
            lines += _expand(nested, path.parent, root, str(path), number, depth + 1)
        elif text:
            lines.append(text)
    return lines


def _pip_items(root: MappingNode) -> list[ScalarNode]:
    """The scalar items of every ``- pip:`` list (and the values of their ``- sel(...): line`` items)."""
    found: list[ScalarNode] = []
    for key, deps in root.value:
        if not (isinstance(key, ScalarNode) and key.value == "dependencies" and isinstance(deps, SequenceNode)):
            continue
        for dep in deps.value:
            if not isinstance(dep, MappingNode) or len(dep.value) != 1:
                continue
            pip_key, items = dep.value[0]
            if not (isinstance(pip_key, ScalarNode) and pip_key.value == "pip" and isinstance(items, SequenceNode)):
                continue
            for item in items.value:
                node: Node = item.value[0][1] if isinstance(item, MappingNode) and len(item.value) == 1 else item
                if isinstance(node, ScalarNode):
                    found.append(node)
    return found


def _inline_yaml(text: str, spec: Path, root: Path) -> str:
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []
    for node in _pip_items(compose_mapping(text, str(spec))):
        target = _include_target(str(node.value))
        if target is None:
            continue
        first, last = node.start_mark.line, node.end_mark.line
        prefix = lines[first][: node.start_mark.column]
        if not _ITEM_PREFIX.match(prefix) or node.style in ("|", ">"):
            raise SpecError(f"cannot inline '-r {target}' written in this form", file=str(spec), line=line_of(node),
                            field="pip", hint="write the pip section as a block list with one '- -r FILE' item")
        suffix = lines[last][node.end_mark.column :].rstrip("\r\n") if last < len(lines) else ""
        ending = "\r\n" if lines[last].endswith("\r\n") else "\n"
        expanded = _expand(target, spec.parent, root, str(spec), line_of(node), 0)
        edits.append((first, last, [f"{prefix}{json.dumps(r)}{suffix}{ending}" for r in expanded]))
    for first, last, new in sorted(edits, reverse=True):
        lines[first : last + 1] = new
    return "".join(lines)


def _inline_requirements(text: str, spec: Path, root: Path) -> str:
    out: list[str] = []
    changed = False
    for number, line in logical_lines(text):
        target = _include_target(line)
        if target is None:
            out.append(line)
        else:
            out += _expand(target, spec.parent, root, str(spec), number, 0)
            changed = True
    return "\n".join(out) + "\n" if changed else text


def inline_includes(text: str, spec: Path) -> str:
    """``text`` (the spec file ``spec``) with every pip ``-r FILE`` replaced by FILE's requirement lines."""
    kind = detect_input_kind(spec, text)
    if "-r" not in text and "--requirement" not in text or kind not in ("environment", "requirements"):
        return text
    root = spec.parent.resolve()
    return _inline_yaml(text, spec, root) if kind == "environment" else _inline_requirements(text, spec, root)
