"""The losses at perturbed points of a JAX function, many per call: the perturbed copies of
one argument batched with ``jax.vmap`` (compiled once per function, argument and chunk
size, in chunks within a memory budget), or one copy per call when ``vmap`` cannot run
the function.

The loss is ``<v, f(args)>`` for a fixed cotangent ``v``, measured as a change from
``y0 = f(args)``: ``sum((f(args') - y0) * v)``, so that outputs a perturbation does not move
add no rounding. Its noise scale is ``sum |y0 v|``. A route follows
:mod:`handgrad.gradcheck.routes`: called with elements ``flat`` of one argument and their
displacements (one row per element, one column per stencil offset), it returns the loss
changes ``(m, k)`` and the noise scales ``(m,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.gradcheck.plan import Way

__all__ = ["JaxProblem", "VmapError", "jax_modules", "jax_way", "loop_losses", "vmap_route"]

_COMPILED: dict[str, Any] = {}
MAX_COPIES = 4096  # copies per call: past this, a chunk gains nothing and costs memory


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


@dataclass
class JaxProblem:
    """A function at one point, driven by the cotangent ``v``.

    ``leaves`` are the flattened arguments (``treedef`` rebuilds them) as the function gets
    them; ``y0`` and ``v`` the output leaves and their cotangents; ``wide`` the dtype the
    loss changes are summed in.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_evaluate import JaxProblem
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(jnp.sin, treedef, leaves, [jnp.sin(leaves[0])], [jnp.ones(2)])
    >>> round(problem.scale, 4)  # sum |sin(x) * 1|
    1.7508
    """

    f: Callable[..., Any]
    treedef: Any
    leaves: list[Any]
    y0: list[Any]
    v: list[Any]

    def __post_init__(self) -> None:
        terms = [
            np.abs(np.asarray(y, np.float64) * np.asarray(w))
            for y, w in zip(self.y0, self.v, strict=True)
        ]
        self.scale = float(sum(float(np.sum(t)) for t in terms))
        self.wide = np.result_type(*[np.asarray(w).dtype for w in self.v])

    def change(self, leaves: list[Any]) -> float:
        """The loss change at ``leaves`` (one call of the function)."""
        return float(_change(self.f, self.treedef, leaves, self.y0, self.v))


def _change(f: Callable[..., Any], treedef: Any, leaves: list[Any], y0: list, v: list) -> Any:
    """``sum((f(args) - y0) * v)`` over every output leaf."""
    jax, jnp = jax_modules()
    out = jax.tree.leaves(f(*treedef.unflatten(leaves)))
    wide = jnp.result_type(*v)
    return sum(jnp.sum((o - y).astype(wide) * w) for o, y, w in zip(out, y0, v, strict=True))


def _copies_losses(f, treedef, leaf, leaves, index, values, y0, v):
    """The loss change of each copy: argument leaf ``leaf`` with element ``index[c]`` set to
    ``values[c]``, batched over copies ``c`` (traced once per shape, under ``jax.jit``)."""
    jax, _ = jax_modules()
    base = leaves[leaf]

    def one(i, value):
        moved = base.reshape(-1).at[i].set(value).reshape(base.shape)
        changed = [moved if k == leaf else a for k, a in enumerate(leaves)]
        return _change(f, treedef, changed, y0, v)

    return jax.vmap(one)(index, values)  # C


def _compiled() -> Any:
    if "copies" not in _COMPILED:
        jax, _ = jax_modules()
        _COMPILED["copies"] = jax.jit(_copies_losses, static_argnums=(0, 1, 2))
    return _COMPILED["copies"]


def loop_losses(problem: JaxProblem, leaf: int, index: np.ndarray, values: np.ndarray) -> Any:
    """The loss change of each copy, one call of the function per copy.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from handgrad.interop.jax_evaluate import JaxProblem, loop_losses
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(lambda x: x * x, treedef, leaves, [leaves[0] ** 2], [jnp.ones(2)])
    >>> loop_losses(problem, 0, np.array([1]), np.array([3.0])).tolist()  # 3^2 - 2^2
    [5.0]
    """
    _, jnp = jax_modules()
    base = problem.leaves[leaf]
    changes = np.empty(index.shape[0])
    for c, (i, value) in enumerate(zip(index, values, strict=True)):
        moved = base.reshape(-1).at[int(i)].set(value).reshape(base.shape)
        leaves = [moved if k == leaf else a for k, a in enumerate(problem.leaves)]
        changes[c] = problem.change(leaves)
    return jnp.asarray(changes)


class VmapError(Exception):
    """``jax.vmap`` (under ``jax.jit``) could not run the function; ``cause`` says why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {str(cause).splitlines()[0]}")
        self.cause = cause


