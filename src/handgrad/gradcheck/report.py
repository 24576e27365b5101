"""What a gradient check found: one row per array (or random direction), the worst element
of each, a table sorted worst first, JSON, a histogram picture, and the error to raise."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.files import atomic_write
from handgrad.core.tables import format_table

__all__ = ["GradientCheckReport", "Kink", "ParameterCheck", "compare", "summarize"]


@dataclass(frozen=True)
class Kink:
    """An element where the loss is not differentiable within a step or two: the
    finite-difference estimates at two step sizes disagree with each other (ReLU at 0, a
    max-pool tie, ``abs``). ``left`` and ``right`` are the one-sided slopes there; the
    analytic value lies between them (else the element counts as failed).

    Examples
    --------
    >>> from handgrad.gradcheck.report import Kink
    >>> Kink((0, 2), analytic=0.0, left=0.0, right=1.0).describe("x")
    'not differentiable near x[0, 2]: one-sided slopes 0 and 1, analytic 0'
    """

    index: tuple[int, ...]
    analytic: float
    left: float
    right: float

    def describe(self, name: str) -> str:
        """One phrase: where, both slopes and the analytic value."""
        where = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        return (
            f"not differentiable near {name}{where}: one-sided slopes {self.left:.6g} and "
            f"{self.right:.6g}, analytic {self.analytic:.6g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "index": list(self.index),
            "analytic": _finite_or_none(self.analytic),
            "left": _finite_or_none(self.left),
            "right": _finite_or_none(self.right),
        }


@dataclass(frozen=True)
class ParameterCheck:
    """How one array's analytic gradient compares with its numeric estimate.

    ``checked`` elements were compared (all of them in full mode); ``errors`` holds their
    relative differences, for pictures. A row for a random direction of the fast mode has
    shape ``()`` and compares one directional derivative. ``method`` says how the numeric
    values were computed; ``kinks`` lists elements where the loss is not differentiable
    within a step (they do not count as failed); ``second_looks`` counts the elements the
    first look left open (see :mod:`handgrad.gradcheck.verdict`). When the analytic
    gradient has the wrong shape, ``values_right`` says whether its values are right once
    reshaped ("reshaped") or transposed ("transposed").

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> x = np.random.default_rng(0).standard_normal((4, 3))
    >>> check = hg.check_layer(hg.Linear(3, 2, rng=0), x)["weight"]
    >>> check.shape, check.n_checked, check.passed, check.max_rel_diff < 1e-6
    ((2, 3), 6, True, True)
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    n_failed: int
    checked: int = -1
    analytic_shape: tuple[int, ...] | None = None
    errors: np.ndarray | None = field(default=None, repr=False, compare=False)
    method: str | None = None
    kinks: tuple[Kink, ...] = ()
    values_right: str | None = None
    second_looks: int = 0

    @property
    def size(self) -> int:
        """Number of elements in the array."""
        return math.prod(self.shape)

    @property
    def n_checked(self) -> int:
        """Number of elements compared."""
        return self.size if self.checked < 0 else self.checked

    @property
    def passed(self) -> bool:
        """True when no element is off."""
        return self.n_failed == 0

    def describe(self) -> str:
        """One sentence on this check: where it is worst, or why it failed."""
        if self.analytic_shape is not None:
            fix = {
                "reshaped": f"; its values are right: reshape it to {self.shape}",
                "transposed": f"; its values are right transposed: transpose it to {self.shape}",
            }.get(self.values_right or "", "")
            return (
                f"gradient check failed for {self.name!r}: the analytic gradient has shape "
                f"{self.analytic_shape} but the parameter has shape {self.shape}{fix}"
            )
        verdict = "passed" if self.passed else "failed"
        where = f"; worst at index {self.worst_index}" if self.shape else ""
        text = (
            f"gradient check {verdict} for {self.name!r} (shape {self.shape}): "
            f"{self.n_failed} of {self.n_checked} elements off{where}: "
            f"analytic {self.analytic:.6e}, numeric {self.numeric:.6e}, "
            f"relative difference {self.max_rel_diff:.2e}"
        )
        if self.kinks:
            more = len(self.kinks) - 1
            others = f" (and {more} more, not counted)" if more else " (not counted)"
            text += f"; {self.kinks[0].describe(self.name)}{others}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN and infinity become None)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "size": self.size,
            "checked": self.n_checked,
            "failed": self.n_failed,
            "passed": self.passed,
            "max_abs_diff": _finite_or_none(self.max_abs_diff),
            "max_rel_diff": _finite_or_none(self.max_rel_diff),
            "worst_index": list(self.worst_index),
            "analytic": _finite_or_none(self.analytic),
            "numeric": _finite_or_none(self.numeric),
            "analytic_shape": None if self.analytic_shape is None else list(self.analytic_shape),
            "values_right": self.values_right,
            "method": self.method,
            "kinks": [k.to_dict() for k in self.kinks],
            "second_looks": self.second_looks,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class GradientCheckReport:
    """The outcome of a gradient check, one :class:`ParameterCheck` per array checked.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> rng = np.random.default_rng(0)
    >>> model, x, y = hg.mlp([4, 5, 3], rng=rng), rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    >>> report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="sample", samples=4)
    >>> report.passed, report.mode, [check.n_checked for check in report.checks]
    (True, 'sample', [4, 4, 4, 3])
    >>> report.to_dict()["checks"][0]["name"], report.failures
    ('0.weight', ())
    """

    checks: tuple[ParameterCheck, ...]
    eps: float
    threshold: float
    atol: float
    loss: float
    mode: str = "full"
    method: str = "loop"
    stencil: str = "central"
    precision: str = "float64"
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every array passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[ParameterCheck, ...]:
        """The checks that failed: arrays in model order, then random directions."""
        failed = [c for c in self.checks if not c.passed]
        return tuple(sorted(failed, key=lambda c: c.shape == ()))

    def __getitem__(self, name: str) -> ParameterCheck:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def worst_first(self) -> list[ParameterCheck]:
        """The checks ordered by how far they are from passing, the worst first."""
        return sorted(self.checks, key=lambda c: -_badness(c))

    def __str__(self) -> str:
        header = (
            f"gradient check ({self.mode}, {self.method}, {self.precision}, {self.stencil}): "
            f"eps={self.eps:g}, threshold={self.threshold:g}, noise floor={self.atol:.1e}, "
            f"loss={self.loss:.6g}"
        )
        methods = any(c.method for c in self.checks)
        rows = [
            [
                c.name,
                "x".join(map(str, c.shape)) or "-",
                str(c.n_checked),
                f"{c.max_abs_diff:.2e}",
                f"{c.max_rel_diff:.2e}",
                str(c.worst_index) if c.shape else "-",
                f"{c.analytic:.6e}",
                f"{c.numeric:.6e}",
                str(c.n_failed),
                *([c.method or "-"] if methods else []),
                "ok" if c.passed else "FAIL",
            ]
            for c in self.worst_first()
        ]
        table = format_table(
            [
                "array",
                "shape",
                "checked",
                "max abs diff",
                "max rel diff",
                "worst index",
                "analytic",
                "numeric",
                "off",
                *(["method"] if methods else []),
                "",
            ],
            rows,
        )
        passed = sum(c.passed for c in self.checks)
        lines = [header, table, f"{passed} of {len(self.checks)} checks passed (worst first)"]
        for c in self.checks:
            if c.kinks:
                more = f" (and {len(c.kinks) - 1} more)" if len(c.kinks) > 1 else ""
                lines.append(f"note: {c.kinks[0].describe(c.name)}{more}; not counted as off")
            if c.analytic_shape is not None:
                lines.append(f"note: {c.describe()}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "passed": self.passed,
            "mode": self.mode,
            "method": self.method,
            "stencil": self.stencil,
            "precision": self.precision,
            "notes": list(self.notes),
            "eps": self.eps,
            "threshold": self.threshold,
            "noise_floor": self.atol,
            "loss": _finite_or_none(self.loss),
            "checks": [c.to_dict() for c in self.checks],
        }

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG: per array, a histogram of log10 relative difference, with the
        threshold marked. Needs matplotlib."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            from matplotlib.ticker import NullFormatter
        except ImportError as err:
            raise ImportError(
                "report.plot needs matplotlib: pip install 'handgrad[plots]'"
            ) from err
        arrays = [c for c in self.checks if c.errors is not None and c.errors.size]
        if not arrays:
            raise ValueError("this report holds no per-element differences to plot")
        figure = Figure(figsize=(7, 1.6 + 1.1 * len(arrays)), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(arrays), 1, sharex=True, squeeze=False)[:, 0]
        floor = -17.0  # differences of 0 (or below float64's resolution) are drawn here
        logs = [np.log10(np.maximum(np.minimum(c.errors, 1e300), 10.0**floor)) for c in arrays]
        high = max(float(np.max(v)) for v in [*logs, np.array([math.log10(self.threshold)])])
        bins = np.linspace(floor, high + 0.5, 60)
        for ax, check, values in zip(axes, arrays, logs, strict=True):
            color = "tab:blue" if check.passed else "tab:red"
            ax.hist(values, bins=bins, color=color, alpha=0.8)
            ax.axvline(
                math.log10(self.threshold),
                color="black",
                linestyle=":",
                label=f"threshold {self.threshold:g}",
            )
            ax.set_ylabel(check.name, rotation=0, ha="right", va="center")
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
        axes[0].legend(loc="upper right")
        axes[0].set_title(
            f"log10 relative difference per element ({self.mode} check, "
            f"eps {self.eps:g}); red: failed"
        )
        axes[-1].set_xlabel("log10 |analytic - numeric| / max(|a| + |n|, floor)")
        with atomic_write(path, "wb") as f:
            figure.savefig(f, format="png", dpi=110)
        return Path(path)


