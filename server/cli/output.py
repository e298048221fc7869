"""Plain-text output helpers shared by the CLI commands."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

GAP = "  "
# The width of output that goes to a pipe or a file, when COLUMNS does not say.
NOT_A_TERMINAL_WIDTH = 100


def terminal_width() -> int:
    """The columns output should fit: COLUMNS when set, else the terminal's width, else
    NOT_A_TERMINAL_WIDTH (stdout is a pipe or a file)."""
    return shutil.get_terminal_size((NOT_A_TERMINAL_WIDTH, 24)).columns


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows under a header, each column as wide as its widest cell."""
    lines = table_lines(header, rows)
    assert lines is not None  # without a width nothing is refused
    for line in lines:
        print(line)


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return widths


def _joined(cells: Sequence[str], widths: Sequence[int]) -> str:
    return GAP.join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


def table_lines(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int | None = None,
    min_last: int = 1,
) -> list[str] | None:
    """The lines of a table, each column as wide as its widest cell. With `width`, the last
    column is wrapped into the columns the others leave it; None when that is fewer than
    `min_last` (and than its longest cell) or than its header: the table does not fit."""
    widths = _widths(header, rows)
    if width is None:
        return [_joined(row, widths) for row in [header, *rows]]
    indent = sum(widths[:-1]) + len(GAP) * (len(widths) - 1)
    room = width - indent
    if room < widths[-1] and (room < min_last or room < len(header[-1])):
        return None
    room = min(room, widths[-1])
    lines = []
    for row in [header, *rows]:
        first, *rest = textwrap.wrap(row[-1], room) or [""]
        lines.append(_joined([*row[:-1], first], [*widths[:-1], room]))
        lines.extend(" " * indent + piece for piece in rest)
    return lines


def stacked_lines(
    header: Sequence[str], rows: Sequence[Sequence[str]], width: int, indent: int = 4
) -> list[str]:
    """The lines of a table whose last column goes under each row, indented and wrapped to
    `width`, for a terminal too narrow to hold it beside the others (as `apt search` shows a
    package's summary)."""
    widths = _widths(header[:-1], [row[:-1] for row in rows])
    lines = []
    for row in [header, *rows]:
        lines.append(_joined(row[:-1], widths))
        pieces = textwrap.wrap(row[-1], max(width - indent, 1))
        lines.extend(" " * indent + piece for piece in pieces)
    return lines
