"""The benchmarks' result table: left-aligned columns under a header, ruled above and below the rows, then
notes and a summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass


@dataclass
class Row:
    label: str
    ours: str
    baseline: str
    ratio: str
    target: str
    result: str


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    rule = indent + "  ".join("-" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return [line(headers), rule, *(line(row) for row in rows), rule]


def report_lines(headers: Sequence[str], rows: Sequence[Row], notes: Sequence[str],
                 summary: Sequence[str]) -> list[str]:
    """A blank line, the table of ``rows``, the notes, a blank line and the summary."""
    return ["", *format_table(headers, [astuple(r) for r in rows]), *(f"note: {n}" for n in notes), "", *summary]
