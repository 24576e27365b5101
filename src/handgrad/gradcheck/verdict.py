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
the 4-point stencil, at +-H/2, +-H, +-2H (``H = 1e-3`` in float64, 1000 times less noise):

1. the 4-point estimates at H and H/2 agree with the Richardson estimate at h: the
   element passes if the one at H/2 matches ``a`` within its noise and truncation;
2. else, if the estimates at h and h/2 disagree, or the one-sided slopes keep their jump
   as the step halves, the loss is not differentiable near the element (a kink): it
   passes, named, when ``a`` lies between the one-sided slopes, and fails otherwise;
3. else, if the H scale is unusable (a kink or steep curvature there, or a non-finite
   loss), the Richardson estimate at h decides, within its noise;
4. else the element fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad.gradcheck.finite_differences import Stencil

__all__ = ["NOISE_FACTOR", "SECOND_LOOK", "Decision", "Lines", "decide"]

NOISE_FACTOR = 16.0
# the second look's displacements: ("h" or "H", multiple), in this column order
SECOND_LOOK = (
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
_FOUR_POINT = (-1 / 12, 8 / 12, -8 / 12, 1 / 12)  # at offsets (2, 1, -1, -2) x step
_KINK_JUMP_KEPT = 0.25  # the one-sided jump at h/2 is still over half... of the one at h

Evaluate = Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, ...]]


@dataclass
class Lines:
    """The elements (or directions) to decide and how to evaluate the loss along them.

    ``evaluate(rows, nominal, strict)`` returns, for the lines ``rows`` displaced by the
    ``nominal`` amounts (one row per line, one column per displacement): the loss changes
    ``L``, the noise scales (one per line), the displacements as stored ``D`` and the
    analytic changes ``A`` (``a * D`` for an element). With ``strict`` a non-finite loss
    raises. ``h`` and ``big`` are the first and second look's steps per line.
    """

    evaluate: Evaluate
    h: np.ndarray
    big: np.ndarray


@dataclass
class Decision:
    """Per line: the numeric and analytic values reported, the relative difference, and
    whether it failed or sits at a kink (with the one-sided slopes there)."""

    numeric: np.ndarray
    analytic: np.ndarray
    rel: np.ndarray
    failed: np.ndarray
    kink: np.ndarray
    slopes: np.ndarray  # (n, 2): left and right one-sided slopes, at kinks
    second_looks: int


def _estimate(L, A, D, columns, weights):
    """(numeric, analytic, noise coefficient) of one stencil over ``columns``."""
    w = np.asarray(weights)
    den = D[:, columns] @ w
    with np.errstate(divide="ignore", invalid="ignore"):
        return (L[:, columns] @ w) / den, (A[:, columns] @ w) / den, np.sum(np.abs(w)) / np.abs(den)


def _relative(dev, a, n, tol_abs, threshold):
    scale = np.maximum(np.abs(a) + np.abs(n), tol_abs / threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, np.abs(dev) / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isnan(rel), np.inf, rel)


def decide(lines: Lines, stencil: Stencil, unit: float, threshold: float) -> Decision:
    """Decide every line: the first look, then the second for those it leaves open."""
    n = lines.h.shape[0]
    nominal = lines.h[:, None] * np.asarray(stencil.offsets)[None, :]
    L, S, D, A = lines.evaluate(np.arange(n), nominal, True)
    num, ana, coef = _estimate(L, A, D, list(range(len(stencil.offsets))), stencil.weights)
    dev = num - ana
    with np.errstate(invalid="ignore"):  # a step lost in rounding: no estimate, NaN
        floor = NOISE_FACTOR * unit * S * coef
    settled = np.abs(dev) <= threshold * (np.abs(ana) + np.abs(num))
    numeric, analytic, tol = num.copy(), ana.copy(), np.zeros(n)
    failed, kink, slopes = np.zeros(n, bool), np.zeros(n, bool), np.zeros((n, 2))
    rows = np.flatnonzero(~settled)
    if rows.size:
        look = _second_look(lines, rows, unit, threshold, S[rows])
        first = ~look["usable"]  # the second look is unusable: the first look decides
        look["failed"] |= first & (np.abs(dev[rows]) > np.maximum(
            threshold * (np.abs(ana[rows]) + np.abs(num[rows])), floor[rows]
        ))
        for key, target in (("numeric", numeric), ("analytic", analytic), ("tol", tol)):
            target[rows] = np.where(first, {"numeric": num, "analytic": ana, "tol": floor}[key][rows], look[key])
        failed[rows], kink[rows], slopes[rows] = look["failed"], look["kink"], look["slopes"]
    rel = _relative(numeric - analytic, analytic, numeric, tol, threshold)
    rel = np.where(failed, np.maximum(rel, np.nextafter(threshold, np.inf)), np.where(kink, 0.0, rel))
    return Decision(numeric, analytic, rel, failed, kink, slopes, int(rows.size))


