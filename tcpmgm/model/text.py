"""Aligned plain-text tables, for the CLI, the demo and the benchmark."""

from collections.abc import Sequence
from typing import Any


def aligned(rows: Sequence[Sequence[Any]], *, right: bool = False) -> str:
    """``rows`` (the first one the header) as aligned columns under a dashed rule.

    ``None`` shows as an empty cell; ``right`` aligns numbers to the right.
    """
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    pad = str.rjust if right else str.ljust
    lines = ["  ".join(pad(cell, width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
