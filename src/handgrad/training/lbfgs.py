"""Full-batch training with L-BFGS: SciPy's L-BFGS-B moves a model's parameters, flattened
into one vector, with the loss and the gradient of handgrad's hand-written backward pass
(the same forward, loss, backward and L2 penalty as a step of :func:`~handgrad.training.fit`).
Needs SciPy (it comes with the ``sklearn`` extra)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.validation import NON_NEGATIVE, check_positive_int
from handgrad.nn.containers import Sequential
from handgrad.training.inputs import check_data, on_model, sample_weights
from handgrad.training.step import Step

__all__ = ["fit_lbfgs"]


def fit_lbfgs(
    model: Sequential,
    loss: Any,
    X: Any,
    y: Any,
    *,
    sample_weight: Any = None,
    alpha: float = 0.0,
    max_iter: int = 200,
    max_fun: int = 15000,
    tol: float = 1e-4,
    callback: Callable[[int, float], None] | None = None,
) -> Any:
    """Minimise ``loss`` of ``model`` on all of ``(X, y)`` with L-BFGS-B; return SciPy's
    ``OptimizeResult`` (``fun``, ``nit``, ``nfev``, ``status``, ``message``).

    The parameters are updated in place, to the point L-BFGS-B ends at. ``X``, ``y``,
    ``sample_weight`` and ``alpha`` mean what they mean for :func:`~handgrad.training.fit`
    with one batch of every example. ``max_iter`` bounds the iterations, ``max_fun`` the
    loss evaluations, and ``tol`` is the gradient tolerance (``gtol``: stop when no
    element of the projected gradient exceeds it). ``callback(iteration, loss)`` is called
    after each iteration. Parameters of float32 stay float32: the float64 vector SciPy
    works on is rounded to them at each evaluation.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.lbfgs import fit_lbfgs
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 2))
    >>> y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    >>> model = hg.mlp([2, 8, 2], activation="tanh", rng=0)
    >>> result = fit_lbfgs(model, hg.CrossEntropyLoss(), X, y, max_iter=50)
    >>> result.fun < 0.05, result.nit <= 50
    (True, True)
    """
    try:
        import scipy.optimize
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        raise ImportError(
            "fit_lbfgs needs SciPy: pip install scipy (or 'handgrad[sklearn]')"
        ) from None
    max_iter = check_positive_int(max_iter, "max_iter")
    max_fun = check_positive_int(max_fun, "max_fun")
    tol = NON_NEGATIVE.check(tol, "tol")
    alpha = NON_NEGATIVE.check(alpha, "alpha")
    check_data(X, y, "")
    X, y = on_model(model, X, y, keep_sparse=True)
    if sample_weight is not None:
        sample_weight = sample_weights(sample_weight, model, y)
    step = Step(model, loss, None, X, y, alpha, sample_weight)
    params = list(model.params.values())
    sizes = [math.prod(p.shape) for p in params]
    ends = np.cumsum(sizes)

    def load(vector: np.ndarray) -> None:
        for p, chunk in zip(params, np.split(vector, ends[:-1]), strict=True):
            chunk = np.reshape(chunk, p.shape)
            p[...] = (
                chunk if isinstance(p, np.ndarray) else convert(chunk, namespace(p), dtype=p.dtype)
            )

    def loss_and_gradient(vector: np.ndarray) -> tuple[float, np.ndarray]:
        load(vector)
        value, _, grads = step.gradients(None)
        flat = np.concatenate([np.ravel(to_numpy(g)) for g in grads]).astype(np.float64)
        return value, flat

    def each_iteration(intermediate_result: Any) -> None:
        each_iteration.count += 1
        callback(each_iteration.count, float(intermediate_result.fun))

    each_iteration.count = 0
    start = np.concatenate([np.ravel(to_numpy(p)) for p in params]).astype(np.float64)
    result = scipy.optimize.minimize(
        loss_and_gradient,
        start,
        method="L-BFGS-B",
        jac=True,
        callback=None if callback is None else each_iteration,
        options={"maxiter": max_iter, "maxfun": max_fun, "gtol": tol},
    )
    load(result.x)
    return result