def _badness(check: ParameterCheck) -> float:
    if check.analytic_shape is not None:
        return math.inf
    value = check.max_rel_diff
    return math.inf if math.isnan(value) else value


def compare(
    name: str,
    shape: tuple[int, ...],
    flat: np.ndarray,
    analytic: np.ndarray,
    numeric: np.ndarray,
    threshold: float,
    atol: Any,
) -> ParameterCheck:
    """Compare analytic and numeric values of the elements ``flat`` of an array of ``shape``.

    An element is off when ``|a - n| > max(threshold * (|a| + |n|), atol)``; the relative
    difference reported is ``|a - n| / max(|a| + |n|, atol / threshold)``. ``atol`` is one
    number or one per element.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.report import compare
    >>> analytic, numeric = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.1])
    >>> check = compare("w", (2, 2), np.arange(4), analytic, numeric, threshold=1e-6, atol=1e-9)
    >>> check.passed, check.n_failed, check.worst_index, round(check.max_rel_diff, 4)  # 0.1 / 8.1
    (False, 1, (1, 1), 0.0123)
    """
    rel = relative_errors(analytic, numeric, threshold, atol)
    return summarize(name, shape, flat, analytic, numeric, rel, rel > threshold)


def relative_errors(analytic: Any, numeric: Any, threshold: float, atol: Any) -> np.ndarray:
    """``|a - n| / max(|a| + |n|, atol / threshold)`` per element; NaN counts as infinite.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.report import relative_errors
    >>> rel = relative_errors(np.array([1.0, 1e-12]), np.array([1.1, 0.0]), 1e-6, 1e-9)
    >>> [f"{r:.3g}" for r in rel]  # 0.1 / 2.1; 1e-12 / (1e-9 / 1e-6)
    ['0.0476', '1e-09']
    """
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, np.float64)
    diff = np.abs(analytic - numeric)
    scale = np.maximum(np.abs(analytic) + np.abs(numeric), np.asarray(atol) / threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isnan(rel), np.inf, rel)  # a NaN gradient is never close


