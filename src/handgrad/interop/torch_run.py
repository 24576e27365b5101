"""One check of a PyTorch function, given its evaluation: the upstream gradients drawn,
the forward found deterministic, the analytic VJP by autograd, every element of every
checked tensor against finite differences (by the route :mod:`.torch_routes` chooses,
decided by :func:`handgrad.gradcheck.verdict.decide` in blocks, so that its bookkeeping
stays small), then the backward checks of :mod:`.torch_backward`; the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from handgrad.core.errors import NonFiniteLossError, RandomLayerError
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck
from handgrad.gradcheck.verdict import NOISE_FACTOR, Lines, decide
from handgrad.interop.torch_backward import BackwardCheck, backward_checks
from handgrad.interop.torch_call import Precision, vector_jacobian
from handgrad.interop.torch_routes import choose_route, problem_for
from handgrad.interop.torch_tally import Tally, blocks

__all__ = ["block_size", "draw_upstream", "run_check"]

_BLOCK, _MIN_BLOCK = 2**16, 2**10  # elements decided at once, at most and at least
_AGREE = 256

Evaluate = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]


def _rounded(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    if dtype == torch.float64:
        return values
    return torch.from_numpy(values).to(dtype).to(torch.float64).numpy()


def _lines(
    name: str,
    x: torch.Tensor,
    values: np.ndarray,
    flat: np.ndarray,
    analytic: np.ndarray,
    route: Any,
    p: Precision,
) -> Lines:
    """The trust issue's lines for elements ``flat`` of ``x`` (their ``values``, in
    float64): displacements as stored."""
    h = fd.steps(values, p.eps, p.scaled_steps)
    big = p.big_eps * np.maximum(1.0, np.abs(values)) if p.scaled_steps else p.big_eps

    def evaluate(rows: np.ndarray, nominal: np.ndarray, strict: bool):
        base = values[rows, None]
        stored = _rounded(base + nominal, x.dtype) - base
        losses, scales = route(flat[rows], stored)
        if strict and not np.all(np.isfinite(losses)):
            i, j = np.argwhere(~np.isfinite(losses))[0]
            where = ", ".join(map(str, np.unravel_index(int(flat[rows[i]]), tuple(x.shape))))
            raise NonFiniteLossError(
                f"the loss is {losses[i, j]} when {name}[{where}] moves by {stored[i, j]:+g}; "
                "check the function there or use a smaller eps"
            )
        return losses, scales, stored, analytic[rows, None] * stored

    return Lines(evaluate, h, np.maximum(h, big))


def block_size(max_memory: int) -> int:
    """Elements decided at once: a block's bookkeeping (up to ~1 KiB an element, when
    every one needs a second look) stays within about half the budget.

    Examples
    --------
    >>> from handgrad.interop.torch_run import block_size
    >>> block_size(2**20), block_size(16 * 2**20), block_size(2**30)
    (1024, 8192, 65536)
    """
    return int(min(_BLOCK, max(_MIN_BLOCK, max_memory // 2048)))


def _check_tensor(
    name: str,
    x: torch.Tensor,
    gradient: torch.Tensor,
    route: Any,
    method: str,
    p: Precision,
    atol: float,
    block: int,
) -> ParameterCheck:
    """Every element of ``x``'s gradient against finite differences, in blocks of which
    only the row's tally is kept."""
    stencil = fd.make_stencil()
    tally = Tally(name, tuple(x.shape))
    for (start, values), (_, analytic) in zip(
        blocks(x, block), blocks(gradient, block), strict=True
    ):
        flat = np.arange(start, start + values.size)
        d = decide(_lines(name, x, values, flat, analytic, route, p), stencil, p.unit, p.threshold)
        failed = d.failed & ~(np.abs(d.analytic - d.numeric) <= atol)
        rel = np.where(failed, d.rel, np.minimum(d.rel, p.threshold))
        tally.add(start, d.analytic, d.numeric, rel, failed, d.kink, d.slopes)
        tally.second_looks += d.second_looks
    return tally.row(method)


def draw_upstream(outs: tuple[torch.Tensor, ...], rng: np.random.Generator) -> list[torch.Tensor]:
    """A standard normal upstream gradient per output, in its dtype and on its device.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.interop.torch_run import draw_upstream
    >>> [v.shape for v in draw_upstream((torch.ones(2, 3),), np.random.default_rng(0))]
    [torch.Size([2, 3])]
    """
    return [
        torch.as_tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype, device=o.device)
        for o in outs
    ]


