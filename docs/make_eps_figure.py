"""Draw docs/images/eps_error.png: the error of handgrad's central and 4-point differences
against the step eps, for f(x) = sum(sin(x)^3) over 50 points.

Run from the repository root: python docs/make_eps_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import handgrad as hg
from handgrad.gradcheck.check import DEFAULT_EPS, NOISE_FACTOR

OUT = Path(__file__).resolve().parent / "images" / "eps_error.png"
U = float(np.finfo(np.float64).eps)  # 2.2e-16, float64's machine epsilon
X = np.linspace(0.3, 2.8, 50)


def f(x: np.ndarray) -> np.ndarray:
    return np.sum(np.sin(x) ** 3)


def derivative(x: np.ndarray, order: int) -> np.ndarray:
    """d^order/dx^order of sin(x)^3 = (3 sin x - sin 3x) / 4."""
    return (3 * np.sin(x + order * np.pi / 2) - 3**order * np.sin(3 * x + order * np.pi / 2)) / 4


def errors(eps: np.ndarray, stencil: str) -> np.ndarray:
    """Largest |numeric - exact| over the 50 elements, for each step."""
    exact = derivative(X, 1)
    return np.array(
        [
            np.max(np.abs(hg.numerical_gradient(f, X.copy(), e, stencil=stencil) - exact))
            for e in eps
        ]
    )


def main() -> Path:
    eps = np.logspace(-12, -1, 45)
    central, four_point = errors(eps, "central"), errors(eps, "4-point")
    scale = max(abs(float(f(X))), 1.0)  # handgrad's loss_scale
    rounding = U * scale / eps
    floor = NOISE_FACTOR * U * scale / eps
    truncation_2 = eps**2 / 6 * np.max(np.abs(derivative(X, 3)))
    truncation_4 = eps**4 / 30 * np.max(np.abs(derivative(X, 5)))

    figure = Figure(figsize=(8, 6.4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.loglog(eps, central, "o-", color="tab:blue", ms=3.5, label="central difference (measured)")
    ax.loglog(eps, four_point, "s-", color="tab:orange", ms=3.5, label="4-point stencil (measured)")
    ax.loglog(eps, rounding, "--", color="0.4", lw=1, label=r"rounding model $u\,|f|\,/\,h$")
    ax.loglog(
        eps, floor, ":", color="tab:red", lw=1.5, label=r"handgrad's noise floor $16\,u\,|f|\,/\,h$"
    )
    ax.loglog(
        eps,
        truncation_2,
        "-.",
        color="tab:blue",
        lw=1,
        label=r"central truncation $h^2 |f'''| / 6$",
    )
    ax.loglog(
        eps,
        truncation_4,
        "-.",
        color="tab:orange",
        lw=1,
        label=r"4-point truncation $h^4 |f^{(5)}| / 30$",
    )
    notes = (
        (1e-10, 1e-9, "rounding: slope $-1$", "0.25"),
        (3e-4, 3e-5, "slope 2", "tab:blue"),
        (3e-2, 1e-9, "slope 4", "tab:orange"),
    )
    for x, y, text, color in notes:
        ax.text(x, y, text, color=color, fontsize=10, ha="center")
    ax.axvline(DEFAULT_EPS, color="black", lw=0.8)
    ax.text(DEFAULT_EPS * 1.25, 2e-15, "handgrad's default eps 1e-6", rotation=90, fontsize=9)
    for power, color in ((3, "tab:blue"), (5, "tab:orange")):
        ax.axvline(U ** (1 / power), color=color, lw=0.8, alpha=0.6)
        ax.text(U ** (1 / power) * 1.25, 2e-15, f"$u^{{1/{power}}}$", color=color, fontsize=10)
    ax.set_ylim(1e-15, 1e0)
    ax.set_xlabel("step h (eps)")
    ax.set_ylabel("largest |numeric - exact| over the 50 elements")
    ax.set_title(r"Error of finite differences of $f(x) = \sum\ \sin^3 x_i$ in float64")
    ax.grid(which="major", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=9)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT, dpi=110, metadata={"Software": None})
    return OUT


if __name__ == "__main__":
    print(f"wrote {main()}")