def _second_look(lines: Lines, rows: np.ndarray, unit: float, threshold: float, S1: np.ndarray):
    scale = np.array([1.0 if which == "h" else 0.0 for which, _ in SECOND_LOOK])
    multiple = np.array([m for _, m in SECOND_LOOK])
    steps = np.where(scale[None, :] > 0, lines.h[rows, None], lines.big[rows, None])
    L, S, D, A = lines.evaluate(rows, steps * multiple[None, :], False)
    eps = NOISE_FACTOR * unit * np.maximum(S, S1)

    def est(columns, weights):
        num, ana, coef = _estimate(L, A, D, columns, weights)
        return num, ana, eps * coef

    c_h, c_h2 = est([3, 4], [1, -1]), est([1, 2], [1, -1])
    rich = tuple((4 * b - a) / 3 for a, b in zip(c_h[:2], c_h2[:2], strict=True)) + (
        (4 * c_h2[2] + c_h[2]) / 3,
    )
    four_h, four_h2 = est([9, 7, 8, 10], _FOUR_POINT), est([7, 5, 6, 8], _FOUR_POINT)
    right_h, left_h = est([3, 0], [1, -1]), est([0, 4], [1, -1])
    right_h2, left_h2 = est([1, 0], [1, -1]), est([0, 2], [1, -1])

    def dev(e):
        return e[0] - e[1]

    def apart(e, f):  # two estimates disagree beyond their noise and the threshold
        limit = np.maximum(threshold * (np.abs(e[0]) + np.abs(f[0])), 2 * (e[2] + f[2]))
        return np.abs(dev(e) - dev(f)) > limit

    with np.errstate(invalid="ignore"):
        fine = np.all(np.isfinite(L[:, :5]), axis=1)
        coarse = np.all(np.isfinite(L[:, 5:]), axis=1)
        consistent = fine & coarse & ~apart(four_h2, rich) & ~apart(four_h, rich)
        trunc = np.abs(dev(four_h) - dev(four_h2)) / 8
        tol_res = 2 * four_h2[2] + trunc
        limit_res = np.maximum(threshold * (np.abs(four_h2[1]) + np.abs(four_h2[0])), tol_res)
        resolved = consistent & (np.abs(dev(four_h2)) <= limit_res)
        jump_h, jump_h2 = right_h[0] - left_h[0], right_h2[0] - left_h2[0]
        noise_jump = 2 * (right_h2[2] + left_h2[2] + (right_h[2] + left_h[2]) / 2)
        kept = np.abs(jump_h2 - jump_h / 2) > np.maximum(_KINK_JUMP_KEPT * np.abs(jump_h), noise_jump)
        kinked = fine & ~resolved & (apart(c_h, c_h2) | kept)
        pairs = np.stack([[left_h[0], right_h[0]], [left_h2[0], right_h2[0]]])  # 2,2,m
        wider = np.abs(pairs[1, 1] - pairs[1, 0]) >= np.abs(pairs[0, 1] - pairs[0, 0])
        slopes = np.where(wider[None, :], pairs[1], pairs[0]).T  # m,2
        every = np.stack([left_h[0], right_h[0], left_h2[0], right_h2[0], c_h[0], c_h2[0]])
        low, high = np.min(every, axis=0), np.max(every, axis=0)
        tol_kink = np.maximum(threshold * (np.abs(low) + np.abs(high)), 2 * np.maximum(right_h2[2], left_h2[2]))
        between = (low - tol_kink <= c_h[1]) & (c_h[1] <= high + tol_kink)
        rich_ok = np.abs(dev(rich)) <= np.maximum(
            threshold * (np.abs(rich[0]) + np.abs(rich[1])), 2 * rich[2]
        )
    kink = kinked & between
    use_rich = fine & ~consistent & ~kinked
    failed = ~resolved & ~kink & ~(use_rich & rich_ok)
    chosen = np.where(resolved | (consistent & ~kinked), 0, np.where(kinked, 1, 2))
    options = [(four_h2[0], four_h2[1], tol_res), (c_h2[0], c_h2[1], 2 * c_h2[2]), (rich[0], rich[1], 2 * rich[2])]
    pick = [np.choose(chosen, [o[i] for o in options]) for i in range(3)]
    return {
        "usable": fine,
        "numeric": pick[0],
        "analytic": pick[1],
        "tol": pick[2],
        "failed": failed & fine,
        "kink": kink & fine,
        "slopes": slopes,
    }
