"""Choosing, per array, the fastest way to evaluate perturbed losses that is known to be
right, before any of it is used.

handgrad's own layers declare that they take stacked copies (``broadcasts = True``, see
:func:`declares_broadcasting`): a chain of them is batched through
:class:`~handgrad.gradcheck.finite_differences.BatchedEvaluator` with its shortcuts. For
anything else each fast route is first tried on the real input (:mod:`.probes`):

- the input of a layer checked by ``check_layer``: its samples alone, many per call, if
  the layer treats samples independently ("rows"); else copies stacked on a new axis
  ("batched"); else the loop;
- a parameter of such a layer: one element of every slice per evaluation, each change read
  from its own slice of the output, if each slice along one of its axes moves one slice of
  the output alone ("columns", stacked when the layer takes stacked copies of it,
  ``method="auto"`` only); else copies of it stacked in its place ("batched"); else the loop;
- a parameter inside a model checked by ``check_gradients``: batched through the chain when
  every layer after it and the loss take stacked copies, else the loop.

``method="batched"`` or ``"rows"`` asks for one route: if the probe says no, the check
stops with the reason instead of running something else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.core.arrays import to_numpy
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck import probes, shortcuts
from handgrad.gradcheck.columns import columns_route, probe_columns, worth_probing
from handgrad.gradcheck.routes import (
    LayerProblem,
    Route,
    as_float64,
    loop_route,
    rows_route,
    stacked_input_route,
    stacked_param_route,
)
from handgrad.gradcheck.state import fresh
from handgrad.gradcheck.targets import Target
from handgrad.nn.registry import LAYER_TYPES

__all__ = [
    "MIN_BATCHED",
    "Planner",
    "Way",
    "declares_broadcasting",
    "layer_planner",
    "model_planner",
]

MIN_BATCHED = 8  # below this many elements a probe costs more than the loop saves
_RACE_FAST, _RACE_LOOP = 128, 8  # losses each side of the race evaluates
_SLOWER = 1.25  # a probed way this much slower per loss than the loop gives way
_PROBE_SEED = 20261
_FORWARD = ("forward", "forward_unchecked", "_forward")


def declares_broadcasting(layer: Any) -> bool:
    """True when ``layer`` says it takes stacked copies (``broadcasts = True``) and no class
    below its handgrad layer type rewrote its forward pass, which the promise was about.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.plan import declares_broadcasting
    >>> class Mine(hg.Tanh):
    ...     def forward(self, x):
    ...         return super().forward(x)
    >>> declares_broadcasting(hg.Tanh()), declares_broadcasting(Mine())
    (True, False)
    """
    if not getattr(layer, "broadcasts", False):
        return False
    for cls in type(layer).__mro__:
        if LAYER_TYPES.get(cls.__name__) is cls:
            return True
        if any(name in vars(cls) for name in _FORWARD):
            return cls is type(layer) and "broadcasts" in vars(cls)
    return True


@dataclass
class Way:
    """How one array's perturbed losses are evaluated: ``evaluate(flat, disp)`` and the
    method's name for the report.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.plan import Way
    >>> from handgrad.gradcheck.routes import loop_route
    >>> p = np.zeros(2)
    >>> way = Way(loop_route(lambda: (float(p.sum()), 1.0), p), "loop")
    >>> way.method, way.evaluate(np.array([0]), np.array([[1.0]]))[0].tolist()
    ('loop', [[1.0]])
    """

    evaluate: Route
    method: str


class _Timed(Way):
    """A probed route raced against the loop on the first elements it is given: the fast
    route evaluates enough of them for 128 losses and, unless it took at most ``floor()``
    per loss (the least wall time of one forward at x, which the loop pays per loss and
    more), the loop the next ones for 8; the faster per loss takes the rest, now and later
    (both are right: this is only speed; ``method="auto"`` only)."""

    def __init__(
        self,
        fast: Route,
        method: str,
        loop: Route,
        notes: list[str],
        name: str,
        floor: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__(self._call, method)
        self._fast, self._loop, self._notes, self._name = fast, loop, notes, name
        self._floor = floor
        self._raced = False

    def _call(self, flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._raced:
            return (self._loop if self.method == "loop" else self._fast)(flat, disp)
        m, k = disp.shape
        fast_part = -(-_RACE_FAST // k)  # elements for that many losses, rounded up
        loop_part = -(-_RACE_LOOP // k)
        if fast_part + loop_part >= m:
            return self._fast(flat, disp)
        start = time.process_time()  # CPU time: what others run meanwhile does not count
        results = [self._fast(flat[:fast_part], disp[:fast_part])]
        fast_time = (time.process_time() - start) / fast_part
        done = fast_part
        if fast_time > self._floor() * k:  # not faster than any loop: time the loop too
            done = fast_part + loop_part
            start = time.process_time()
            results.append(self._loop(flat[fast_part:done], disp[fast_part:done]))
            if fast_time > _SLOWER * (time.process_time() - start) / loop_part:
                self._notes.append(f"{self._name}: {self.method} was slower than the loop here")
                self.method = "loop"
        self._raced = True
        results.append(self._call(flat[done:], disp[done:]))
        return tuple(np.concatenate(values) for values in zip(*results, strict=True))


@dataclass
class Planner:
    """Ways by target name, chosen on first use; ``notes`` says why a faster one was not
    used. ``current()`` gives the loss change and noise scale at the arrays' present values.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.plan import layer_planner
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> from handgrad.gradcheck.targets import param_targets
    >>> layer, x = hg.Linear(3, 2, rng=0), np.ones((4, 3))
    >>> problem = LayerProblem(layer, x, layer.forward(x), np.ones((4, 2)))
    >>> planner = layer_planner(problem, "auto", 2**20, 2.0**-52, [layer])
    >>> [planner.way(t, 6).method for t in param_targets(layer)]
    ['batched', 'batched']
    """

    choose: Callable[[Target, int], Way]
    current: Callable[[], tuple[float, float]]
    notes: list[str]
    ways: dict[str, Way] = field(default_factory=dict)

    def way(self, target: Target, count: int) -> Way:
        """The way to evaluate ``target`` (``count`` elements of it are to be checked)."""
        if target.name not in self.ways:
            self.ways[target.name] = self.choose(target, count)
        return self.ways[target.name]


def _refused(method: str, target: Target, reason: str) -> ValueError:
    return ValueError(
        f"method={method!r} cannot check {target.name!r}: {reason}; use method='auto' "
        "(the fastest way that is right) or 'loop'"
    )


def _tied(target: Target) -> str:
    return f"{target.name} is held by several layers (tied), which cannot be perturbed at once"


def layer_planner(
    problem: LayerProblem,
    method: str,
    max_memory: int,
    unit: float,
    chain: list[Any] | None,
) -> Planner:
    """Ways for ``check_layer``; ``chain`` is the layers when all of them are handgrad's
    own (declared to take stacked copies), else None (see :class:`Planner`'s example)."""
    rng = np.random.default_rng(_PROBE_SEED)
    evaluators: list[fd.BatchedEvaluator] = []
    notes: list[str] = []

    def head(stack: Any) -> tuple[np.ndarray, np.ndarray]:
        outputs = np.asarray(to_numpy(stack), dtype=np.float64)
        return problem.changes(outputs), np.full(stack.shape[0], problem.scale)

    def chained(target: Target) -> Way:
        if not evaluators:
            evaluators.append(fd.BatchedEvaluator(chain, problem.x, head, max_memory))
        evaluator = evaluators[0]
        return Way(
            lambda flat, disp: evaluator.evaluate(
                target.index, target.key, target.array, flat, disp
            ),
            "batched",
        )

    def timed(target: Target, fast: Route, name: str, seconds: float) -> Way:
        if method != "auto" or seconds <= problem.forward_seconds:
            return Way(fast, name)  # asked for, or its probe was faster per copy than a forward
        loop = loop_route(problem.current, target.array)
        return _Timed(fast, name, loop, notes, target.name, lambda: problem.forward_seconds)

    def choose(target: Target, count: int) -> Way:
        loop = Way(loop_route(problem.current, target.array), "loop")
        if method == "loop":
            return loop
        if target.tied:
            if method == "batched":
                raise _refused(method, target, _tied(target))
            return loop
        if chain is not None and method in ("auto", "batched"):
            return chained(target)
        if method == "auto" and count < MIN_BATCHED:
            return loop
        if target.owner is None:
            found = _input_way(problem, method, max_memory, unit, rng, target)
        elif method == "rows":
            return loop
        else:
            found = _param_way(problem, method, max_memory, unit, rng, target, count)
        if isinstance(found, str):
            notes.append(f"{target.name}: checked by the loop ({found})")
            return loop
        return timed(target, *found)

    return Planner(choose, problem.current, notes)


def _input_way(
    problem: LayerProblem,
    method: str,
    max_memory: int,
    unit: float,
    rng: np.random.Generator,
    target: Target,
) -> tuple[Route, str, float] | str:
    """The input's fastest proven route, its name and its probe's time per copy, or why
    there is none."""
    reasons = []
    if method in ("auto", "rows"):
        found = probes.probe_rows(problem, unit, rng)
        if found.ok:
            return rows_route(problem, max_memory), "rows", found.seconds
        if method == "rows":
            raise _refused(method, target, found.reason)
        reasons.append(f"rows: {found.reason}")
    found = probes.probe_stacking(problem.forward, problem.x, unit, rng)
    if found.ok:
        return stacked_input_route(problem, found.axis, max_memory), "batched", found.seconds
    if method == "batched":
        raise _refused(method, target, found.reason)
    return "; ".join([*reasons, f"batched: {found.reason}"])


def _param_way(
    problem: LayerProblem,
    method: str,
    max_memory: int,
    unit: float,
    rng: np.random.Generator,
    target: Target,
    count: int,
) -> tuple[Route, str, float] | str:
    """A parameter's fastest proven route (with ``method="auto"``: one element of every
    slice per evaluation, if its slices move slices of the output alone, stacked if it takes
    stacked copies; else stacked copies), its name and its probe's time per loss, or why
    there is none."""
    found = probes.probe_stacked_param(problem, target.owner, target.key, unit, rng)
    shape, out_shape = tuple(target.array.shape), problem.y0.shape
    cost = 1.0  # in forwards, per evaluation: the loop's
    if found.ok:  # what a stacked copy adds to its call: the call less one forward's cost
        forward = problem.forward_seconds
        cost = max(found.seconds * found.copies - forward, 0.0) / (found.copies * forward)
    if method == "auto" and worth_probing(shape, out_shape, count, cost):
        columns = probe_columns(problem, target.owner, target.key, unit, rng)
        if columns.ok:
            stacked = found if found.ok else None
            route = columns_route(problem, target.owner, target.key, columns, stacked, max_memory)
            n = shape[columns.param_axis]
            return route, "columns", found.seconds / n if found.ok else columns.seconds
    if found.ok:
        route = stacked_param_route(
            problem, target.owner, target.key, found.layout, found.axis, max_memory
        )
        return route, "batched", found.seconds
    if method == "batched":
        raise _refused(method, target, found.reason)
    return f"batched: {found.reason}"


def model_planner(
    layers: list[Any],
    loss: Any,
    x: Any,
    y: Any,
    loss_at: Callable[[], float],
    base: float,
    scale: float,
    method: str,
    max_memory: int,
    unit: float,
) -> Planner:
    """Ways for ``check_gradients``: the chain ``layers`` batched after a perturbation
    where the layers after it and the loss take stacked copies, else the loop.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.plan import model_planner
    >>> from handgrad.gradcheck.targets import param_targets
    >>> model, loss = hg.mlp([3, 4, 2], rng=0), hg.CrossEntropyLoss()
    >>> x, y = np.ones((2, 3)), np.array([0, 1])
    >>> def loss_at():
    ...     return float(loss.forward(model.forward(x), y))
    >>> base = loss_at()
    >>> planner = model_planner(
    ...     model.layers, loss, x, y, loss_at, base, 1.0, "auto", 2**20, 2.0**-52
    ... )
    >>> {t.name: planner.way(t, 12).method for t in param_targets(model)}["0.weight"]
    'batched'
    """
    rng = np.random.default_rng(_PROBE_SEED)
    trusted = [declares_broadcasting(layer) for layer in layers]
    evaluators: list[fd.BatchedEvaluator] = []
    shortcut: list[shortcuts.CrossEntropyChanges | None] = []
    stacks: dict[int, probes.Finding] = {}
    notes: list[str] = []

    def forward(i: int, a: Any) -> Any:  # a user's layer gets and gives copies
        return layers[i].forward(a) if trusted[i] else fresh(layers[i].forward(fresh(a)))

    def fused(copies: fd.RankOne) -> Any:  # the loss's shortcut, built at the first copies
        if not shortcut:
            shortcut.append(shortcuts.CrossEntropyChanges.of(loss, y, copies.base))
        return None if shortcut[0] is None else shortcut[0](copies.delta, copies.vectors)

    def evaluator() -> fd.BatchedEvaluator:
        if not evaluators:
            head = lambda stack: loss.forward(stack, y) - base  # noqa: E731
            evaluators.append(fd.BatchedEvaluator(layers, x, head, max_memory, forward, fused))
        return evaluators[0]

    def takes_stacks(i: int) -> probes.Finding:
        if i not in stacks:
            if (i == len(layers) and getattr(loss, "broadcasts", False)) or (
                i < len(layers) and trusted[i]
            ):
                stacks[i] = probes.Finding(True)
            else:
                call = (
                    (lambda a: loss.forward(fresh(a), y))
                    if i == len(layers)
                    else (lambda a: layers[i].forward(fresh(a)))
                )
                found = probes.probe_stacking(
                    lambda a: as_float64(call(a)), evaluator().inputs[i], unit, rng
                )
                stacks[i] = found
        return stacks[i]

    def current() -> tuple[float, float]:
        return loss_at() - base, scale

    def chained(target: Target) -> Way:
        def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            changes, _ = evaluator().evaluate(target.index, target.key, target.array, flat, disp)
            return changes, np.full(flat.shape, scale)

        return Way(route, "batched")

    def choose(target: Target, count: int) -> Way:
        loop = Way(loop_route(current, target.array), "loop")
        if method == "rows":
            raise _refused(
                method,
                target,
                "rows perturbs samples of a layer's input (check_layer); a model's loss is "
                "not one number per sample",
            )
        if method == "loop":
            return loop
        if target.tied:
            if method == "batched":
                raise _refused(method, target, _tied(target))
            return loop
        first = 0 if target.index is None else target.index + 1
        declared = all(trusted[first:]) and getattr(loss, "broadcasts", False)
        if method == "auto" and count < MIN_BATCHED and not declared:
            return loop  # a probe would cost more than it saves
        for i in range(first, len(layers) + 1):
            found = takes_stacks(i)
            if not found.ok:
                what = "the loss" if i == len(layers) else f"layer {i} ({type(layers[i]).__name__})"
                reason = f"{what} does not take stacked copies: {found.reason}"
                if method == "batched":
                    raise _refused(method, target, reason)
                notes.append(f"{target.name}: checked by the loop, since {reason}")
                return loop
        return chained(target)

    return Planner(choose, current, notes)
