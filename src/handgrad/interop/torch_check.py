"""``gradcheck`` and ``gradgradcheck`` for PyTorch code, in torch's call shape, with
handgrad's checker inside: every element of every checked tensor's gradient compared with
finite differences of ``<v, f(x)>`` for a random upstream gradient ``v`` (summed over the
outputs), never a dense Jacobian; the perturbations batched by the fastest route proven
right (:mod:`.torch_routes`), in chunks within ``max_memory``; each element decided by
the trust issue's verdict (a second look for small gradients, kinks named); and the
backward checked with ``grad_output`` in several memory layouts, twice for reentrance,
and with undefined upstream gradients (:mod:`.torch_backward`).

``gradgradcheck`` checks the hand-written backward as a function of the inputs and of
``v`` (its vector-Jacobian product built with ``create_graph=True``) the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from handgrad.core.errors import GradientCheckError
from handgrad.core.validation import NON_NEGATIVE, check_choice, check_positive_int
from handgrad.gradcheck.report import GradientCheckReport
from handgrad.interop.torch_call import Subject, vector_jacobian
from handgrad.interop.torch_routes import METHODS
from handgrad.interop.torch_run import draw_upstream, run_check

__all__ = ["DEFAULT_MAX_MEMORY", "check_report", "gradcheck", "gradgradcheck"]

DEFAULT_MAX_MEMORY = 256 * 2**20
_UPSTREAM_STREAM = 0x7EED  # the upstream gradients come from a stream of their own

Evaluate = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]


def _options(
    eps: Any,
    atol: Any,
    rtol: Any,
    nondet_tol: Any,
    max_memory: Any,
    method: Any,
    seed: Any,
    check_layouts: Any,
    check_undefined_grad: Any,
) -> dict[str, Any]:
    for value, name in ((eps, "eps"), (rtol, "rtol")):
        if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ValueError(
                f"{name} must be None or a finite number greater than 0, got {value!r}"
            )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return {
        "atol": NON_NEGATIVE.check(atol, "atol"),
        "nondet_tol": NON_NEGATIVE.check(nondet_tol, "nondet_tol"),
        "max_memory": check_positive_int(max_memory, "max_memory"),
        "method": check_choice(method, "method", METHODS),
        "seed": seed,
        "check_layouts": bool(check_layouts),
        "check_undefined_grad": bool(check_undefined_grad),
    }


def _finish(report: GradientCheckReport, raise_exception: bool) -> bool:
    if report.passed:
        return True
    if raise_exception:
        raise GradientCheckError(report)
    return False


_OPTIONS = """
    eps : float, optional
        The first look's step (1e-6 in float64; 1e-2, scaled, where ``fn`` computes in
        float32 whatever it gets).
    atol : float
        An absolute tolerance on top of the per-element noise floor (0).
    rtol : float, optional
        The relative tolerance (1e-6 in float64, 1e-3 in float32).
    nondet_tol : float
        How far two backward passes (and two forwards) with the same inputs may differ (0).
    check_layouts : bool
        Also give ``grad_output`` transposed, expanded (zero strides) and sliced, each
        compared with the same values contiguous (True).
    check_undefined_grad : bool
        Also leave each output's upstream gradient undefined (None), or give zeros (True).
    max_memory : int
        Bytes the perturbed copies may take per call (256 MiB).
    method : {"auto", "rows", "vmap", "stacked", "loop"}
        How the perturbations are batched; "auto" takes the fastest that a probe on the
        real input proves right, and the report says which was used per tensor.
    seed : int
        Seeds the random upstream gradients (0), from a stream of their own.
