"""Gradient checks of JAX functions, ``jax.custom_vjp`` ones included, in reverse mode.

First order: a random cotangent ``v`` (from a stream of its own, not the arguments'), the
analytic VJP by ``jax.vjp``, and for every element of every floating-point argument the
finite differences of ``<v, f(args)>``, the perturbed copies batched with ``jax.vmap``.
Second order: the VJP as a function of the arguments and of ``v``,
``g(args, v) = vjp(f, args)(v)``, checked the same way with a second cotangent ``w``: its
analytic VJP (the VJP of the VJP, which runs the derivative of a custom bwd rule) against
finite differences of ``<w, g>``. Each element is decided as :mod:`handgrad.gradcheck`
decides a layer's (:mod:`handgrad.gradcheck.verdict`: kinks named, small gradients
resolved), and the report is its report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.errors import GradientCheckError, NonFiniteLossError, RandomLayerError
from handgrad.core.random import make_rng
from handgrad.core.validation import (
    check_choice,
    check_positive_float,
    check_positive_int,
)
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck.check import (
    DEFAULT_DIRECTIONS,
    DEFAULT_EPS,
    DEFAULT_MAX_MEMORY,
    DEFAULT_SAMPLES,
    DEFAULT_THRESHOLD,
    MODES,
)
from handgrad.gradcheck.modes import Settings, run_mode
from handgrad.gradcheck.plan import Planner
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck
from handgrad.gradcheck.targets import Target
from handgrad.gradcheck.verdict import NOISE_FACTOR
from handgrad.interop.jax_evaluate import (
    JaxProblem,
    Pullback,
    Versioned,
    disagreement,
    jax_modules,
    jax_way,
    output_shapes,
    pullback,
)
from handgrad.interop.jax_point import Point, Precision, choose_precision, make_point, x64_mode

__all__ = ["JAX_METHODS", "check_grads", "gradient_report"]

JAX_METHODS = ("auto", "vmap", "loop")
_COTANGENT_STREAM = 0x5EED  # an int seed's cotangents come from a stream of their own


@dataclass
class _Order:
    """One order's rows and what the report says about it."""

    rows: list[ParameterCheck]
    methods: set[str]
    notes: list[str]
    loss: float
    atol: float
    v: Any


def _outputs(out: Any) -> tuple[list[Any], Any, list[str]]:
    jax, _ = jax_modules()
    pairs, treedef = jax.tree_util.tree_flatten_with_path(out)
    names = ["output" + jax.tree_util.keystr(path) for path, _ in pairs]
    leaves = [leaf for _, leaf in pairs]
    for name, leaf in zip(names, leaves, strict=True):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not (np.dtype(dtype).kind == "f" or dtype.name == "bfloat16"):
            raise TypeError(
                "the function must return floating-point arrays (or a pytree of them), got "
                f"{dtype if dtype is not None else type(leaf).__name__} at {name}"
            )
    if not leaves:
        raise ValueError("the function returned no array: nothing to differentiate")
    return leaves, treedef, names


