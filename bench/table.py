"""The benchmarks' result table: left-aligned columns under a header, ruled above and below the rows."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    rule = indent + "  ".join("-" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return [line(headers), rule, *(line(row) for row in rows), rule]