"""


_ONCE = "torch::autograd::Error"  # the node once_differentiable puts on what it returns


def _second_order(
    subject: Subject, upstream: list[torch.Tensor]
) -> tuple[Evaluate, Evaluate, dict, list]:
    """The backward as a function of the inputs and of ``v``: ``evaluate`` by autograd with
    ``create_graph`` when its arguments require grad, and a ``torch.func.vjp`` twin for vmap."""
    extra = {f"grad_outputs[{j}]": v for j, v in enumerate(upstream)}
    names = [*subject.names, *extra]
    values = {**{n: subject.values[n] for n in subject.names}, **extra}

    def parts(overrides: dict) -> tuple[dict, list]:
        xs = {n: overrides.get(n, subject.values[n]) for n in subject.names}
        return xs, [overrides.get(k, v) for k, v in extra.items()]

    def evaluate(overrides: dict) -> tuple[torch.Tensor, ...]:
        xs, ups = parts(overrides)
        graph = any(t.requires_grad for t in overrides.values())
        with torch.enable_grad():
            leaves = {
                n: x if x.requires_grad else x.detach().requires_grad_(True) for n, x in xs.items()
            }
            outs = subject.evaluate(leaves)
            ups = [
                u if u.shape == o.shape else torch.broadcast_to(u, o.shape).contiguous()
                for u, o in zip(ups, outs, strict=True)
            ]
            grads = vector_jacobian(lambda _: outs, leaves, ups, create_graph=graph)
        return tuple(grads[n] for n in subject.names)

    def vmapped(overrides: dict) -> tuple[torch.Tensor, ...]:
        xs, ups = parts(overrides)
        _, pullback = torch.func.vjp(
            lambda *a: subject.evaluate(dict(zip(subject.names, a, strict=True))), *xs.values()
        )
        return tuple(pullback(tuple(ups)))

    return evaluate, vmapped, values, names


def check_report(
    fn: Any,
    inputs: Any,
    *,
    order: int = 1,
    grad_outputs: Any = None,
    eps: float | None = None,
    atol: float = 0.0,
    rtol: float | None = None,
    nondet_tol: float = 0.0,
    check_layouts: bool = True,
    check_undefined_grad: bool = True,
    max_memory: int = DEFAULT_MAX_MEMORY,
    method: str = "auto",
    seed: int = 0,
) -> GradientCheckReport:
    """The report of :func:`gradcheck` (``order=1``) or :func:`gradgradcheck` (``order=2``):
    one row per checked tensor (and per backward check that failed), whatever the verdict.

    Parameters
    ----------
    fn : callable or torch.nn.Module
        A function of tensors returning a tensor or a tuple of tensors.
    inputs : tensor or tuple
        The arguments; tensors with ``requires_grad=True`` are checked.
    order : {1, 2}
        First derivatives, or the derivative of the backward (``gradgradcheck``).
    grad_outputs : tensor or tuple, optional
        For ``order=2``: the upstream gradients ``v`` of the backward (random if None).

    Returns
    -------
    GradientCheckReport
        ``report.passed``, the rows (``report["inputs[0]"]``), the method per tensor.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_check import check_report
    >>> x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    >>> report = check_report(torch.nn.functional.softplus, (x,))
    >>> report.passed, report["inputs[0]"].n_checked, report["inputs[0]"].method
    (True, 24, 'rows')
    """
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    opts = _options(
        eps, atol, rtol, nondet_tol, max_memory, method, seed, check_layouts, check_undefined_grad
    )
    subject = Subject(fn, inputs, eps, rtol)
    rng = np.random.default_rng([opts["seed"], _UPSTREAM_STREAM])
    upstream = draw_upstream(subject.y0, rng)
    notes = [subject.precision.note] if subject.precision.note else []
    if order == 1:
        if grad_outputs is not None:
            raise ValueError("grad_outputs goes with order=2 (gradgradcheck)")
        return run_check(
            subject.evaluate,
            subject.evaluate,
            subject.values,
            subject.names,
            upstream,
            subject.precision,
            opts,
            subject.label,
            notes,
        )
    if grad_outputs is not None:
        given = (grad_outputs,) if isinstance(grad_outputs, torch.Tensor) else tuple(grad_outputs)
        if len(given) != len(subject.y0) or any(
            tuple(g.shape) != tuple(o.shape) for g, o in zip(given, subject.y0, strict=False)
        ):
            raise ValueError(
                f"grad_outputs must be one tensor per differentiable output, shaped "
                f"{[tuple(o.shape) for o in subject.y0]}, got "
                f"{[tuple(getattr(g, 'shape', ())) for g in given]}"
            )
        upstream = [
            g.detach().to(o.dtype, copy=True) for g, o in zip(given, subject.y0, strict=True)
        ]
    evaluate, vmapped, values, names = _second_order(subject, upstream)
    with torch.no_grad():
        z0 = evaluate({})
    traced = evaluate({n: values[n].detach().clone().requires_grad_(True) for n in names})
    if any(t.grad_fn is not None and t.grad_fn.name() == _ONCE for t in traced):
        notes.append(
            "the backward is computed outside autograd (once_differentiable): it cannot be "
            "differentiated, its derivative counts as 0"
        )
    elif not any(t.requires_grad for t in traced):
        notes.append(
            "the backward's result does not depend on its inputs through autograd (detach, "
            "no_grad or once_differentiable): its derivative counts as 0"
        )
    del traced
    return run_check(
        evaluate,
        vmapped,
        values,
        names,
        draw_upstream(z0, rng),
        subject.precision,
        opts,
        f"the backward of {subject.label}",
        notes,
    )


def gradcheck(fn: Any, inputs: Any, *, raise_exception: bool = True, **options: Any) -> bool:
    """Check the gradients that ``fn``'s backward gives against finite differences, every
    element of every input that requires grad (and of every parameter of an ``nn.Module``).

    The analytic side is ``torch.autograd.grad`` with a random upstream gradient ``v`` (your
    backward); the numeric side finite differences of ``<v, fn(x)>``, batched, never a
    dense Jacobian. Then the backward is run with ``v`` transposed, expanded and sliced,
    a second time, and with undefined upstream gradients.

    Parameters
    ----------
    fn : callable or torch.nn.Module
        A function of tensors (a custom ``autograd.Function``'s ``apply``, a kernel's
        wrapper, a module) returning a tensor or a tuple of tensors.
    inputs : tensor or tuple
        The arguments; tensors with ``requires_grad=True`` are checked, float32 ones as a
        float64 copy where ``fn`` computes the same on it (else at float32's noise).
    raise_exception : bool
        Raise :class:`~handgrad.GradientCheckError` with the report on failure (default),
        else return False.
    **options
        As :func:`check_report`: ``eps``, ``atol``, ``rtol``, ``nondet_tol``,
        ``check_layouts``, ``check_undefined_grad``, ``max_memory``, ``method``, ``seed``.

    Returns
    -------
    bool
        True when every check passed.

    Examples
    --------
    >>> import torch
    >>> import handgrad.torch as hgt
    >>> class Cube(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x**3
    ...     @staticmethod
    ...     def backward(ctx, dy):
    ...         (x,) = ctx.saved_tensors
    ...         return 3 * x * dy  # a slip: dL/dx = 3 x^2 dy
    >>> x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    >>> hgt.gradcheck(torch.sin, (x,))
    True
    >>> hgt.gradcheck(Cube.apply, (x,), raise_exception=False)
    False
    """
    return _finish(check_report(fn, inputs, order=1, **options), raise_exception)


def gradgradcheck(
    fn: Any,
    inputs: Any,
    grad_outputs: Any = None,
    *,
    raise_exception: bool = True,
    **options: Any,
) -> bool:
    """Check the derivative of ``fn``'s backward: the vector-Jacobian product as a function
    of the inputs and of the upstream gradient ``v`` (``create_graph=True``), against
    finite differences of it, every element, batched as :func:`gradcheck`.

    Parameters
    ----------
    fn : callable or torch.nn.Module
        A function of tensors returning a tensor or a tuple of tensors.
    inputs : tensor or tuple
        The arguments; tensors with ``requires_grad=True`` are checked.
    grad_outputs : tensor or tuple, optional
        The upstream gradients ``v`` (random if None); checked as inputs of the backward.
    raise_exception : bool
        Raise :class:`~handgrad.GradientCheckError` on failure (default), else return False.
    **options
        As :func:`check_report`.

    Returns
    -------
    bool
        True when every check passed.

    Examples
    --------
    >>> import torch
    >>> import handgrad.torch as hgt
    >>> class Square(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, dy):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x.detach() * dy  # right once, but its own derivative in x is lost
    >>> x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    >>> hgt.gradcheck(Square.apply, (x,))
    True
    >>> hgt.gradgradcheck(Square.apply, (x,), raise_exception=False)
    False
    """
    report = check_report(fn, inputs, order=2, grad_outputs=grad_outputs, **options)
    return _finish(report, raise_exception)


if check_report.__doc__ is not None:  # None under python -OO, which strips docstrings
    check_report.__doc__ += _OPTIONS