def summarize(
    name: str,
    shape: tuple[int, ...],
    flat: np.ndarray,
    analytic: np.ndarray,
    numeric: np.ndarray,
    rel: np.ndarray,
    failed: np.ndarray,
    *,
    kinks: tuple[Kink, ...] = (),
    method: str | None = None,
    ignored: np.ndarray | None = None,
    second_looks: int = 0,
) -> ParameterCheck:
    """One row from per-element values: relative differences ``rel`` and which elements
    ``failed``; the worst element is the one with the largest ``rel``. Elements marked
    ``ignored`` (kinks) count in neither the largest difference nor ``rel``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.report import summarize
    >>> a, n = np.array([1.0, 2.0]), np.array([1.0, -2.0])
    >>> row = summarize("b", (2,), np.arange(2), a, n, np.array([0.0, 1.0]), np.array([0, 1]) > 0)
    >>> row.n_failed, row.worst_index, row.numeric
    (1, (1,), -2.0)
    """
    if flat.size == 0:
        return ParameterCheck(
            name, shape, 0.0, 0.0, (), 0.0, 0.0, 0, checked=0, method=method, kinks=kinks
        )
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, np.float64)
    diff = np.abs(analytic - numeric)
    if ignored is not None and np.any(ignored):
        diff, rel = np.where(ignored, 0.0, diff), np.where(ignored, 0.0, rel)
        counted = np.flatnonzero(~ignored)
        worst = int(counted[np.argmax(rel[counted])]) if counted.size else 0
    else:
        worst = int(np.argmax(rel))
    index = np.unravel_index(int(flat[worst]), shape) if shape else ()
    return ParameterCheck(
        name=name,
        shape=shape,
        max_abs_diff=float(np.max(diff)),
        max_rel_diff=float(rel[worst]),
        worst_index=tuple(int(i) for i in index),
        analytic=float(analytic[worst]),
        numeric=float(numeric[worst]),
        n_failed=int(np.count_nonzero(failed)),
        checked=int(flat.size),
        errors=np.asarray(rel, dtype=np.float64),
        method=method,
        kinks=kinks,
        second_looks=second_looks,
    )
