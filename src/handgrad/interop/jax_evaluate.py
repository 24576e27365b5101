"""The losses at perturbed points of a JAX function, many per call: perturbed copies of the
arguments batched with ``jax.vmap`` under ``jax.jit`` (compiled once per function, shapes
and chunk size, and reused by later checks), in chunks within a memory budget; or one copy
per call, eagerly, when ``vmap`` cannot run the function.

The loss is ``<v, f(args)>`` for a fixed cotangent ``v``, measured as a change from
``y0 = f(args)``: ``sum((f(args') - y0) * v)``, so that outputs a perturbation does not move
add no rounding. Its noise scale is ``sum |y0 v|``. A route follows
:mod:`handgrad.gradcheck.routes`: called with elements ``flat`` of one argument and their
displacements (one row per element, one column per stencil offset), it returns the loss
changes ``(m, k)`` and the noise scales ``(m,)``.

Every element of every checked argument has one index in the concatenation of the checked
leaves, so that one compiled function serves them all; copy ``c`` moves element
``index[c]`` by ``moves[c]`` (a displacement as stored, so the element becomes exactly the
value the stencil asked for). A copy left unperturbed rides along in the first call: its
change must be 0 within rounding, or the batched evaluation does not compute what the
function computes (a batching rule that mixes copies) and the loop is used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.core.errors import RandomLayerError
from handgrad.gradcheck.plan import Way

__all__ = [
    "MAX_COPIES",
    "JaxProblem",
    "Pullback",
    "Versioned",
    "VmapError",
    "call",
    "disagreement",
    "jax_modules",
    "jax_way",
    "output_shapes",
    "pullback",
]

MAX_COPIES = 4096  # copies per call: past this, a chunk gains nothing and costs memory
_SMALL = 64  # the least copies per call
_COMPILED: dict[str, Any] = {}


def jax_modules() -> tuple[Any, Any]:
    """``jax`` and ``jax.numpy``, or an ImportError that names the extra.

    Examples
    --------
    >>> from handgrad.interop.jax_evaluate import jax_modules
    >>> jax, jnp = jax_modules()
    >>> jnp.__name__
    'jax.numpy'
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as err:
        raise ImportError("handgrad.jax needs JAX: pip install 'handgrad[jax]'") from err
    return jax, jnp


@dataclass(frozen=True)
class Versioned:
    """A function with the custom rules it has now (``fwd`` and ``bwd`` of a
    ``jax.custom_vjp``, ``jvp`` of a ``jax.custom_jvp``): compiled copies are kept per
    function, and a rule redefined in place (``defvjp`` again) makes it another function.

    Examples
    --------
    >>> import jax
    >>> from handgrad.interop.jax_evaluate import Versioned
    >>> f = jax.custom_vjp(lambda x: 2 * x)
    >>> f.defvjp(lambda x: (2 * x, None), lambda _, g: (2 * g,))
    >>> before = Versioned.of(f)
    >>> f.defvjp(lambda x: (2 * x, None), lambda _, g: (3 * g,))
    >>> before == Versioned.of(f), before(1.0)
    (False, 2.0)
    """

    f: Callable[..., Any]
    rules: tuple[Any, ...]

    @classmethod
    def of(cls, f: Callable[..., Any]) -> Versioned:
        """``f`` and its rules as they are now."""
        return cls(f, tuple(getattr(f, name, None) for name in ("fwd", "bwd", "jvp")))

    def __call__(self, *args: Any) -> Any:
        return self.f(*args)


def _is_trace_error(err: BaseException) -> bool:
    """Whether ``err`` says that JAX cannot trace or batch the function (the function's
    limits, not a bug of the check's: those propagate)."""
    jax, _ = jax_modules()
    return isinstance(err, jax.errors.JAXTypeError | NotImplementedError)


def _apply(f: Callable[..., Any], treedef: Any, leaves: list[Any]) -> Any:
    return f(*treedef.unflatten(leaves))


