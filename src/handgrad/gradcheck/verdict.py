"""Deciding each element (or random direction): a first look with the chosen stencil at
step ``h``, and for every element it does not settle a second look that resolves small
gradients and names kinks.

The loss along one element is a function of one variable, ``t -> L(p + t e)``. Each
estimate is ``sum_k w_k L(t_k) / sum_k w_k t_k`` over the displacements ``t_k`` as stored,
so it compares with the analytic value exactly; its rounding noise is
``NOISE_FACTOR * machine_eps * scale * sum|w| / |sum w t|``, where ``scale`` is the size of
the terms the loss change was computed from (per element for a layer).

First look: an element passes when ``|a - n| <= threshold * (|a| + |n|)``. Every other
element, also one inside the noise floor, gets a second look at 0, +-h/2, +-h and, with
the 4-point stencil, at +-H/2, +-H, +-2H (``H = 1e-3`` in float64: a thousand times less
noise):

1. if the 4-point estimates at H and H/2 agree with the Richardson estimate at h, the
   element passes when the one at H/2 matches ``a`` within its noise and truncation;
2. else, if the central estimates at h and h/2 disagree, or the jump between the
   one-sided slopes does not shrink with the step, the loss is not differentiable near
   the element (a kink): it passes, named, when ``a`` lies between the one-sided slopes,
   and fails otherwise;
3. else, if the H scale is unusable (a kink or steep curvature there, or a non-finite
   loss), the Richardson estimate at h decides, within its noise;
4. else the element fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad.gradcheck.finite_differences import Stencil

__all__ = ["NOISE_FACTOR", "Decision", "Lines", "decide"]

NOISE_FACTOR = 16.0
# the second look's displacements, in column order: (step "h" or "H", multiple of it)
_SECOND_LOOK = (
    ("h", 0.0),
    ("h", 0.5),
    ("h", -0.5),
    ("h", 1.0),
    ("h", -1.0),
    ("H", 0.5),
    ("H", -0.5),
    ("H", 1.0),
    ("H", -1.0),
    ("H", 2.0),
    ("H", -2.0),
)
_FINE = 5  # the first five columns are on the h scale
_FOUR_POINT = (-1 / 12, 8 / 12, -8 / 12, 1 / 12)  # at offsets (2, 1, -1, -2) x the step
_JUMP_KEPT = 0.25  # a kink's one-sided jump stays as the step halves; a smooth one halves

Evaluate = Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, ...]]


@dataclass
class Lines:
    """The elements (or directions) to decide and how to evaluate the loss along them.

    ``evaluate(rows, nominal, strict)`` returns, for the lines ``rows`` displaced by the
    ``nominal`` amounts (one row per line, one column per displacement): the loss changes
    ``L``, the noise scales (one per line), the displacements as stored ``D`` and the
    analytic changes ``A`` (``a * D`` for an element). With ``strict`` a non-finite loss
    raises. ``h`` and ``big`` are the first and second look's steps per line.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.verdict import Lines
    >>> def evaluate(rows, nominal, strict):  # L(t) = sin(t) around 0, analytic 1
    ...     return np.sin(nominal), np.ones(rows.size), nominal, nominal
    >>> Lines(evaluate, np.array([1e-6]), np.array([1e-3])).h
    array([1.e-06])
    """

    evaluate: Evaluate
    h: np.ndarray
    big: np.ndarray


@dataclass
class Decision:
    """Per line: the numeric and analytic values reported, the relative difference, and
    whether it failed or sits at a kink (with the one-sided slopes there). See
    :func:`decide`."""

    numeric: np.ndarray
    analytic: np.ndarray
    rel: np.ndarray
    failed: np.ndarray
    kink: np.ndarray
    slopes: np.ndarray  # (n, 2): left and right one-sided slopes, at kinks
    second_looks: int


@dataclass
class _Estimate:
    """One stencil's numeric estimate, the analytic value it compares with, and its noise."""

    numeric: np.ndarray
    analytic: np.ndarray
    noise: np.ndarray

    @property
    def off(self) -> np.ndarray:
        return self.numeric - self.analytic

    def agrees(self, threshold: float, absolute: np.ndarray) -> np.ndarray:
        """``|numeric - analytic| <= max(threshold * (|a| + |n|), absolute)``."""
        size = np.abs(self.numeric) + np.abs(self.analytic)
        return np.abs(self.off) <= np.maximum(threshold * size, absolute)

    def apart(self, other: _Estimate, threshold: float) -> np.ndarray:
        """The two numeric estimates disagree beyond their noise and the threshold."""
        size = np.abs(self.numeric) + np.abs(other.numeric)
        limit = np.maximum(threshold * size, 2 * (self.noise + other.noise))
        return np.abs(self.off - other.off) > limit


