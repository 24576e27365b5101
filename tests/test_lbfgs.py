import numpy as np
import pytest

import handgrad as hg
from handgrad.training.lbfgs import fit_lbfgs
from handgrad.training.step import Step

pytest.importorskip("scipy")


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def test_lbfgs_fits_and_leaves_the_model_at_the_result():
    X, y = _data()
    model = hg.mlp([3, 10, 2], "tanh", rng=0)
    result = fit_lbfgs(model, hg.CrossEntropyLoss(), X, y, alpha=1e-3, max_iter=200)
    value, _, _ = Step(model, hg.CrossEntropyLoss(), None, X, y, 1e-3).gradients(None)
    assert value == pytest.approx(result.fun, rel=1e-12)
    assert result.fun < 0.2


def test_lbfgs_stops_at_max_iter_and_max_fun():
    X, y = _data()
    iterations = []
    model = hg.mlp([3, 10, 2], "tanh", rng=0)
    result = fit_lbfgs(
        model,
        hg.CrossEntropyLoss(),
        X,
        y,
        max_iter=5,
        callback=lambda i, loss: iterations.append(i),
    )
    assert result.nit == 5 and result.status == 1 and iterations == [1, 2, 3, 4, 5]
    result = fit_lbfgs(hg.mlp([3, 10, 2], rng=0), hg.CrossEntropyLoss(), X, y, max_fun=4)
    assert result.nfev <= 5 and result.status == 1


def test_the_gradient_lbfgs_follows_is_the_finite_difference_one():
    X, y = _data(1, n=15)
    model = hg.mlp([3, 4, 2], "tanh", rng=2)
    step = Step(model, hg.CrossEntropyLoss(), None, X, y, 0.5)
    _, _, grads = step.gradients(None)
    for (name, p), g in zip(model.params.items(), grads, strict=True):
        numeric = hg.numerical_gradient(lambda _: step.gradients(None)[0], p)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_float32_parameters_stay_float32():
    X, y = _data()
    model = hg.mlp([3, 6, 2], rng=0, dtype="float32")
    fit_lbfgs(model, hg.CrossEntropyLoss(), X.astype(np.float32), y, max_iter=20)
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_lbfgs_refuses_bad_arguments():
    X, y = _data()
    with pytest.raises(ValueError, match="max_fun must be a positive integer, got 0"):
        fit_lbfgs(hg.mlp([3, 2], rng=0), hg.CrossEntropyLoss(), X, y, max_fun=0)