def call(f: Callable[..., Any], treedef: Any, leaves: list[Any]) -> Any:
    """``f(*args)`` compiled with ``jax.jit`` (``f`` static: reused for equal ``f``), or
    eagerly when ``f`` cannot be traced.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import call
    >>> leaves, treedef = jax.tree.flatten((jnp.array([0.0, 1.0]),))
    >>> call(jnp.exp, treedef, leaves).tolist()
    [1.0, 2.7182817459106445]
    """
    jax, _ = jax_modules()
    if "apply" not in _COMPILED:
        _COMPILED["apply"] = jax.jit(_apply, static_argnums=(0, 1))
    try:
        return _COMPILED["apply"](f, treedef, leaves)
    except (TypeError, NotImplementedError) as err:
        if not _is_trace_error(err):
            raise
        return _apply(f, treedef, leaves)


def output_shapes(f: Callable[..., Any], treedef: Any, leaves: list[Any]) -> Any:
    """The shapes and dtypes of ``f``'s outputs (a pytree), traced, not computed (and
    remembered for equal ``f`` and argument shapes); computed eagerly when ``f`` cannot be
    traced.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import output_shapes
    >>> leaves, treedef = jax.tree.flatten((jnp.ones((2, 3)),))
    >>> output_shapes(lambda x: x.sum(0), treedef, leaves).shape
    (3,)
    """
    jax, _ = jax_modules()
    avals = tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in leaves)
    try:
        return _traced_shapes(f, treedef, avals, bool(jax.config.jax_enable_x64))
    except (TypeError, NotImplementedError) as err:
        if not _is_trace_error(err):
            raise
        return _apply(f, treedef, leaves)


@functools.lru_cache(maxsize=64)
def _traced_shapes(f: Callable[..., Any], treedef: Any, avals: tuple, x64: bool) -> Any:
    jax, _ = jax_modules()  # x64: a function may make other dtypes with x64 on
    return jax.eval_shape(lambda *given: _apply(f, treedef, list(given)), *avals)


def _pullback(f, treedef, checked, leaves, cotangent):
    """The VJP of ``f`` at ``leaves`` for the output cotangent, for the checked leaves."""
    jax, _ = jax_modules()

    def of_checked(*chosen):
        changed = list(leaves)
        for k, a in zip(checked, chosen, strict=True):
            changed[k] = a
        return _apply(f, treedef, changed)

    out, back = jax.vjp(of_checked, *[leaves[k] for k in checked])
    return out, list(back(cotangent))


def pullback(
    f: Callable[..., Any], treedef: Any, checked: tuple[int, ...], leaves: list, cotangent: Any
) -> tuple[Any, list[Any]]:
    """``f``'s output at ``leaves``, and its VJP there applied to ``cotangent`` (a pytree
    like the output): one cotangent per checked leaf. Compiled like :func:`call`, eager
    where it cannot be.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import pullback
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]), jnp.arange(2)))
    >>> def f(x, n):
    ...     return x * x * n
    >>> out, grads = pullback(f, treedef, (0,), leaves, jnp.ones(2))
    >>> out.tolist(), [g.tolist() for g in grads]  # x^2 n; 2 x n
    ([0.0, 4.0], [[0.0, 4.0]])
    """
    jax, _ = jax_modules()
    if "pullback" not in _COMPILED:
        _COMPILED["pullback"] = jax.jit(_pullback, static_argnums=(0, 1, 2))
    try:
        return _COMPILED["pullback"](f, treedef, checked, leaves, cotangent)
    except (TypeError, NotImplementedError) as err:
        if not _is_trace_error(err):
            raise
        return _pullback(f, treedef, checked, leaves, cotangent)


@dataclass(frozen=True)
class Pullback:
    """``g(leaves, v)``: the VJP of ``f`` at its argument leaves applied to ``v``, one
    cotangent per checked leaf; the function a second-order check differentiates. Equal
    for equal ``f``, so its compiled copies are reused from one check to the next.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import Pullback
    >>> leaves, treedef = jax.tree.flatten((jnp.array([3.0]),))
    >>> g = Pullback(lambda x: x**3, treedef, (0,))
    >>> g(leaves, jnp.ones(1))[0].tolist()  # 3 x^2
    [27.0]
    >>> jax.grad(lambda x: g([x], jnp.ones(1))[0].sum())(jnp.array([3.0])).tolist()  # 6 x
    [18.0]
    """

    f: Callable[..., Any]
    treedef: Any
    checked: tuple[int, ...]

    def __call__(self, leaves: list[Any], v: Any) -> list[Any]:
        return _pullback(self.f, self.treedef, self.checked, list(leaves), v)[1]


