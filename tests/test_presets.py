import numpy as np
import pytest
from helpers import rel_err

import handgrad as hg
from handgrad.core.arrays import to_numpy

torch = pytest.importorskip("torch")


def test_mlp_builds_the_seeds_architecture():
    model = hg.mlp([30, 20, 2])
    assert [type(layer).__name__ for layer in model] == ["Linear", "Sigmoid", "Linear"]
    assert model[0].params["weight"].shape == (20, 30)
    assert model[2].params["weight"].shape == (2, 20)
    deep = hg.mlp([5, 4, 3, 2], "relu", bias=False)
    assert [type(layer).__name__ for layer in deep] == [
        "Linear",
        "ReLU",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert list(deep.params) == ["0.weight", "2.weight", "4.weight"]


def test_mlp_is_reproducible_and_uses_the_activations_initialiser():
    a, b = hg.mlp([40, 30, 2], rng=5), hg.mlp([40, 30, 2], rng=5)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    bound = np.sqrt(2 / 70)  # scikit-learn's factor 2 before a sigmoid
    assert np.abs(a[0].params["weight"]).max() <= bound
    relu = hg.mlp([400, 300, 2], "relu", rng=0)
    assert relu[0].params["weight"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([3],), r"at least an input and an output width, got \[3\]"),
        (([3, 0, 2],), r"sizes\[1\] must be a positive integer, got 0"),
        (([3, 2], "sine"), "activation must be one of 'elu', 'gelu', .*'tanh', got 'sine'"),
    ],
)
def test_mlp_refuses_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        hg.mlp(*args)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_simple_nn_has_the_seeds_attributes_and_layout(backend):
    net = hg.SimpleNN(10, 20, 3, backend=backend, rng=0)
    xp_type = np.ndarray if backend == "numpy" else torch.Tensor
    assert isinstance(net.w_1, xp_type) and tuple(net.w_1.shape) == (20, 10)
    assert tuple(net.w_2.shape) == (3, 20)
    assert float(abs(net.w_1).max()) < 0.06  # the seed's randn * 0.01
    x = np.arange(10.0).reshape(10, 1)
    label = np.array([[0.0], [0.0], [1.0]])
    log_pred = net.forward(x)
    assert isinstance(log_pred, np.ndarray) and log_pred.shape == (3, 1)
    assert np.exp(log_pred).sum() == pytest.approx(1.0, abs=1e-15)
    assert set(net.cache) == {"z_1", "z_2"} and tuple(net.cache["z_1"].shape) == (20, 1)
    assert float(net.loss(x, label)) == -log_pred[2, 0]
    dw_1, dw_2 = net.backward(x, label)
    n_1, n_2 = net.numerical_gradients(x, label, 1e-6)
    assert rel_err(dw_1, n_1) < 1e-7 and rel_err(dw_2, n_2) < 1e-7
    assert "backend='" + backend in repr(net)


def test_simple_nn_hands_results_back_in_the_callers_library():
    net = hg.SimpleNN(4, 3, 2, backend="numpy", rng=1)
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    label = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert isinstance(net.forward(x), torch.Tensor)
    assert isinstance(net.loss(x, label), torch.Tensor) and net.loss(x, label).shape == ()
    dw_1, dw_2 = net.backward(x, label)
    assert isinstance(dw_1, torch.Tensor) and dw_1.shape == (3, 4)
    assert isinstance(dw_2, torch.Tensor) and dw_2.shape == (2, 3)
    assert isinstance(net.w_1, np.ndarray)


def test_simple_nn_weights_can_be_set_and_are_validated():
    net = hg.SimpleNN(4, 3, 2, rng=2)
    new = np.full((3, 4), 0.5)
    net.w_1 = new
    np.testing.assert_array_equal(net.w_1, new)
    net.w_2 = torch.ones(2, 3, dtype=torch.float64)
    np.testing.assert_array_equal(net.w_2, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"has shape \(4, 3\), the model needs \(3, 4\)"):
        net.w_1 = np.zeros((4, 3))
    np.testing.assert_array_equal(net.w_1, new)


@pytest.mark.parametrize(
    ("x", "label", "match"),
    [
        (np.ones((3, 2)), np.ones((2, 2)), r"x must have shape \(4, k\) .* got \(3, 2\)"),
        (np.ones((4, 2)), np.ones((2, 3)), r"label must have shape \(2, 2\) \(output_size, k\)"),
        (np.ones(4), np.ones((2, 1)), r"x must be a 2-D array \(input_size, k\)"),
    ],
)
def test_simple_nn_refuses_arrays_in_the_wrong_layout(x, label, match):
    with pytest.raises(ValueError, match=match):
        hg.SimpleNN(4, 3, 2).loss(x, label)


def test_simple_nn_refuses_an_unknown_backend():
    with pytest.raises(
        ValueError, match="backend must be one of 'numpy', 'torch', 'array_api_strict', got 'jax'"
    ):
        hg.SimpleNN(2, 2, 2, backend="jax")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sgd_step_is_w_minus_lr_dw_and_lowers_the_loss(backend):
    net = hg.SimpleNN(10, 20, 3, backend=backend, rng=3)
    x = torch.arange(10, dtype=torch.float64).view(10, 1)
    label = torch.tensor([0, 0, 1.0], dtype=torch.float64).reshape(3, 1)
    w_1, w_2 = (to_numpy(w).copy() for w in (net.w_1, net.w_2))
    start = float(net.loss(x, label))
    dw_1, dw_2 = net.backward(x, label)
    before = net.sgd_step(x, label, lr=0.5)
    assert isinstance(before, torch.Tensor) and float(before) == start
    assert float(net.loss(x, label)) < start
    assert rel_err(net.w_1, w_1 - 0.5 * dw_1.numpy()) < 1e-15
    assert rel_err(net.w_2, w_2 - 0.5 * dw_2.numpy()) < 1e-15
    losses = [float(net.sgd_step(x, label, lr=0.5)) for _ in range(20)]
    assert losses[-1] < losses[0] / 2
    with pytest.raises(ValueError, match="lr must be a finite number greater than 0"):
        net.sgd_step(x, label, lr=0.0)
