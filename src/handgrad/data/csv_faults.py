"""Finding the fault in a CSV file that the vectorised reader refused, a block of lines at a
time: every block through ``numpy.loadtxt`` again, and only a block that it refuses through
the reference reader's own checks, so that the error is the one the reference reader gives
for the whole file, for about the time of one vectorised pass and the memory of one block.

The reference reader reports a ragged row first (anywhere in the file), then the first bad
feature cell, then the first missing label, then the first unknown class: the blocks are
read in order, the first fault of each rank kept, and the lowest rank reported.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator

__all__ = ["find_fault"]

_BLOCK_BYTES = 2**18  # about 1,000 rows of 20 numbers: the cell-by-cell check of one is quick
# the faults of one block, by rank (0 first); None: only the reference reader can tell
BlockCheck = Callable[[str, int], "dict[int, str] | None"]


class _NotPlainError(Exception):
    """A block holds what only the reference reader reads: a quote, a NUL, a lone carriage
    return, bytes that are not UTF-8."""


def find_fault(path: str | os.PathLike, skip_lines: int, check: BlockCheck) -> str | None:
    """The message of the fault that the reference reader reports first in the data rows
    of ``path`` (after its first ``skip_lines`` lines), ``check(text, first_row)`` giving
    each block's faults; None when there is none, or when only the reference reader can
    tell (it then reads the whole file).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_faults import find_fault
    >>> path = Path(tempfile.mkdtemp()) / "data.csv"
    >>> _ = path.write_text("a,t\\n1,x\\nNA,y\\n")
    >>> def check(text, first_row):  # a bad cell is a fault of rank 1
    ...     rows = text.splitlines()
    ...     bad = [n for n, row in enumerate(rows, first_row) if row.startswith("NA")]
    ...     return {1: f"row {bad[0]} is missing"} if bad else {}
    >>> find_fault(path, 1, check)
    'row 3 is missing'
    """
    found: dict[int, str] = {}
    try:
        for first_row, text in _blocks(path, skip_lines):
            faults = check(text, first_row)
            if faults is None:
                return None
            for rank, message in faults.items():
                found.setdefault(rank, message)
            if 0 in found:  # nothing outranks the first ragged row
                break
    except (_NotPlainError, OSError):
        return None
    return found[min(found)] if found else None


def _blocks(path: str | os.PathLike, skip_lines: int) -> Iterator[tuple[int, str]]:
    """The data rows as blocks of whole lines, decoded, with the row number of each block's
    first line (a row is a line here: no quotes, no lone carriage returns)."""
    with open(path, "rb") as file:
        if file.read(3) != codecs.BOM_UTF8:
            file.seek(0)
        for _ in range(skip_lines):  # the header (quotes allowed), lines as csv counts them
            line = file.readline()
            if line.count(b"\r") != line.count(b"\r\n"):
                raise _NotPlainError
        row, rest = skip_lines + 1, b""
        while True:
            data = file.read(_BLOCK_BYTES)
            last = not data
            data = rest + data
            cut = len(data) if last else data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            if block:
                yield row, _plain_text(block)
                row += block.count(b"\n")
            if last:
                return


def _plain_text(block: bytes) -> str:
    if b'"' in block or b"\x00" in block or block.count(b"\r") != block.count(b"\r\n"):
        raise _NotPlainError
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        raise _NotPlainError from None