def _stencil(L, A, D, noise_unit, columns, weights) -> _Estimate:
    w = np.asarray(weights)
    if columns is not None:  # None: every column, in order
        L, A, D = L[:, columns], A[:, columns], D[:, columns]
    den = D @ w
    with np.errstate(divide="ignore", invalid="ignore"):  # a step lost in rounding: NaN
        return _Estimate((L @ w) / den, (A @ w) / den, noise_unit * np.sum(np.abs(w)) / np.abs(den))


def _relative(e: _Estimate, absolute: np.ndarray, threshold: float) -> np.ndarray:
    scale = np.maximum(np.abs(e.analytic) + np.abs(e.numeric), absolute / threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, np.abs(e.off) / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isnan(rel), np.inf, rel)


def decide(lines: Lines, stencil: Stencil, unit: float, threshold: float) -> Decision:
    """Decide every line: the first look, then the second for those it leaves open.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import make_stencil
    >>> from handgrad.gradcheck.verdict import Lines, decide
    >>> def evaluate(rows, nominal, strict):  # max(t, 0) at 0; 1e-10 t, claimed -1e-10
    ...     slope = np.array([[1.0], [1e-10]])[rows]
    ...     losses = np.where(rows[:, None] == 0, np.maximum(nominal, 0), slope * nominal)
    ...     analytic = np.array([[0.0], [-1e-10]])[rows]
    ...     return losses, np.ones(rows.size), nominal, analytic * nominal
    >>> lines = Lines(evaluate, np.full(2, 1e-6), np.full(2, 1e-3))
    >>> d = decide(lines, make_stencil(), 2.0**-52, 1e-6)
    >>> d.kink.tolist(), d.failed.tolist(), d.slopes[0].tolist()  # a kink; a wrong sign
    ([True, False], [False, True], [0.0, 1.0])
    """
    n = lines.h.shape[0]
    nominal = lines.h[:, None] * np.asarray(stencil.offsets)[None, :]
    L, S, D, A = lines.evaluate(np.arange(n), nominal, True)
    with np.errstate(invalid="ignore"):
        first = _stencil(L, A, D, NOISE_FACTOR * unit * S, None, stencil.weights)
        settled = first.agrees(threshold, np.zeros(n))
    if settled.all():  # every line settled by the first look
        rel = _relative(first, np.zeros(n), threshold)
        no = np.zeros(n, bool)
        return Decision(first.numeric, first.analytic, rel, no, no, np.zeros((n, 2)), 0)
    within_floor = first.agrees(threshold, first.noise)
    numeric, analytic, absolute = first.numeric.copy(), first.analytic.copy(), np.zeros(n)
    failed, kink, slopes = np.zeros(n, bool), np.zeros(n, bool), np.zeros((n, 2))
    rows = np.flatnonzero(~settled)
    if rows.size:
        look = _second_look(lines, rows, unit, S[rows], threshold)
        usable = look.usable  # where it is not, the first look decides within its floor
        numeric[rows] = np.where(usable, look.chosen.numeric, numeric[rows])
        analytic[rows] = np.where(usable, look.chosen.analytic, analytic[rows])
        absolute[rows] = np.where(usable, look.absolute, first.noise[rows])
        failed[rows] = np.where(usable, look.failed, ~within_floor[rows])
        kink[rows], slopes[rows] = look.kink & usable, look.slopes
    chosen = _Estimate(numeric, analytic, absolute)
    rel = _relative(chosen, absolute, threshold)
    rel = np.where(failed, np.maximum(rel, np.nextafter(threshold, np.inf)), rel)
    return Decision(
        chosen.numeric, chosen.analytic, np.where(kink, 0.0, rel), failed, kink, slopes, rows.size
    )