def _check_order(
    f: Callable[..., Any],
    point: Point,
    precision: Precision,
    opts: dict[str, Any],
    generator: np.random.Generator,
    suffix: str,
) -> _Order:
    """The rows of one order: ``f``'s VJP at ``point`` against finite differences."""
    jax, jnp = jax_modules()
    what = "f" if not suffix else "the VJP of f"
    shapes, out_tree, out_names = _outputs(output_shapes(f, point.treedef, point.leaves))
    wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    # v as the output's dtype holds it, the changes summed in the widest float there is
    own = [jnp.asarray(generator.standard_normal(y.shape), dtype=y.dtype) for y in shapes]
    v = [w.astype(wide) for w in own]
    kept = tuple(i for i, c in enumerate(point.checked) if c)
    names = [point.names[i] + suffix for i in kept]
    ct = out_tree.unflatten(own)
    out, cotangents = pullback(f, point.treedef, kept, point.leaves, ct)
    y0 = jax.tree.leaves(out)
    bad = [n for n, y in zip(out_names, y0, strict=True) if not np.all(np.isfinite(y))]
    if bad:
        raise NonFiniteLossError(
            f"{what} holds NaN or infinity at the arguments given ({bad[0]}); the check needs "
            "a finite output there"
        )
    again, twice = pullback(f, point.treedef, kept, point.leaves, ct)
    found = disagreement(y0, jax.tree.leaves(again), out_names, lambda a: opts["nondet_tol"])
    if found:
        raise RandomLayerError(
            f"{what} is random: two calls on the same arguments gave different outputs "
            f"({found}); pass the PRNG key as an argument (a fixed key), then check it"
        )
    found = disagreement(cotangents, twice, names, lambda a: opts["nondet_tol"])
    if found:
        raise RandomLayerError(
            f"the VJP of {what} is not deterministic: two calls on the same arguments gave "
            f"different gradients ({found}); pass nondet_tol above that gap if it is expected "
            "(atomic adds in a scatter)"
        )
    problem = JaxProblem(f, point.treedef, point.leaves, list(kept), y0, v, opts["max_memory"])
    problem.label, problem.names = what, out_names
    targets, analytic, leaf_of = [], {}, {}
    for i, name, grad in zip(kept, names, cotangents, strict=True):
        targets.append(Target(name, np.array(point.leaves[i]), None, "", None))
        analytic[name] = np.asarray(grad, np.float64)
        leaf_of[name] = i
    notes: list[str] = []

    def choose(target: Target, count: int) -> Any:
        return jax_way(problem, leaf_of[target.name], target.name, opts["method"], notes)

    def current() -> tuple[float, float]:
        leaves = list(point.leaves)
        for target in targets:
            leaves[leaf_of[target.name]] = jnp.asarray(target.array)
        return problem.change(leaves), problem.scale

    settings = Settings(
        mode=opts["mode"],
        samples=opts["samples"],
        directions=opts["directions"],
        eps=precision.eps,
        big_eps=precision.big_eps,
        stencil=opts["stencil"],
        scaled_steps=precision.scaled_steps,
        threshold=precision.threshold,
        unit=precision.unit,
    )
    planner = Planner(choose, current, notes)
    rows, _ = run_mode(targets, analytic, planner, current, generator, settings)
    loss = sum(
        float(np.sum(np.asarray(y, np.float64) * np.asarray(w, np.float64)))
        for y, w in zip(y0, v, strict=True)
    )
    atol = NOISE_FACTOR * precision.unit * max(problem.scale, 1e-300) / precision.eps
    return _Order(rows, {r.method for r in rows if r.method}, notes, loss, atol, ct)


def _cotangent_rng(rng: Any) -> np.random.Generator:
    """An int seed's cotangents come from a stream of their own: arguments drawn from the
    same seed are not the cotangents."""
    generator = make_rng(rng)  # refuses what is not a seed, a generator or None
    return np.random.default_rng([rng, _COTANGENT_STREAM]) if isinstance(rng, int) else generator


def _options(**given: Any) -> dict[str, Any]:
    nondet_tol = given["nondet_tol"]
    if (
        isinstance(nondet_tol, bool)
        or not isinstance(nondet_tol, int | float)
        or not (0 <= nondet_tol < float("inf"))
    ):
        raise ValueError(f"nondet_tol must be a finite number >= 0, got {nondet_tol!r}")
    return {
        "eps": check_positive_float(given["eps"], "eps"),
        "threshold": check_positive_float(given["threshold"], "threshold"),
        "mode": check_choice(given["mode"], "mode", MODES),
        "samples": check_positive_int(given["samples"], "samples"),
        "directions": check_positive_int(given["directions"], "directions"),
        "stencil": fd.make_stencil(given["stencil"], given["richardson"]),
        "scaled_steps": bool(given["scaled_steps"]),
        "method": check_choice(given["method"], "method", JAX_METHODS),
        "max_memory": check_positive_int(given["max_memory"], "max_memory"),
        "nondet_tol": float(nondet_tol),
    }


