"""A report's row built block by block, so that a check of a large tensor holds the
row's every-element relative differences (for :meth:`GradientCheckReport.plot`) and no
other array of the tensor's size: counts, the worst element and the largest difference
are kept as the blocks go by. The row equals
:func:`handgrad.gradcheck.report.summarize` of the whole arrays at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from handgrad.gradcheck.report import Kink, ParameterCheck

__all__ = ["Tally", "blocks"]


def blocks(t: torch.Tensor, block: int) -> Iterator[tuple[int, np.ndarray]]:
    """``t`` flattened, in float64 NumPy blocks of ``block`` elements: (start, values).

    Only one block is ever converted (to float64, to the host) at a time.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_tally import blocks
    >>> [(start, part.tolist()) for start, part in blocks(torch.arange(5.0), 2)]
    [(0, [0.0, 1.0]), (2, [2.0, 3.0]), (4, [4.0])]
    """
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), block):
        yield start, flat[start : start + block].to(torch.float64).cpu().numpy()


class Tally:
    """One row of a tensor of ``shape``, from blocks given in order by :meth:`add`;
    with ``keep_errors=False`` without its every-element differences (for counting).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.interop.torch_tally import Tally
    >>> tally = Tally("w", (2, 2))
    >>> a, n = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, -3.0, 4.0])
    >>> rel = np.array([0.0, 0.0, 1.0, 0.0])
    >>> tally.add(0, a[:3], n[:3], rel[:3], rel[:3] > 0.5)
    >>> tally.add(3, a[3:], n[3:], rel[3:], rel[3:] > 0.5)
    >>> row = tally.row()
    >>> row.n_failed, row.worst_index, row.numeric, row.max_abs_diff
    (1, (1, 0), -3.0, 6.0)
    """

    def __init__(self, name: str, shape: tuple[int, ...], keep_errors: bool = True) -> None:
        self.name, self.shape = name, shape
        self.size = int(np.prod(shape, dtype=np.int64))
        # every element's relative difference (0 at ignored ones), or None: counts only
        self.errors = np.zeros(self.size) if keep_errors else None
        self.n_failed, self.second_looks = 0, 0
        self.max_abs_diff = 0.0
        self.kinks: list[Kink] = []
        self.first: tuple[float, float] | None = None  # element 0: the worst when none counts
        self.worst: tuple[float, int, float, float] | None = None  # rel, index, a, n

    def add(
        self,
        start: int,
        analytic: np.ndarray,
        numeric: np.ndarray,
        rel: np.ndarray,
        failed: np.ndarray,
        ignored: np.ndarray | None = None,
        slopes: np.ndarray | None = None,
    ) -> None:
        """The elements ``start, start + 1, ...``; ``ignored`` ones (kinks, with their
        one-sided ``slopes``) count in neither the largest difference nor ``rel``."""
        if start == 0 and analytic.size:
            self.first = (float(analytic[0]), float(numeric[0]))
        diff = np.abs(analytic - numeric)
        counted = np.ones(rel.size, bool) if ignored is None else ~ignored
        if ignored is not None and np.any(ignored):
            diff[ignored] = 0.0
            rel = np.where(ignored, 0.0, rel)
            for i in np.flatnonzero(ignored):
                where = tuple(int(k) for k in np.unravel_index(start + int(i), self.shape))
                left, right = (float(s) for s in slopes[i])
                self.kinks.append(Kink(where, float(analytic[i]), left, right))
        if self.errors is not None:
            self.errors[start : start + rel.size] = rel
        if diff.size:
            self.max_abs_diff = float(np.maximum(self.max_abs_diff, np.max(diff)))
        self.n_failed += int(np.count_nonzero(failed))
        if np.any(counted):
            rows = np.flatnonzero(counted)
            i = int(rows[np.argmax(rel[rows])])
            if self.worst is None or rel[i] > self.worst[0]:
                self.worst = (float(rel[i]), start + i, float(analytic[i]), float(numeric[i]))

    def row(self, method: str | None = None) -> ParameterCheck:
        """The row, as :func:`~handgrad.gradcheck.report.summarize` gives it."""
        kinks = tuple(self.kinks)
        if self.size == 0:
            empty = (self.name, self.shape, 0.0, 0.0, (), 0.0, 0.0, 0)
            return ParameterCheck(*empty, checked=0, method=method, kinks=kinks)
        rel, index, a, n = self.worst or (0.0, 0, *self.first)
        where = np.unravel_index(index, self.shape) if self.shape else ()
        return ParameterCheck(
            name=self.name,
            shape=self.shape,
            max_abs_diff=self.max_abs_diff,
            max_rel_diff=rel,
            worst_index=tuple(int(i) for i in where),
            analytic=a,
            numeric=n,
            n_failed=self.n_failed,
            checked=self.size,
            errors=self.errors,
            method=method,
            kinks=kinks,
            second_looks=self.second_looks,
        )
