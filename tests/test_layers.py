import re

import numpy as np
import pytest
from helpers import BACKENDS, as_torch, namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy

torch = pytest.importorskip("torch")

ACTIVATIONS = {
    "sigmoid": (hg.Sigmoid, torch.sigmoid),
    "tanh": (hg.Tanh, torch.tanh),
    "relu": (hg.ReLU, torch.relu),
    "softmax": (hg.Softmax, lambda t: torch.softmax(t, dim=-1)),
    "log-softmax": (hg.LogSoftmax, lambda t: torch.log_softmax(t, dim=-1)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_autograd_in_float64(name):
    layer_cls, torch_fn = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)) * 3
    r = rng.standard_normal((6, 5))
    layer = layer_cls()
    y = layer.forward(x)
    dx = layer.backward(r)
    xt = as_torch(x, requires_grad=True)
    yt = torch_fn(xt)
    (yt * as_torch(r)).sum().backward()
    assert rel_err(y, yt.detach()) < 1e-12
    assert rel_err(dx, xt.grad) < 1e-12
    assert layer.params == {} and layer.grads == {}


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_autograd_in_float64(bias):
    rng = np.random.default_rng(1)
    layer = hg.Linear(5, 3, bias=bias, rng=rng)
    if bias:
        layer.params["bias"][...] = rng.standard_normal(3)
    x, r = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    module = torch.nn.Linear(5, 3, bias=bias).double()
    module.load_state_dict({k: as_torch(v) for k, v in layer.params.items()})
    xt = as_torch(x, requires_grad=True)
    yt = module(xt)
    (yt * as_torch(r)).sum().backward()
    y = layer.forward(x)
    dx = layer.backward(r)
    assert rel_err(y, yt.detach()) < 1e-12
    assert rel_err(dx, xt.grad) < 1e-12
    assert rel_err(layer.grads["weight"], module.weight.grad) < 1e-12
    if bias:
        assert rel_err(layer.grads["bias"], module.bias.grad) < 1e-12
    assert layer.params["weight"].shape == (3, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["linear", *sorted(ACTIVATIONS)])
def test_every_backend_computes_what_numpy_computes(backend, name):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    if name == "linear":
        ref = hg.Linear(3, 3, rng=3)
        layer = hg.Linear(3, 3, rng=3, backend=backend)
    else:
        ref, layer = ACTIVATIONS[name][0](), ACTIVATIONS[name][0]()
    y_ref, dx_ref = ref.forward(x), ref.backward(r)
    y = layer.forward(convert(x, xp))
    dx = layer.backward(convert(r, xp))
    assert type(y) is type(convert(x, xp)) and type(dx) is type(y)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(dx, dx_ref) < 1e-12
    for k in ref.grads:
        assert rel_err(layer.grads[k], ref.grads[k]) < 1e-12


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["linear", *sorted(ACTIVATIONS)])
def test_float32_stays_float32(backend, name):
    xp = namespace_or_skip(backend)
    layer = (
        hg.Linear(3, 2, dtype="float32", backend=backend)
        if name == "linear"
        else (ACTIVATIONS[name][0]())
    )
    x = convert(np.ones((2, 3)), xp, dtype="float32")
    y = layer.forward(x)
    dx = layer.backward(xp.ones_like(y))
    assert y.dtype == dx.dtype == xp.float32
    assert all(g.dtype == xp.float32 for g in layer.grads.values())


def test_backward_overwrites_instead_of_accumulating():
    rng = np.random.default_rng(4)
    layer = hg.Linear(3, 2, rng=rng)
    x, r = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    layer.forward(x)
    layer.backward(r)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(r)
    for k in first:
        np.testing.assert_array_equal(layer.grads[k], first[k])