def _check_deterministic(
    evaluate: Evaluate, y0: tuple, label: str, unit: float, tol: float
) -> None:
    with torch.no_grad():
        again = evaluate({})
    for j, (a, b) in enumerate(zip(again, y0, strict=True)):
        if a.shape != b.shape:
            seen = f"shape {tuple(b.shape)}, then {tuple(a.shape)}"
        else:
            gap = (a.double() - b.double()).abs()
            size = float(b.double().abs().max()) if b.numel() else 0.0
            if not b.numel() or float(gap.max()) <= max(_AGREE * unit * size, tol):
                continue
            where = np.unravel_index(int(gap.argmax()), tuple(a.shape))
            index = ", ".join(map(str, where))
            seen = f"outputs[{j}][{index}]: {float(b[where]):.6g}, then {float(a[where]):.6g}"
        raise RandomLayerError(
            f"{label} is random: two calls on the same inputs gave different outputs ({seen}); "
            "fix its seed or mask (or use eval mode), then check it"
        )


def run_check(
    evaluate: Evaluate,
    vmapped: Evaluate,
    values: dict[str, torch.Tensor],
    names: list[str],
    upstream: list[torch.Tensor],
    p: Precision,
    options: dict[str, Any],
    label: str,
    notes: list[str],
) -> GradientCheckReport:
    """The report of the check of ``evaluate`` (the differentiable outputs, with some of
    the named tensors replaced) at ``values``, for upstream gradients ``upstream``; used
    by :func:`~handgrad.interop.torch_check.check_report`.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_call import Precision
    >>> from handgrad.interop.torch_run import run_check
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> def f(overrides):  # tanh of x, or of what replaces it
    ...     return (torch.tanh(overrides.get("x", x)),)
    >>> options = dict(nondet_tol=0.0, method="auto", max_memory=2**20, atol=0.0,
    ...                check_layouts=True, check_undefined_grad=True)
    >>> v = [torch.ones(4, 3, dtype=torch.float64)]
    >>> report = run_check(f, f, {"x": x}, ["x"], v, Precision(), options, "tanh", [])
    >>> report.passed, report["x"].n_checked
    (True, 12)
    """
    with torch.no_grad():
        y0 = evaluate({})
    _check_deterministic(evaluate, y0, label, p.unit, options["nondet_tol"])
    # the check's own copies (torch_call.Subject): leaves that share their storage
    leaves = {n: values[n].detach().requires_grad_(True) for n in names}

    def backward(ups: list) -> dict[str, torch.Tensor]:
        # a contiguous upstream gradient is copied (a backward may write into it); a
        # layout's is made for this call alone and keeps its strides
        fresh = [u.clone() if u is not None and u.is_contiguous() else u for u in ups]
        return vector_jacobian(evaluate, leaves, fresh)

    scale = float(
        sum(float((o.double() * v.double()).abs().sum()) for o, v in zip(y0, upstream, strict=True))
    )
    header = dict(
        eps=p.eps,
        threshold=p.threshold,
        atol=NOISE_FACTOR * p.unit * max(scale, 1e-300) / p.eps,
        loss=float(
            sum(float((o.double() * v.double()).sum()) for o, v in zip(y0, upstream, strict=True))
        ),
        stencil="central",
        precision=p.name,
    )
    try:
        grads = backward(upstream)
    except Exception as err:  # the backward's own failure: reported, as torch would raise it
        text = str(err).splitlines()[0] if str(err) else ""
        rows = tuple(
            BackwardCheck(
                n,
                tuple(values[n].shape),
                np.nan,
                np.nan,
                (),
                np.nan,
                np.nan,
                max(values[n].numel(), 1),
                condition="a contiguous grad_output",
                raised=f"{type(err).__name__}: {text[:200]}",
            )
            for n in names
        )
        return GradientCheckReport(rows, mode="full", method="-", notes=tuple(notes), **header)
    rows: list[ParameterCheck] = []
    methods = []
    for n in names:
        x = values[n]
        problem = problem_for(evaluate, n, x, y0, tuple(upstream))
        route, method, why = choose_route(
            problem,
            evaluate,
            vmapped,
            values,
            n,
            tuple(upstream),
            y0,
            options["method"],
            options["max_memory"],
            p.unit,
        )
        notes += why
        methods.append(method)
        block = block_size(options["max_memory"])
        rows.append(_check_tensor(n, x, grads[n], route, method, p, options["atol"], block))
    extra, said = backward_checks(
        backward,
        upstream,
        grads,
        p.threshold,
        p.unit,
        options["nondet_tol"],
        options["check_layouts"],
        options["check_undefined_grad"],
    )
    distinct = sorted(set(methods), key=methods.index)
    return GradientCheckReport(
        tuple(rows + extra),
        mode="full",
        method="/".join(distinct),
        notes=tuple(notes + said),
        **header,
    )
