"""How the perturbed losses of one checked tensor are evaluated for a PyTorch function,
the fastest way proven right on the real input first:

- ``rows``: the function treats the samples of the leading axis independently, the one
  this tensor shares with the outputs (and with the other inputs that have it, such as
  attention's q, k, v or a backward's upstream gradient): many perturbed samples alone
  in one call, each with its own samples of those inputs (the trust issue's probe and
  route, for several inputs at once);
- ``vmap``: ``torch.func.vmap`` over perturbed copies, where the function supports it (a
  custom ``autograd.Function`` needs ``setup_context`` and a vmap rule) and gives, on a
  few copies, what they give one by one;
- ``stacked``: copies stacked on a new leading axis in one plain call, where the probe
  shows that the function broadcasts over it;
- ``loop``: one element at a time, in place, restored.

The loss is ``<v, f(x)>`` summed over the outputs, measured as a change from ``f(x)``
(see :class:`~handgrad.gradcheck.routes.LayerProblem`); copies are made in chunks that fit
the memory budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from handgrad.gradcheck import probes
from handgrad.gradcheck.routes import LayerProblem, Route, loop_route, stacked_input_route

__all__ = ["METHODS", "choose_route", "combined", "problem_for", "rows_route", "vmap_route"]

METHODS = ("auto", "rows", "vmap", "stacked", "loop")
MIN_BATCHED = 8  # below this many elements a probe costs more than the loop saves
_PROBE_COPIES = 3
_TEMPORARIES = (
    8  # float64 arrays of a copy's size alive at once per copy (copies, outputs, products)
)
_AGREE = 256  # units of roundoff within which the vmapped copies equal the copies one by one

Evaluate = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]


def combined(outs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The outputs as one float64 tensor: one output as it is; several that share a leading
    axis side by side, (n, -1) each; else all flattened.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_routes import combined
    >>> combined((torch.ones(4, 3), torch.ones(4))).shape  # side by side
    torch.Size([4, 4])
    >>> combined((torch.ones(2), torch.ones(3))).shape  # flattened
    torch.Size([5])
    """
    if len(outs) == 1:
        return outs[0].to(torch.float64)
    if all(o.ndim >= 1 for o in outs) and len({o.shape[0] for o in outs}) == 1:
        return torch.cat([o.to(torch.float64).reshape(o.shape[0], -1) for o in outs], 1)
    return torch.cat([o.to(torch.float64).reshape(-1) for o in outs])


class _Substituted:
    """The function as a layer of one tensor (the others fixed), for the trust issue's
    probes and routes: ``forward(x)`` is the combined outputs with ``x`` in ``name``'s place."""

    def __init__(self, evaluate: Evaluate, name: str) -> None:
        self.evaluate, self.name = evaluate, name
        self.params: dict = {}
        self.grads: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return combined(self.evaluate({self.name: x}))


def problem_for(
    evaluate: Evaluate, name: str, x: torch.Tensor, y0: tuple, upstream: tuple
) -> LayerProblem:
    """The trust issue's problem for tensor ``name`` (its own copy ``x``): the loss
    ``<v, f>`` with ``f`` its combined outputs.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_routes import problem_for
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> p = problem_for(lambda o: (o["x"] * 2,), "x", x, (x * 2,), (torch.ones(2).double(),))
    >>> p.scale
    4.0
    """
    y = combined(y0).cpu().numpy()
    r = combined(upstream).cpu().numpy()
    return LayerProblem(_Substituted(evaluate, name), x, y, r)


def _changes(outs: tuple, y0: tuple, upstream: tuple, copies: int) -> torch.Tensor:
    """``<v, out - y0>`` per copy (outputs with a leading copies axis), in float64."""
    total = torch.zeros(copies, dtype=torch.float64, device=y0[0].device)
    for o, base, v in zip(outs, y0, upstream, strict=True):
        moved = o.to(torch.float64) - base.to(torch.float64)
        total += (moved * v.to(torch.float64)).reshape(copies, -1).sum(1)
    return total