def vmap_route(problem: JaxProblem, leaf: int, max_memory: int) -> Callable:
    """A route over the elements of argument leaf ``leaf``: their copies in chunks of a
    power of two (so that few sizes compile), each chunk's bytes within ``max_memory``.
    Raises :class:`VmapError` on its first call when ``vmap`` cannot run the function.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from handgrad.interop.jax_evaluate import JaxProblem, vmap_route
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(lambda x: x * x, treedef, leaves, [leaves[0] ** 2], [jnp.ones(2)])
    >>> changes, scales = vmap_route(problem, 0, 2**20)(np.array([0, 1]), np.array([[1.0], [-1.0]]))
    >>> changes.tolist(), scales.tolist()  # 2^2 - 1^2, 1^2 - 2^2; sum |y0 v| = 5
    ([[3.0], [-3.0]], [5.0, 5.0])
    """
    _, jnp = jax_modules()
    base = problem.leaves[leaf]
    per_copy = sum(math.prod(np.shape(a)) for a in problem.leaves)
    per_copy += sum(math.prod(np.shape(y)) for y in problem.y0)
    itemsize = max(np.dtype(problem.wide).itemsize, 4)
    budget = max(1, min(MAX_COPIES, int(max_memory // (4 * itemsize * per_copy))))
    limit = 1 << (budget.bit_length() - 1)  # the largest power of two within the budget
    base64 = np.asarray(base, np.float64).reshape(-1)
    compiled = _compiled()

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        index = np.repeat(flat, k)
        values = (base64[flat][:, None] + disp).reshape(-1)  # exact: as stored in modes
        size = min(limit, 1 << max(0, (index.size - 1).bit_length()))
        out = np.empty(index.size)
        for start in range(0, index.size, size):
            part = slice(start, start + size)
            count = index[part].size
            padded_index = np.zeros(size, np.int64)
            padded_values = np.full(size, base64[0])
            padded_index[:count], padded_values[:count] = index[part], values[part]
            try:
                got = compiled(
                    problem.f,
                    problem.treedef,
                    leaf,
                    problem.leaves,
                    jnp.asarray(padded_index),
                    jnp.asarray(padded_values, dtype=base.dtype),
                    problem.y0,
                    problem.v,
                )
            except (TypeError, NotImplementedError) as err:  # JAX's tracer errors are TypeErrors
                if _is_trace_error(err):
                    raise VmapError(err) from err
                raise
            out[part] = np.asarray(got, np.float64)[:count]
        return out.reshape(m, k), np.full(m, problem.scale)

    return route


def _is_trace_error(err: BaseException) -> bool:
    """Whether ``err`` says that the function cannot be traced or batched (not a bug of
    the check's own: those propagate)."""
    jax, _ = jax_modules()
    return isinstance(err, jax.errors.JAXTypeError | NotImplementedError)


class _JaxWay(Way):
    """``vmap`` proven on the real point first: the copies of the first element it is given
    are also evaluated one by one, and must agree within rounding; else, or when ``vmap``
    cannot run the function, the loop (``method="auto"``) or an error (``"vmap"``)."""

    def __init__(self, problem: JaxProblem, leaf: int, name: str, method: str, options) -> None:
        super().__init__(self._call, "loop" if method == "loop" else "vmap")
        self._problem, self._leaf, self._name, self._asked = problem, leaf, name, method
        self._max_memory, self._unit, self._notes = options
        self._fast = vmap_route(problem, leaf, self._max_memory)
        self._proven = method == "loop"

    def _loop(self, flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(self._problem.leaves[self._leaf], np.float64).reshape(-1)[flat]
        got = loop_losses(
            self._problem,
            self._leaf,
            np.repeat(flat, disp.shape[1]),
            (values[:, None] + disp).reshape(-1),
        )
        changes = np.asarray(got, np.float64).reshape(disp.shape)
        return changes, np.full(flat.shape[0], self._problem.scale)

    def _call(self, flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "loop":
            return self._loop(flat, disp)
        try:
            got = self._fast(flat, disp)
        except VmapError as failed:
            return self._give_up(f"jax.vmap of the function failed ({failed})", flat, disp)
        if not self._proven:
            self._proven = True
            alone = self._loop(flat[:1], disp[:1])[0]
            gap = float(np.max(np.abs(alone - got[0][:1])))
            if not gap <= 1024 * self._unit * max(self._problem.scale, 1e-300):
                return self._give_up(
                    f"its batched losses differ from one-by-one ones by {gap:.2g}", flat, disp
                )
        return got

    def _give_up(self, reason: str, flat, disp) -> tuple[np.ndarray, np.ndarray]:
        if self._asked == "vmap":
            raise ValueError(
                f"method='vmap' cannot check {self._name!r}: {reason}; use method='auto' "
                "(vmap where it is right, else the loop) or 'loop'"
            )
        self._notes.append(f"{self._name}: {reason}: checked by the loop")
        self.method = "loop"
        return self._loop(flat, disp)


def jax_way(
    problem: JaxProblem,
    leaf: int,
    name: str,
    method: str,
    max_memory: int,
    unit: float,
    notes: list[str],
) -> Way:
    """How the losses of argument leaf ``leaf`` (reported as ``name``) are evaluated:
    ``method`` "auto" (vmap where it is proven right, else the loop), "vmap" or "loop";
    ``notes`` gets why the loop was used instead of vmap.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from handgrad.interop.jax_evaluate import JaxProblem, jax_way
    >>> def clipped(x):  # Python control flow on values: no vmap
    ...     return x if float(x.sum()) > 0 else -x
    >>> leaves, treedef = jax.tree.flatten((jnp.array([1.0, 2.0]),))
    >>> problem = JaxProblem(clipped, treedef, leaves, [leaves[0]], [jnp.ones(2)])
    >>> notes = []
    >>> way = jax_way(problem, 0, "x", "auto", 2**20, 2.0**-52, notes)
    >>> way.evaluate(np.array([0]), np.array([[0.5]]))[0].tolist(), way.method
    ([[0.5]], 'loop')
    >>> notes[0].split(" (")[0]
    'x: jax.vmap of the function failed'
    """
    return _JaxWay(problem, leaf, name, method, (max_memory, unit, notes))