@pytest.mark.parametrize("cls", [hg.Sigmoid, hg.Softmax, hg.LogSoftmax, hg.Tanh])
def test_extreme_inputs_stay_finite_without_warnings(cls):
    x = np.array([[-1000.0, 0.0, 1000.0], [700.0, 710.0, -800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = cls().forward(x)
    assert np.all(np.isfinite(y))


def test_sigmoid_saturates_exactly_and_keeps_small_values():
    y = hg.Sigmoid().forward(np.array([[-800.0, 800.0, -30.0]]))
    assert y[0, 1] == 1.0 and 0.0 <= y[0, 0] < 1e-300
    assert y[0, 2] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-15)


def test_relu_derivative_at_zero_is_zero_as_in_pytorch():
    layer = hg.ReLU()
    layer.forward(np.array([[0.0, -1.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


def test_linear_weight_layout_and_initialisers():
    assert hg.Linear(4, 3, bias=False).params.keys() == {"weight"}
    a, b = hg.Linear(4, 3, rng=7), hg.Linear(4, 3, rng=7)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    seed = hg.Linear(400, 300, init="small_normal", rng=0).params["weight"]
    assert seed.shape == (300, 400) and seed.std() == pytest.approx(0.01, rel=0.02)
    custom = hg.Linear(2, 2, init=lambda shape, rng: np.full(shape, 0.5))
    np.testing.assert_array_equal(custom.params["weight"], np.full((2, 2), 0.5))
    np.testing.assert_array_equal(hg.Linear(4, 3).params["bias"], np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_features": 0, "out_features": 2}, ValueError, "in_features must be a positive"),
        ({"in_features": 2, "out_features": -1}, ValueError, "out_features must be a positive"),
        ({"in_features": 2.5, "out_features": 2}, ValueError, "in_features"),
        ({"in_features": 2, "out_features": 2, "init": "zeros"}, ValueError, "init must be one of"),
        ({"in_features": 2, "out_features": 2, "dtype": "int8"}, ValueError, "dtype must be"),
        ({"in_features": 2, "out_features": 2, "backend": "jax"}, ValueError, "backend must be"),
        ({"in_features": 2, "out_features": 2, "rng": "x"}, TypeError, "rng must be an int"),
        (
            {"in_features": 2, "out_features": 3, "init": lambda s, r: np.ones((3, 3))},
            ValueError,
            r"init returned shape \(3, 3\), the layer needs \(3, 2\)",
        ),
    ],
)
def test_linear_refuses_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hg.Linear(**kwargs)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (np.ones((2, 4)), ValueError, r"x must have 3 features .* got shape \(2, 4\)"),
        (
            np.ones(3),
            ValueError,
            r"x must be an array of at least 2 dimensions \(batch, in_features\), got shape \(3,\)",
        ),
        (np.ones((2, 3), dtype=np.int64), TypeError, "floating-point dtype .* got int64"),
        (np.array([[1.0, np.nan, 0.0]]), ValueError, r"x contains NaN or infinity \(1 of 3"),
        (
            np.ones((2, 3), dtype=np.float32),
            TypeError,
            "x has dtype float32 but the layer's weight",
        ),
        ([[1.0, 2.0, 3.0]], TypeError, "x must be an array .* got list"),
    ],
)
def test_linear_forward_refuses_bad_input(x, error, match):
    with pytest.raises(error, match=match):
        hg.Linear(3, 2).forward(x)


def test_mixing_libraries_is_refused_with_both_named():
    with pytest.raises(TypeError, match=r"one array library, got numpy.ndarray, torch.Tensor"):
        hg.Linear(3, 2).forward(torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("layer", [hg.Linear(3, 2), hg.Sigmoid()])
def test_backward_checks_its_upstream_gradient(layer):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((2, 2)))
    y = layer.forward(np.ones((4, 3)))
    expected = re.escape(f"last output {tuple(y.shape)}, got (4, 5)")
    with pytest.raises(ValueError, match=f"dy must have the shape .*{expected}"):
        layer.backward(np.ones((4, 5)))


def test_a_failed_forward_changes_nothing():
    layer = hg.Linear(3, 2, rng=0)
    x = np.ones((2, 3))
    y = layer.forward(x)
    before = layer.params["weight"].copy()
    with pytest.raises(ValueError):
        layer.forward(np.ones((2, 5)))
    np.testing.assert_array_equal(layer.params["weight"], before)
    np.testing.assert_array_equal(
        to_numpy(layer.backward(np.ones_like(y))), np.ones((2, 2)) @ before
    )


def test_layers_follow_the_protocol():
    for layer in (
        hg.Linear(2, 2),
        hg.Sigmoid(),
        hg.Tanh(),
        hg.ReLU(),
        hg.Softmax(),
        hg.LogSoftmax(),
    ):
        assert isinstance(layer, hg.Layer)
    assert repr(hg.Linear(2, 3, bias=False)) == "Linear(in_features=2, out_features=3, bias=False)"


@pytest.mark.parametrize("name", ["linear", *sorted(ACTIVATIONS)])
def test_stacked_copies_compute_what_each_copy_computes(name):
    rng = np.random.default_rng(8)
    layer = hg.Linear(4, 3, rng=rng) if name == "linear" else ACTIVATIONS[name][0]()
    stack = rng.standard_normal((5, 2, 4))
    r = rng.standard_normal(layer.forward(stack).shape)
    dx = layer.backward(r)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    summed = {k: 0.0 for k in grads}
    for i in range(5):
        y = layer.forward(stack[i])
        np.testing.assert_allclose(layer.forward(stack)[i], y, rtol=1e-14, atol=1e-300)
        layer.forward(stack[i])
        np.testing.assert_allclose(dx[i], layer.backward(r[i]), rtol=1e-12, atol=1e-15)
        summed = {k: summed[k] + layer.grads[k] for k in grads}
    for k in grads:  # a parameter's gradient is summed over the copies
        np.testing.assert_allclose(grads[k], summed[k], rtol=1e-12)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturated_derivatives_agree_with_autograd_relative_to_the_upstream_gradient(name):
    """Far in the tails the derivative is computed from y near 1, where one ulp of y is a
    large part of 1 - y; measured against the upstream gradient the agreement is still
    at the level of float64's resolution."""
    layer_cls, torch_fn = ACTIVATIONS[name]
    x = np.linspace(-30, 30, 61).reshape(1, -1)
    r = np.ones_like(x)
    layer = layer_cls()
    layer.forward(x)
    dx = layer.backward(r)
    xt = as_torch(x, requires_grad=True)
    torch_fn(xt).backward(as_torch(r))
    assert np.max(np.abs(dx - xt.grad.numpy())) < 4 * np.finfo(np.float64).eps


@pytest.mark.parametrize("name", ["linear", *sorted(ACTIVATIONS)])
def test_unchecked_paths_compute_what_the_checked_ones_do(name):
    rng = np.random.default_rng(9)
    make = (lambda: hg.Linear(4, 3, rng=1)) if name == "linear" else ACTIVATIONS[name][0]
    checked, unchecked = make(), make()
    x = rng.standard_normal((5, 4 if name == "linear" else 3))
    y = checked.forward(x)
    np.testing.assert_array_equal(unchecked.forward_unchecked(x), y)
    r = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(unchecked.backward_unchecked(r), checked.backward(r))
    for k in checked.grads:
        np.testing.assert_array_equal(unchecked.grads[k], checked.grads[k])


def test_the_first_layer_can_skip_its_input_gradient():
    layer = hg.Linear(3, 2, rng=0)
    layer.forward(np.ones((4, 3)))
    assert layer.backward_unchecked(np.ones((4, 2)), input_grad=False) is None
    np.testing.assert_array_equal(layer.grads["weight"], np.full((2, 3), 4.0))