def gradient_report(
    f: Callable[..., Any],
    args: tuple,
    order: int = 1,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
    mode: str = "full",
    samples: int = DEFAULT_SAMPLES,
    directions: int = DEFAULT_DIRECTIONS,
    stencil: str = "central",
    richardson: int = 0,
    scaled_steps: bool = False,
    method: str = "auto",
    max_memory: int = DEFAULT_MAX_MEMORY,
    float64: bool = True,
    nondet_tol: float = 0.0,
    rng: Any = None,
) -> GradientCheckReport:
    """The report of :func:`check_grads` (same arguments), failed or not.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from handgrad.interop.jax_check import gradient_report
    >>> report = gradient_report(jnp.sin, (np.linspace(0.0, 1.0, 5),), rng=0)
    >>> report.passed, report["x"].n_checked, report.precision
    (True, 5, 'float64')
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if not isinstance(args, tuple | list):
        raise TypeError(
            "args must be a tuple of the function's arguments (arrays or pytrees of arrays), "
            f"got {type(args).__name__}; write (x,) for one argument"
        )
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    opts = _options(
        eps=eps,
        threshold=threshold,
        mode=mode,
        samples=samples,
        directions=directions,
        stencil=stencil,
        richardson=richardson,
        scaled_steps=scaled_steps,
        method=method,
        max_memory=max_memory,
        nondet_tol=nondet_tol,
    )
    generator = _cotangent_rng(rng)
    with x64_mode(bool(float64)):
        point = make_point(f, args)
        f = Versioned.of(f)  # a rule redefined in place is compiled anew
        if not any(point.checked):
            raise ValueError("nothing to check: args hold no floating-point array")
        precision = choose_precision(f, point, bool(float64), eps, threshold, scaled_steps)
        orders = [_check_order(f, precision.point, precision, opts, generator, "")]
        if order == 2:
            point2 = _second_order_point(f, precision.point, orders[0].v)
            kept = tuple(i for i, c in enumerate(precision.point.checked) if c)
            pulled = Pullback(f, precision.point.treedef, kept)
            orders.append(_check_order(pulled, point2, precision, opts, generator, " (order 2)"))
    methods = set().union(*(o.methods for o in orders))
    notes = [precision.note] if precision.note else []
    notes += [note for o in orders for note in o.notes]
    if order == 2:
        notes.append(
            "order 2: the VJP g(args, v) checked against finite differences of "
            f"<w, g> for a second random cotangent w (noise floor {orders[1].atol:.1e})"
        )
    return GradientCheckReport(
        tuple(row for o in orders for row in o.rows),
        eps=precision.eps,
        threshold=precision.threshold,
        atol=orders[0].atol,
        loss=orders[0].loss,
        mode=opts["mode"],
        method=methods.pop() if len(methods) == 1 else "mixed" if methods else "-",
        stencil=opts["stencil"].name,
        precision=precision.name,
        notes=tuple(notes),
    )


def _second_order_point(f: Callable[..., Any], point: Point, v: Any) -> Point:
    """The arguments of the VJP, ``(leaves, v)``: f's argument leaves and the cotangent."""
    jax, _ = jax_modules()
    cotangent = make_point(f, (v,), prefix="v")
    leaves, treedef = jax.tree.flatten((list(point.leaves), v))
    return Point(leaves, treedef, point.names + cotangent.names, point.checked + cotangent.checked)


def check_grads(
    f: Callable[..., Any],
    args: tuple,
    order: int = 1,
    *,
    raise_on_failure: bool = True,
    **options: Any,
) -> bool:
    """Check the reverse-mode derivatives of a JAX function on every element.

    Parameters
    ----------
    f : callable
        A JAX function (``jax.custom_vjp`` ones included) of the arguments ``args``,
        returning an array or a pytree of floating-point arrays.
    args : tuple
        The arguments: arrays, or pytrees of them (tuples, lists, dicts). Floating-point
        leaves are checked; integer leaves (indices) are passed as they are.
    order : {1, 2}
        1: the VJP against finite differences of ``<v, f(args)>``. 2: that, and the VJP
        itself, as a function of the arguments and of ``v``, differentiated again (the
        derivative of a custom bwd rule) against finite differences of it.
    raise_on_failure : bool
        Raise :class:`~handgrad.GradientCheckError` on failure (default) or return False.
    **options
        ``eps`` (1e-6), ``threshold`` (1e-6), ``mode`` ("full": every element; "sample",
        "fast"), ``samples``, ``directions``, ``stencil``, ``richardson``,
        ``scaled_steps``, as for :func:`handgrad.check_layer`; ``method`` ("auto": the
        copies batched with ``jax.vmap`` where that is proven right on the point, else
        one by one; "vmap"; "loop"); ``max_memory`` (bytes per batched call, 256 MiB);
        ``float64`` (True: the check turns JAX's x64 mode on for itself alone and runs on
        float64 copies where f computes the same there; False: at the arguments' own
        precision, float32 with float32's noise handling); ``nondet_tol`` (0: how far two
        evaluations at the same point may differ); ``rng`` (seeds the cotangents, from a
        stream of their own).

    Returns
    -------
    bool
        True when every element passed; False on failure with ``raise_on_failure=False``.

    Raises
    ------
    GradientCheckError
        When an element fails and ``raise_on_failure`` is true; its ``report`` names the
        argument, the element, both values and how many are off.

    Examples
    --------
    >>> import jax
    >>> import numpy as np
    >>> from handgrad.interop.jax_check import check_grads
    >>> @jax.custom_vjp
    ... def square(x):
    ...     return x * x
    >>> square.defvjp(lambda x: (x * x, x), lambda x, g: (x * g,))  # a slip: 2 x g
    >>> x = np.linspace(0.5, 1.5, 4)
    >>> check_grads(square, (x,), rng=0, raise_on_failure=False)
    False
    >>> try:
    ...     check_grads(square, (x,), rng=0)
    ... except Exception as err:
    ...     print(str(err).split(":")[0])
    gradient check failed for 'x' (shape (4,))
    """
    report = gradient_report(f, args, order, **options)
    if report.passed:
        return True
    if raise_on_failure:
        raise GradientCheckError(report)
    return False