def _change(f: Callable[..., Any], treedef: Any, leaves: list[Any], y0: list, v: list) -> Any:
    """``sum((f(args) - y0) * v)`` over every output leaf, in ``v``'s dtype."""
    jax, jnp = jax_modules()
    out = jax.tree.leaves(_apply(f, treedef, leaves))
    wide = jnp.result_type(*v)
    return sum(jnp.sum((o - y).astype(wide) * w) for o, y, w in zip(out, y0, v, strict=True))


@dataclass(frozen=True)
class _Layout:
    """Where the checked leaves sit in their concatenation: (leaf, offset, size) each."""

    parts: tuple[tuple[int, int, int], ...]

    def place(self, leaves: list[Any], i: Any, move: Any) -> list[Any]:
        """``leaves`` with element ``i`` of the concatenation moved by ``move`` (traced).

        The element is found by a one-hot of floats, ``max(0, 1 - |position - i|)``: 1 there,
        0 elsewhere, exactly (positions are whole numbers held exactly), and arithmetic
        that vectorises where a select against an integer index does not (2x faster on a
        CPU); leaves whose positions the dtype cannot hold exactly use the select.
        """
        _, jnp = jax_modules()
        changed = list(leaves)
        for leaf, offset, size in self.parts:
            base = leaves[leaf]
            step = move.astype(base.dtype)
            exact = {"float64": 2**53, "float32": 2**24}.get(np.dtype(base.dtype).name, 0)
            if size < exact:
                position = jnp.arange(size, dtype=base.dtype).reshape(base.shape)
                hot = jnp.maximum(0, 1 - jnp.abs(position - (i - offset).astype(base.dtype)))
                changed[leaf] = base + step * hot  # + 0 elsewhere: unchanged, bit for bit
            else:
                here = jnp.arange(size).reshape(base.shape) == i - offset  # nowhere if not ours
                changed[leaf] = jnp.where(here, base + step, base)
        return changed


def _copies(f, treedef, layout, leaves, index, moves, y0, v):
    """The loss change of each copy ``c``: element ``index[c]`` moved by ``moves[c]``."""
    jax, _ = jax_modules()

    def one(i, move):
        return _change(f, treedef, layout.place(leaves, i, move), y0, v)

    return jax.vmap(one)(index, moves)  # C


def _compiled_copies() -> Any:
    jax, _ = jax_modules()
    if "copies" not in _COMPILED:
        _COMPILED["copies"] = jax.jit(_copies, static_argnums=(0, 1, 2))
    return _COMPILED["copies"]


def _first_difference(a: Any, b: Any) -> tuple[tuple[int, ...], float, float] | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    gap = np.abs(a - b)
    if not gap.size:
        return None
    worst = np.unravel_index(int(np.argmax(gap)), a.shape)
    return tuple(int(i) for i in worst), float(a[worst]), float(b[worst])


def disagreement(first: list, second: list, names: list[str], tol: Callable) -> str:
    """Where two evaluations differ by more than ``tol(a)``: ``"name[i]: a, then b"``, or
    "" where they agree.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.interop.jax_evaluate import disagreement
    >>> disagreement([np.array([1.0, 2.0])], [np.array([1.0, 2.5])], ["y"], lambda a: 0.0)
    'y[1]: 2.0, then 2.5'
    """
    for name, a, b in zip(names, first, second, strict=True):
        found = _first_difference(a, b)
        if found is not None and not abs(found[1] - found[2]) <= tol(a):
            where, x, y = found
            index = f"[{', '.join(map(str, where))}]" if where else ""
            return f"{name}{index}: {x!r}, then {y!r}"
    return ""


