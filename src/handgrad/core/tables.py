"""Plain-text tables for reports: left-aligned text, right-aligned numbers."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return ``rows`` under ``headers`` as aligned columns; a column whose cells are all
    numbers is right-aligned.

    Examples
    --------
    >>> from handgrad.core.tables import format_table
    >>> print(format_table(["split", "loss"], [["train", "0.25"], ["validation", "1.5"]]))
    split       loss
    train       0.25
    validation   1.5
    """
    columns = list(zip(headers, *rows, strict=True)) if rows else [(h,) for h in headers]
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [
        bool(rows) and all(_looks_numeric(cell) for cell in column[1:]) for column in columns
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