def vmap_route(
    vmapped: Evaluate,
    name: str,
    x: torch.Tensor,
    y0: tuple,
    upstream: tuple,
    scale: float,
    max_memory: int,
) -> Route:
    """Perturbed copies of ``x`` through ``torch.func.vmap`` of ``vmapped``, in chunks.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.interop.torch_routes import vmap_route
    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> f = lambda o: (o["x"] ** 2,)
    >>> route = vmap_route(f, "x", x, f({"x": x}), (torch.ones(2).double(),), 5.0, 2**20)
    >>> route(np.array([1]), np.array([[0.5, -0.5]]))[0].tolist()  # 2.5^2 - 4, 1.5^2 - 4
    [[2.25, -1.75]]
    """
    size = x.numel()
    per_copy = size + sum(o.numel() for o in y0)
    batched = torch.func.vmap(lambda a: vmapped({name: a}))

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        per_call = max(1, max_memory // (8 * _TEMPORARIES * per_copy) // k)
        losses = np.empty((m, k))
        base = x.detach().to(torch.float64).reshape(1, -1)
        for start in range(0, m, per_call):
            part = slice(start, start + per_call)
            count = disp[part].size
            copies = base.repeat(count, 1)
            index = torch.as_tensor(np.repeat(flat[part], k), device=x.device)
            moves = torch.as_tensor(disp[part].reshape(-1), device=x.device)
            copies[torch.arange(count, device=x.device), index] += moves
            with torch.no_grad():
                outs = batched(copies.to(x.dtype).reshape(count, *x.shape))
            changes = _changes(outs, y0, upstream, count)
            losses[part] = changes.cpu().numpy().reshape(-1, k)
        return losses, np.full(m, scale)

    return route


def _aligned(values: dict, y0: tuple, name: str) -> list[str]:
    """The tensors that share the outputs' leading axis with ``name`` (it first), or []."""
    if not all(o.ndim >= 1 for o in y0) or len({o.shape[0] for o in y0}) != 1:
        return []
    batch = y0[0].shape[0]
    if values[name].ndim < 1 or values[name].shape[0] != batch or batch < 2:
        return []
    return [
        name,
        *(n for n, v in values.items() if n != name and v.ndim >= 1 and v.shape[0] == batch),
    ]


def _probe_rows(
    evaluate: Evaluate, values: dict, aligned: list[str], y0: tuple, unit: float, rng
) -> probes.Finding:
    """Whether each output sample depends on the inputs' same sample alone: samples in
    another order, in smaller batches and twice in one batch give the same outputs."""
    if not aligned:
        return probes.Finding(False, "no leading axis shared by this tensor and the outputs")
    batch = y0[0].shape[0]
    order = torch.as_tensor(rng.permutation(batch))
    want = combined(y0)
    for rows in (
        torch.cat([order, order[:1]]),
        order[: batch // 2],
        order[batch // 2 :],
        order[[0, 0]],
    ):
        try:
            with torch.no_grad():
                got = combined(evaluate({n: values[n][rows.to(values[n].device)] for n in aligned}))
        except Exception as err:  # the probe's answer: no
            line = str(err).splitlines()[0] if str(err) else ""
            return probes.Finding(
                False, f"{type(err).__name__} on {rows.numel()} samples: {line[:160]}"
            )
        expected = want[rows.to(want.device)]
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if got.shape != expected.shape or not float(
            (got - expected).abs().max(),
        ) <= _AGREE * unit * max(scale, 1e-300):
            return probes.Finding(
                False,
                "samples are not independent: in another order and batch size they give "
                "other outputs",
            )
    return probes.Finding(True, "samples are independent")


def rows_route(
    evaluate: Evaluate,
    name: str,
    values: dict,
    aligned: list[str],
    y0: tuple,
    upstream: tuple,
    max_memory: int,
) -> Route:
    """Perturbed samples alone, many per call, each with its samples of the ``aligned``
    tensors; the noise scale of each is its own sample's ``sum |y0 v|``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.interop.torch_routes import rows_route
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> f = lambda o: (o.get("x", x) ** 2,)
    >>> route = rows_route(f, "x", {"x": x}, ["x"], f({}), (torch.ones(2, 2).double(),), 2**20)
    >>> changes, scales = route(np.array([1, 2]), np.array([[0.5, -0.5], [0.5, -0.5]]))
    >>> changes.tolist(), scales.tolist()  # x[0, 1] and x[1, 0] moved, in one call
    ([[2.25, -1.75], [3.25, -2.75]], [5.0, 25.0])
    """
    x = values[name]
    width = x[0].numel()
    per_row = sum(values[n][0].numel() for n in aligned) + sum(o[0].numel() for o in y0)
    sample_scales = (
        sum(
            (o.double() * v.double()).abs().reshape(o.shape[0], -1).sum(1)
            for o, v in zip(y0, upstream, strict=True)
        )
        .cpu()
        .numpy()
    )

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        per_call = max(1, max_memory // (8 * _TEMPORARIES * per_row) // k)
        losses = np.empty((m, k))
        sample, column = np.divmod(flat, width)
        for start in range(0, m, per_call):
            part = slice(start, start + per_call)
            count = disp[part].size
            owner = torch.as_tensor(np.repeat(sample[part], k), device=x.device)
            rows = {n: values[n][owner] for n in aligned}
            moved = rows[name].to(torch.float64).reshape(count, -1)
            moves = torch.as_tensor(disp[part].reshape(-1), device=x.device)
            moved[
                torch.arange(count, device=x.device),
                torch.as_tensor(np.repeat(column[part], k), device=x.device),
            ] += moves
            rows[name] = moved.to(x.dtype).reshape(count, *x.shape[1:])
            with torch.no_grad():
                outs = evaluate(rows)
            base = tuple(o[owner] for o in y0)
            ups = tuple(v[owner] for v in upstream)
            losses[part] = _changes(outs, base, ups, count).cpu().numpy().reshape(-1, k)
        return losses, sample_scales[sample]

    return route


def _probe_vmap(
    vmapped: Evaluate, evaluate: Evaluate, name: str, x: torch.Tensor, unit: float
) -> probes.Finding:
    """Whether vmap of ``vmapped`` runs on a few perturbed copies and equals them one by one."""
    generator = torch.Generator(device="cpu").manual_seed(20261)
    noise = torch.randn((_PROBE_COPIES, *x.shape), generator=generator, dtype=torch.float64)
    size = 1e-3 * (float(x.detach().double().pow(2).mean().sqrt()) + 1e-3) if x.numel() else 0.0
    copies = (x.detach().double()[None] + size * noise.to(x.device)).to(x.dtype)
    try:
        with torch.no_grad():
            got = torch.func.vmap(lambda a: combined(vmapped({name: a})))(copies)
            want = torch.stack([combined(evaluate({name: c.clone()})) for c in copies])
    except Exception as err:  # the probe's answer: no
        line = str(err).splitlines()[0] if str(err) else ""
        return probes.Finding(False, f"vmap raised {type(err).__name__}: {line[:160]}")
    if got.shape != want.shape:
        return probes.Finding(False, f"vmap gave shape {tuple(got.shape)}, not {tuple(want.shape)}")
    gap = float((got - want).abs().max()) if want.numel() else 0.0
    if not gap <= _AGREE * unit * max(float(want.abs().max()) if want.numel() else 0.0, 1e-300):
        return probes.Finding(False, "vmap gave other values than the copies one by one")
    return probes.Finding(True, "vmap")


def choose_route(
    problem: LayerProblem,
    evaluate: Evaluate,
    vmapped: Evaluate,
    values: dict,
    name: str,
    upstream: tuple,
    y0: tuple,
    method: str,
    max_memory: int,
    unit: float,
) -> tuple[Route, str, list[str]]:
    """The route for tensor ``name``, its method's name and why faster ones were not used.

    ``method="auto"`` takes the first of rows, vmap, stacked that its probe proves right,
    else the loop; another method is used as asked, or refused with the probe's reason.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_routes import choose_route, problem_for
    >>> x = torch.randn(6, 4, dtype=torch.float64)
    >>> f = lambda o: (torch.tanh(o.get("x", x)),)
    >>> v, y0 = (torch.ones(6, 4).double(),), f({"x": x})
    >>> problem = problem_for(f, "x", x, y0, v)
    >>> choose_route(problem, f, f, {"x": x}, "x", v, y0, "auto", 2**20, 2.0**-52)[1]
    'rows'
    """
    x = problem.x
    loop = loop_route(problem.current, x)
    if method == "loop" or (method == "auto" and math.prod(x.shape) < MIN_BATCHED):
        return loop, "loop", []
    rng = np.random.default_rng(20261)
    reasons = []
    if method in ("auto", "rows"):
        aligned = _aligned(values, y0, name)
        found = _probe_rows(evaluate, values, aligned, y0, unit, rng)
        if found.ok:
            return rows_route(evaluate, name, values, aligned, y0, upstream, max_memory), "rows", []
        reasons.append(f"rows: {found.reason}")
    if method in ("auto", "vmap"):
        found = _probe_vmap(vmapped, evaluate, name, x, unit)
        if found.ok:
            return vmap_route(vmapped, name, x, y0, upstream, problem.scale, max_memory), "vmap", []
        reasons.append(f"vmap: {found.reason}")
    if method in ("auto", "stacked"):
        found = probes.probe_stacking(problem.forward, x, unit, rng)
        if found.ok:
            return stacked_input_route(problem, found.axis, max_memory), "stacked", []
        reasons.append(f"stacked: {found.reason}")
    if method != "auto":
        raise ValueError(
            f"method={method!r} cannot check {name!r}: {reasons[-1]}; use method='auto' "
            "(the fastest way that is right) or 'loop'"
        )
    return loop, "loop", [f"{name}: checked by the loop ({'; '.join(reasons)})"]
