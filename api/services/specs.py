"""Specs checked at submission: a bad spec is a 422 naming the line, not a failed build minutes later."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from builder.errors import SpecError
from builder.lock import DEFAULT_PLATFORMS
from builder.model import SUPPORTED_PLATFORMS
from builder.spec import detect_input_kind, parse_environment_yaml, parse_requirements_txt


class _AnyVariable(Mapping[str, str]):
    """Every ``${VAR}`` counts as set: workers expand them from their own environment at build time."""

    def __getitem__(self, key: str) -> str:
        return "variable"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True


def resolve_platforms(filename: str, text: str, platforms: Sequence[str]) -> list[str]:
    """Parse the spec (or lockfile) and return the platforms its build targets, validated."""
    kind = detect_input_kind(filename, text)
    if kind in ("environment", "requirements"):
        parse = parse_environment_yaml if kind == "environment" else parse_requirements_txt
        spec = parse(text, source=filename, environ=_AnyVariable())
        chosen = list(platforms) or list(spec.platforms) or list(DEFAULT_PLATFORMS)
    else:
        from builder.lockfiles import read_lockfile

        with tempfile.TemporaryDirectory(prefix="envyard-spec-") as tmp:
            path = Path(tmp) / filename
            path.write_text(text)
            lock = read_lockfile(path)
        locked = set(lock.platforms)
        missing = [p for p in platforms if p not in locked]
        if missing:
            raise SpecError(f"the lockfile has no {', '.join(missing)} section", file=filename, field="platforms",
                            hint=f"it locks {', '.join(sorted(locked))}; relock for the other platforms")
        chosen = list(platforms) or sorted(locked)
    for platform in chosen:
        if platform not in SUPPORTED_PLATFORMS:
            raise SpecError(f"unknown platform '{platform}'", file=filename, field="platforms",
                            hint="use one of: " + ", ".join(SUPPORTED_PLATFORMS))
    return sorted(set(chosen))
