"""Checks of a backward pass that need no finite differences, only more backward passes:

- **layouts**: the upstream gradient as a transposed (permuted) view, expanded with zero
  strides, and sliced with a step, each compared with the backward given the same values
  contiguous: a kernel that reads ``grad_output`` as if it were contiguous fails, named;
- **reentrance**: a second backward with the same upstream gradient agrees within
  ``nondet_tol`` (atomics that add in another order);
- **undefined / zero upstream gradients**: with several outputs, the backward given the
  upstream gradient of one output alone (the others None) plus that given the others
  alone equals the backward given all; with one output, a zero upstream gradient gives 0.

Each failure is one :class:`BackwardCheck` row of the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from handgrad.gradcheck.report import ParameterCheck
from handgrad.gradcheck.verdict import NOISE_FACTOR
from handgrad.interop.torch_tally import Tally, blocks

__all__ = ["BackwardCheck", "backward_checks", "layouts"]

_BLOCK = 2**16  # elements compared at once

Backward = Callable[[list[torch.Tensor | None]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class BackwardCheck(ParameterCheck):
    """A row comparing the backward under ``condition`` (a layout, a second pass, a None
    upstream gradient) with the backward under ``baseline``; ``raised`` holds the error
    when the backward raised under the condition.

    Examples
    --------
    >>> from handgrad.interop.torch_backward import BackwardCheck
    >>> condition = "a transposed grad_output"
    >>> row = BackwardCheck("x", (2,), 1.0, 1.0, (1,), 3.0, 1.0, 1, condition=condition)
    >>> row.describe()[:60]
    "backward check failed for 'x' with a transposed grad_output:"
    """

    condition: str = ""
    baseline: str = "a contiguous grad_output"
    raised: str = ""

    def to_dict(self) -> dict:
        """JSON-ready fields, with the condition, the baseline and what was raised."""
        return {
            **super().to_dict(),
            "condition": self.condition,
            "baseline": self.baseline,
            "raised": self.raised,
        }

    def describe(self) -> str:
        """One sentence: the condition, and where the backward differs or what it raised."""
        verdict = "passed" if self.passed else "failed"
        head = f"backward check {verdict} for {self.name!r} with {self.condition}"
        if self.raised:
            return f"{head}: the backward raised {self.raised}"
        return (
            f"{head}: {self.n_failed} of {self.n_checked} elements differ from those with "
            f"{self.baseline}; worst at index {self.worst_index}: {self.analytic:.6e} "
            f"against {self.numeric:.6e}"
        )


def _transposed(v: torch.Tensor) -> torch.Tensor:
    order = list(range(v.ndim))[::-1]
    return v.permute(order).contiguous().permute(order)


def _expanded(v: torch.Tensor) -> torch.Tensor | None:
    axis = next((a for a in range(v.ndim) if v.shape[a] > 1), None)
    if axis is None:
        return None
    return v.narrow(axis, 0, 1).clone().expand(v.shape)


def _sliced(v: torch.Tensor) -> torch.Tensor:
    wide = torch.zeros((*v.shape[:-1], 2 * v.shape[-1]), dtype=v.dtype, device=v.device)
    wide[..., ::2] = v
    return wide[..., ::2]


_LAYOUTS = {
    "transposed": (_transposed, lambda v: v.ndim >= 2),
    "expanded": (_expanded, lambda v: v.ndim >= 1),
    "sliced": (_sliced, lambda v: v.ndim >= 1 and v.numel() > 0),
}


def _layout(v: torch.Tensor, name: str) -> torch.Tensor | None:
    """``v`` in layout ``name``, on storage of its own, or None where its shape does not
    allow one that is not contiguous."""
    make, fits = _LAYOUTS[name]
    made = make(v) if fits(v) else None
    return made if made is not None and not made.is_contiguous() else None


def layouts(v: torch.Tensor) -> dict[str, torch.Tensor]:
    """``v``'s layouts that are not contiguous, by name (those its shape allows), each on
    storage of its own.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_backward import layouts
    >>> {name: (t.stride(), t.is_contiguous()) for name, t in layouts(torch.ones(2, 3)).items()}
    {'transposed': ((1, 2), False), 'expanded': ((0, 1), False), 'sliced': ((6, 2), False)}
    """
    found = {name: _layout(v, name) for name in _LAYOUTS}
    return {name: t for name, t in found.items() if t is not None}


def _strides(views: list[torch.Tensor]) -> str:
    return ", ".join(str(tuple(v.stride())) for v in views)


def _compare(
    got: torch.Tensor, want: torch.Tensor, threshold: float, floor: float, tally: Tally
) -> None:
    """``got`` against ``want``, block by block, into ``tally``."""
    pairs = zip(blocks(got, _BLOCK), blocks(want, _BLOCK), strict=True)
    for (start, a), (_, b) in pairs:
        gap, size = np.abs(a - b), np.abs(a) + np.abs(b)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = gap / np.maximum(size, 1e-300)
        rel[np.isnan(rel)] = np.inf
        failed = (gap > np.maximum(threshold * size, floor)) | ~np.isfinite(a)
        tally.add(start, a, b, rel, failed)


def _rows(
    got: dict[str, torch.Tensor] | Exception,
    want: dict[str, torch.Tensor],
    condition: str,
    baseline: str,
    threshold: float,
    unit: float,
    absolute: float,
) -> list[BackwardCheck]:
    """The failed rows: per tensor, where ``got`` differs from ``want`` (in blocks: a
    row's every-element differences are kept only when it fails)."""
    rows = []
    for name, w in want.items():
        shape = tuple(w.shape)
        if isinstance(got, Exception):
            text = str(got).splitlines()[0] if str(got) else ""
            rows.append(
                BackwardCheck(
                    name,
                    shape,
                    np.nan,
                    np.nan,
                    (),
                    np.nan,
                    np.nan,
                    max(w.numel(), 1),
                    condition=condition,
                    baseline=baseline,
                    raised=f"{type(got).__name__}: {text[:200]}",
                )
            )
            continue
        top = max((float(np.max(np.abs(b))) for _, b in blocks(w, _BLOCK)), default=0.0)
        floor = max(NOISE_FACTOR * unit * top, absolute)
        count = Tally(name, shape, keep_errors=False)
        _compare(got[name], w, threshold, floor, count)
        if count.n_failed:
            tally = Tally(name, shape)
            _compare(got[name], w, threshold, floor, tally)
            row = tally.row()
            rows.append(
                BackwardCheck(
                    **{f: getattr(row, f) for f in ParameterCheck.__dataclass_fields__},
                    condition=condition,
                    baseline=baseline,
                )
            )
    return rows


def _attempt(backward: Backward, upstream: list) -> dict[str, torch.Tensor] | Exception:
    try:
        return backward(upstream)
    except Exception as err:  # the backward's own failure is the finding, reported
        return err


def backward_checks(
    backward: Backward,
    upstream: list[torch.Tensor],
    analytic: dict[str, torch.Tensor],
    threshold: float,
    unit: float,
    nondet_tol: float,
    check_layouts: bool,
    check_undefined: bool = True,
) -> tuple[list[BackwardCheck], list[str]]:
    """The failed rows of every backward check, and notes of what was checked.

    ``backward(upstream)`` gives the gradients for upstream gradients ``upstream`` (one per
    output, None for none; it is given ``upstream`` itself, so it copies what a backward
    might write into); ``analytic`` is what it gave for ``upstream``, contiguous.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_backward import backward_checks
    >>> x = torch.randn(3, 4, dtype=torch.float64)
    >>> def backward(vs):  # y = 2 x, right in every layout
    ...     return {"x": 2 * vs[0]}
    >>> v = torch.randn(3, 4, dtype=torch.float64)
    >>> rows, notes = backward_checks(backward, [v], {"x": 2 * v}, 1e-6, 2.0**-52, 0.0, True)
    >>> rows, notes[0]
    ([], 'grad_output transposed, expanded, sliced: the backward agrees with a contiguous one')
    """
    rows: list[BackwardCheck] = []
    notes: list[str] = []
    again = _attempt(backward, list(upstream))  # backward copies a contiguous one itself
    rows += _rows(again, analytic, "a second backward pass", "the first pass", 0.0, 0.0, nondet_tol)
    del again  # one layout, one backward alive at a time
    if check_layouts:
        names = [n for n in _LAYOUTS if any(_layout(v, n) is not None for v in upstream)]
        for name in names:
            views = [v if (t := _layout(v, name)) is None else t for v in upstream]
            want = analytic
            if name == "expanded":  # other values: the backward given them contiguous
                want = _attempt(backward, [v.contiguous() for v in views])
            if isinstance(want, Exception):
                continue  # the contiguous values fail too: the first-order rows show it
            condition = f"grad_output {name} (strides {_strides(views)})"
            rows += _rows(
                _attempt(backward, views),
                want,
                condition,
                "a contiguous grad_output",
                threshold,
                unit,
                nondet_tol,
            )
        if names:
            notes.append(
                f"grad_output {', '.join(names)}: the backward agrees with a contiguous one"
                if not rows
                else f"grad_output layouts checked: {', '.join(names)}"
            )
    if check_undefined and len(upstream) > 1:
        for j in range(len(upstream)):
            alone = [v if i == j else None for i, v in enumerate(upstream)]
            others = [None if i == j else v for i, v in enumerate(upstream)]
            got_alone, got_others = _attempt(backward, alone), _attempt(backward, others)
            failed = next((g for g in (got_alone, got_others) if isinstance(g, Exception)), None)
            total = failed or {n: got_alone[n] + got_others[n] for n in analytic}
            rows += _rows(
                total,
                analytic,
                f"grad_output None for outputs other than [{j}], then for [{j}]",
                "all grad_outputs at once",
                threshold,
                unit,
                nondet_tol,
            )
    elif check_undefined:
        zero = _attempt(backward, [torch.zeros_like(upstream[0])])
        rows += _rows(
            zero,
            {n: torch.zeros_like(a) for n, a in analytic.items()},
            "a zero grad_output",
            "zero",
            0.0,
            0.0,
            nondet_tol,
        )
    return rows, notes