@dataclass
class _Look:
    """What the second look found for its lines."""

    usable: np.ndarray  # the fine points are finite: the second look decides
    chosen: _Estimate  # the estimate reported
    absolute: np.ndarray  # its absolute tolerance
    failed: np.ndarray
    kink: np.ndarray
    slopes: np.ndarray  # (m, 2) one-sided slopes, left and right


def _second_look(
    lines: Lines, rows: np.ndarray, unit: float, first_scale: np.ndarray, threshold: float
) -> _Look:
    """Evaluate the lines ``rows`` at the second look's displacements and judge them."""
    fine_scale = np.array([which == "h" for which, _ in _SECOND_LOOK])
    multiple = np.array([m for _, m in _SECOND_LOOK])
    steps = np.where(fine_scale[None, :], lines.h[rows, None], lines.big[rows, None])
    L, S, D, A = lines.evaluate(rows, steps * multiple[None, :], False)
    noise_unit = NOISE_FACTOR * unit * np.maximum(S, first_scale)
    with np.errstate(invalid="ignore", over="ignore"):
        return _judge(L, D, A, noise_unit, threshold)


def _judge(L, D, A, noise_unit, threshold) -> _Look:
    """The rules of the module's docstring, on the second look's columns."""

    def est(columns, weights):
        return _stencil(L, A, D, noise_unit, columns, weights)

    central, half = est([3, 4], [1, -1]), est([1, 2], [1, -1])
    richardson = _Estimate(  # (4 c(h/2) - c(h)) / 3: O(h^4)
        (4 * half.numeric - central.numeric) / 3,
        (4 * half.analytic - central.analytic) / 3,
        (4 * half.noise + central.noise) / 3,
    )
    coarse, coarse_half = est([9, 7, 8, 10], _FOUR_POINT), est([7, 5, 6, 8], _FOUR_POINT)
    right, left = est([3, 0], [1, -1]), est([0, 4], [1, -1])
    right_half, left_half = est([1, 0], [1, -1]), est([0, 2], [1, -1])

    fine = np.all(np.isfinite(L[:, :_FINE]), axis=1)
    consistent = (
        fine
        & np.all(np.isfinite(L[:, _FINE:]), axis=1)
        & ~coarse_half.apart(richardson, threshold)
        & ~coarse.apart(richardson, threshold)
    )
    truncation = np.abs(coarse.off - coarse_half.off) / 8  # ~2x that of the one at H/2
    resolved_tolerance = 2 * coarse_half.noise + truncation
    resolved = consistent & coarse_half.agrees(threshold, resolved_tolerance)

    jump, jump_half = right.numeric - left.numeric, right_half.numeric - left_half.numeric
    jump_noise = 2 * (right_half.noise + left_half.noise + (right.noise + left.noise) / 2)
    kept = np.abs(jump_half - jump / 2) > np.maximum(_JUMP_KEPT * np.abs(jump), jump_noise)
    kinked = fine & ~resolved & (central.apart(half, threshold) | kept)
    slopes = [s.numeric for s in (left, right, left_half, right_half, central, half)]
    low, high = np.min(slopes, axis=0), np.max(slopes, axis=0)
    margin = np.maximum(
        threshold * (np.abs(low) + np.abs(high)), 2 * np.maximum(right_half.noise, left_half.noise)
    )
    between = (low - margin <= central.analytic) & (central.analytic <= high + margin)
    wider = np.abs(jump_half) >= np.abs(jump)
    pair = np.where(
        wider[:, None],
        np.stack([left_half.numeric, right_half.numeric], axis=1),
        np.stack([left.numeric, right.numeric], axis=1),
    )

    fallback = fine & ~consistent & ~kinked  # the H scale is unusable: Richardson at h
    fallback_ok = richardson.agrees(threshold, 2 * richardson.noise)
    kink = kinked & between
    failed = fine & ~resolved & ~kink & ~(fallback & fallback_ok)
    picks = [
        (coarse_half, resolved_tolerance),
        (half, 2 * half.noise),
        (richardson, 2 * richardson.noise),
    ]
    which = np.where(consistent & ~kinked, 0, np.where(kinked, 1, 2))
    chosen = _Estimate(
        *(
            np.choose(which, [getattr(e, f) for e, _ in picks])
            for f in ("numeric", "analytic", "noise")
        )
    )
    absolute = np.choose(which, [tolerance for _, tolerance in picks])
    return _Look(fine, chosen, absolute, failed, kink, pair)
