"""Progress reporting: a stage enum and a reporter protocol whose methods default to no-ops.

Builder stages call the reporter; the CLI renders it with rich, the worker
turns it into structured log lines. Library code never prints.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol


class Stage(enum.StrEnum):
    """The stages of a build, in order."""

    PARSE = "parse"
    SOLVE = "solve"
    PIP = "pip"
    LOCK = "lock"
    INSTALL = "install"
    PACK = "pack"
    IMAGE = "image"
    PUSH = "push"


class Reporter(Protocol):
    """Receives progress events; implement only what you need."""

    def stage_started(self, stage: Stage, detail: str = "") -> None: ...

    def stage_finished(self, stage: Stage, detail: str = "", **fields: Any) -> None: ...


class NullReporter:
    """A reporter that ignores everything."""

    def stage_started(self, stage: Stage, detail: str = "") -> None:
        return None

    def stage_finished(self, stage: Stage, detail: str = "", **fields: Any) -> None:
        return None


def format_size(size: int) -> str:
    """A byte count for people (progress lines, error messages, CLI tables).

    >>> format_size(512), format_size(3 * 1024 * 1024)
    ('512 B', '3.0 MiB')
    """
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