def _rounding(nondet_tol: float) -> Callable[[Any], float]:
    """How far a compiled and an eager evaluation may differ: their rounding, or more."""

    def tol(a: Any) -> float:
        eps = float(np.finfo(np.asarray(a).dtype).eps) if np.asarray(a).dtype.kind == "f" else 0
        return max(nondet_tol, 1024 * eps * float(np.max(np.abs(np.asarray(a, np.float64)))))

    return tol


class VmapError(Exception):
    """``jax.vmap`` (under ``jax.jit``) could not run the function, or its batched
    evaluation did not compute what the function computes; the message says which."""


@dataclass
class JaxProblem:
    """A function at one point, driven by the cotangent ``v``: its leaves (``treedef``
    rebuilds the arguments), which of them are checked, the outputs ``y0`` and their
    cotangents ``v`` (in the dtype the changes are summed in).

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import JaxProblem
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(jnp.sin, treedef, leaves, [0], [jnp.sin(leaves[0])], [jnp.ones(2)])
    >>> round(problem.scale, 4), problem.offset(0)  # sum |sin(x) * 1|
    (1.7508, 0)
    """

    f: Callable[..., Any]
    treedef: Any
    leaves: list[Any]
    checked: list[int]
    y0: list[Any]
    v: list[Any]
    max_memory: int = 256 * 2**20
    size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        terms = [
            float(np.sum(np.abs(np.asarray(y, np.float64) * np.asarray(w, np.float64))))
            for y, w in zip(self.y0, self.v, strict=True)
        ]
        self.scale = float(sum(terms))
        parts, offset = [], 0
        for leaf in self.checked:
            size = math.prod(np.shape(self.leaves[leaf]))
            parts.append((leaf, offset, size))
            offset += size
        self.layout = _Layout(tuple(parts))
        per_copy = sum(math.prod(np.shape(a)) for a in self.leaves)
        per_copy += sum(math.prod(np.shape(y)) for y in self.y0)
        itemsize = max(np.dtype(self.v[0].dtype).itemsize, 4)
        budget = max(1, min(MAX_COPIES, int(self.max_memory // (4 * itemsize * per_copy))))
        largest = max(size for _, _, size in parts)  # a first look and the probe in one call
        self.chunk = min(budget, max(_SMALL, 2 * largest + 1))
        self._proven = False
        self.label, self.names = "f", [f"output[{i}]" for i in range(len(self.y0))]

    def check_deterministic(self) -> None:
        """Raise :class:`RandomLayerError` when an eager call of the function does not give
        ``y0`` (a draw inside it, made anew at every call or trace)."""
        jax, _ = jax_modules()
        eager = jax.tree.leaves(_apply(self.f, self.treedef, self.leaves))
        found = disagreement(eager, self.y0, self.names, _rounding(0.0))
        if found:
            raise RandomLayerError(
                f"{self.label} is random: two calls on the same arguments gave different "
                f"outputs ({found}); pass the PRNG key as an argument (a fixed key), then "
                "check it"
            )

    def offset(self, leaf: int) -> int:
        """Where leaf ``leaf`` starts in the concatenation of the checked leaves."""
        return next(o for k, o, _ in self.layout.parts if k == leaf)

    def change(self, leaves: list[Any]) -> float:
        """The loss change at ``leaves``, one eager call of the function."""
        return float(_change(self.f, self.treedef, leaves, self.y0, self.v))

    def loop(self, index: np.ndarray, moves: np.ndarray) -> np.ndarray:
        """The change of each copy, one eager call of the function per copy."""
        _, jnp = jax_modules()
        changes = np.empty(index.shape[0])
        for c, (i, move) in enumerate(zip(index, moves, strict=True)):
            leaves = self.layout.place(self.leaves, jnp.asarray(i), jnp.asarray(move))
            changes[c] = self.change(leaves)
        return changes

    def batched(self, index: np.ndarray, moves: np.ndarray) -> np.ndarray:
        """The change of each copy, ``vmap``-ped in chunks of ``chunk`` copies (one size,
        so that one compiles; a few small calls get a smaller one). Raises
        :class:`VmapError`."""
        _, jnp = jax_modules()
        first = not self._proven
        if first:  # an unperturbed copy rides along: its change must be 0
            index = np.concatenate([[0], index])
            moves = np.concatenate([[0.0], moves])
        # one size compiles, and a second, small one where the calls are much smaller
        small = index.size <= self.chunk // 8 and self.chunk > 8 * _SMALL
        size = max(_SMALL, 1 << (index.size - 1).bit_length()) if small else self.chunk
        out = np.empty(index.size)
        compiled = _compiled_copies()
        for start in range(0, index.size, size):
            count = index[start : start + size].size
            padded_index = np.zeros(size, np.int64)
            padded_moves = np.zeros(size)  # unperturbed copies
            padded_index[:count] = index[start : start + size]
            padded_moves[:count] = moves[start : start + size]
            try:
                got = compiled(
                    self.f,
                    self.treedef,
                    self.layout,
                    self.leaves,
                    jnp.asarray(padded_index),
                    jnp.asarray(padded_moves),
                    self.y0,
                    self.v,
                )
            except (TypeError, NotImplementedError) as err:
                if not _is_trace_error(err):
                    raise
                message = str(err).splitlines()[0] if str(err) else ""
                raise VmapError(
                    f"jax.vmap of the function failed ({type(err).__name__}: {message})"
                ) from err
            out[start : start + count] = np.asarray(got, np.float64)[:count]
        if first:
            self._proven = True
            if not abs(out[0]) <= 1024 * np.finfo(self.v[0].dtype).eps * self.scale:
                self.check_deterministic()
                raise VmapError(
                    f"its batched copies do not compute what it computes (an unperturbed copy "
                    f"changed the loss by {out[0]:.2g})"
                )
            out = out[1:]
        return out


class _JaxWay(Way):
    """``vmap`` where it runs and is proven right on the point, else the loop
    (``method="auto"``) or an error (``"vmap"``)."""

    def __init__(self, problem: JaxProblem, leaf: int, name: str, method: str, notes) -> None:
        super().__init__(self._call, "loop" if method == "loop" else "vmap")
        self._problem, self._offset, self._name = problem, problem.offset(leaf), name
        self._asked, self._notes = method, notes

    def _call(self, flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        problem, (m, k) = self._problem, disp.shape
        index = np.repeat(flat + self._offset, k)
        moves = disp.reshape(-1)  # as stored: p + move is the value the stencil asked for
        if self.method == "vmap":
            try:
                changes = problem.batched(index, moves)
            except VmapError as err:
                if self._asked == "vmap":
                    raise ValueError(
                        f"method='vmap' cannot check {self._name!r}: {err}; use "
                        "method='auto' (vmap where it is right, else the loop) or 'loop'"
                    ) from err
                self._notes.append(f"{self._name}: {err}: checked by the loop")
                self.method = "loop"
        if self.method == "loop":
            changes = problem.loop(index, moves)
        return changes.reshape(m, k), np.full(m, problem.scale)


def jax_way(problem: JaxProblem, leaf: int, name: str, method: str, notes: list[str]) -> Way:
    """How the losses of argument leaf ``leaf`` (reported as ``name``) are evaluated:
    ``method`` "auto" (vmap where it runs and is proven right, else the loop), "vmap" or
    "loop"; ``notes`` gets why the loop was used instead of vmap.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from handgrad.interop.jax_evaluate import JaxProblem, jax_way
    >>> def flipped(x):  # Python control flow on values: no vmap
    ...     return x if float(x.sum()) > 0 else -x
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(flipped, treedef, leaves, [0], [leaves[0]], [jnp.ones(2)])
    >>> notes = []
    >>> way = jax_way(problem, 0, "x", "auto", notes)
    >>> way.evaluate(np.array([0]), np.array([[0.5]]))[0].tolist(), way.method
    ([[0.5]], 'loop')
    >>> notes[0].split(" (")[0]
    'x: jax.vmap of the function failed'
    """
    return _JaxWay(problem, leaf, name, method, notes)
