"""Plain-text tables and the cell formats the commands share (``audit``, ``history``, ...).

Only the layout lives here: commands decide what the columns are and how many digits a value
deserves. Output is pure ASCII-safe text with no colour or terminal control codes, so it reads
the same in a terminal, a log file and a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ALIGNMENTS = ("left", "right")
MISSING = "-"
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Column:
    """A table column: its header and how its cells line up (``right`` for numbers)."""

    header: str
    align: str = "left"

    def __post_init__(self) -> None:
        if not isinstance(self.header, str):
            raise TypeError(f"a column header is text, got {type(self.header).__name__}")
        if self.align not in ALIGNMENTS:
            raise ValueError(f"column alignment must be one of {ALIGNMENTS}, got {self.align!r}")


def render_table(columns: Sequence[Column | str], rows: Sequence[Sequence[Any]], *, indent: int = 0) -> str:
    """Lay rows out under their headers, two spaces between columns, a dashed rule under the
    header. Cells are formatted with :func:`cell_text`; a ``str`` column is left-aligned.

    Returns the table without a trailing newline (the header alone when ``rows`` is empty).
    """
    columns = tuple(column if isinstance(column, Column) else Column(column) for column in columns)
    if not columns:
        raise ValueError("a table needs at least one column")
    if not isinstance(indent, int) or indent < 0:
        raise ValueError(f"indent must be a non-negative integer, got {indent!r}")
    texts = []
    for number, row in enumerate(rows):
        row = tuple(row)
        if len(row) != len(columns):
            raise ValueError(f"row {number} has {len(row)} cells for {len(columns)} columns")
        texts.append([cell_text(value) for value in row])
    widths = [max([len(column.header), *(len(row[i]) for row in texts)]) for i, column in enumerate(columns)]
    margin = " " * indent

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if column.align == "right" else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns)
        ]
        return (margin + "  ".join(parts)).rstrip()

    lines = [line([column.header for column in columns]), margin + "  ".join("-" * width for width in widths)]
    lines.extend(line(row) for row in texts)
    return "\n".join(lines)


def render_pairs(pairs: Mapping[str, Any] | Sequence[tuple[str, Any]], *, indent: int = 0) -> str:
    """``key  value`` lines with the values aligned (a config summary, a totals block)."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else [tuple(pair) for pair in pairs]
    if not items:
        return ""
    width = max(len(str(key)) for key, _ in items)
    margin = " " * indent
    return "\n".join(f"{margin}{str(key).ljust(width)}  {cell_text(value)}".rstrip() for key, value in items)


def cell_text(value: Any) -> str:
    """The text of one cell: ``-`` for None or NaN, ``yes``/``no`` for booleans, floats with six
    significant digits, datetimes as ``YYYY-MM-DD HH:MM:SS`` UTC, sequences joined with ``,``."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return ",".join(cell_text(item) for item in items) or MISSING
    return " ".join(str(value).split())  # one line per cell, whatever the value holds


def format_time(value: datetime) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS`` in UTC (a naive time is taken to be UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def format_bytes(count: int | None) -> str:
    """A byte count for people: ``812 B``, ``1.50 KiB``, ``3.20 MiB`` (binary units)."""
    if count is None:
        return MISSING
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"a byte count is a non-negative integer, got {count!r}")
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _BYTE_UNITS[1:]:
        value /= 1024.0
        if value < 1024.0 or unit == _BYTE_UNITS[-1]:
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_number(value: float | None, digits: int = 4) -> str:
    """A float with ``digits`` decimals (``-`` for None or NaN), for columns that line up."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"
