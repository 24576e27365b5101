import importlib
import sys
from itertools import pairwise

import numpy as np
import pytest
import zoo
from helpers import namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import get_namespace, namespace, to_numpy
from handgrad.interop.oracle import to_torch_module

torch = pytest.importorskip("torch")
from torch.autograd.gradcheck import GradcheckError  # noqa: E402

from handgrad.torch import as_function, as_module  # noqa: E402

BACKENDS = ("numpy", "torch")
LAYERS = ("linear", "linear-nobias", "sigmoid", "tanh", "relu", "softmax", "logsoftmax", "mlp")


def make_layer(name, backend):
    """A layer and its bridge function; activations compute in ``backend`` by request."""
    rng = np.random.default_rng(0)
    if name == "mlp":
        layer = hg.Sequential(
            *hg.mlp([4, 5, 6, 3], "tanh", rng=rng, backend=backend).layers, hg.LogSoftmax()
        )
    elif name.startswith("linear"):
        layer = hg.Linear(4, 3, bias=name == "linear", rng=rng, backend=backend)
    else:
        activations = (hg.Sigmoid, hg.Tanh, hg.ReLU, hg.Softmax, hg.LogSoftmax)
        layer = next(a for a in activations if a.__name__.lower() == name)()
    return layer, as_function(layer, backend=backend)


def inputs(seed=1, shape=(5, 4)):
    """float64 inputs at least 0.1 from 0, where ReLU's derivative jumps."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))
    return (x.sign() * (x.abs() + 0.1)).requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_gradcheck_passes(name, backend):
    _, f = make_layer(name, backend)
    assert torch.autograd.gradcheck(f, (inputs(), *f.parameters()))


@pytest.mark.parametrize(
    ("stored", "computed"), [("numpy", "torch"), ("torch", "numpy"), ("numpy", "array_api_strict")]
)
def test_a_layer_can_compute_in_another_library_than_it_stores(stored, computed):
    namespace_or_skip(computed)
    layer = hg.mlp([4, 5, 2], "sigmoid", rng=0, backend=stored)
    f = as_function(layer, backend=computed)
    assert torch.autograd.gradcheck(f, (inputs(), *f.parameters()))
    assert namespace(layer.layers[0].params["weight"]) is get_namespace(stored)


def test_gradcheck_passes_for_a_users_own_layer():
    class Scale:  # y = x * s, per feature; follows the protocol without handgrad's classes
        def __init__(self):
            self.params = {"s": np.array([0.5, -2.0, 3.0, 1.5])}
            self.grads = {"s": np.zeros(4)}

        def forward(self, x):
            self.x = x
            return x * self.params["s"]

        def backward(self, dy):
            self.grads["s"] = (dy * self.x).sum(axis=0)
            return dy * self.params["s"]

    f = as_function(Scale())
    assert f.names == ("s",)
    assert torch.autograd.gradcheck(f, (inputs(), *f.parameters()))


def test_a_float32_layer_is_checked_in_float64():
    layer = hg.Linear(4, 3, rng=0, dtype="float32")
    f = as_function(layer)
    params = f.parameters(torch.float64)
    assert [p.dtype for p in params] == [torch.float64] * 2
    assert torch.autograd.gradcheck(f, (inputs(), *params))
    assert layer.params["weight"].dtype == np.float32


WRONG = [
    lambda b: zoo.SignErrorWeightGrad(4, 3, rng=0, backend=b),
    lambda b: zoo.AveragedBiasGrad(4, 3, rng=0, backend=b),
    lambda b: zoo.WrongInputGrad(4, 3, rng=0, backend=b),
    lambda b: zoo.TransposedWeightGrad(4, 4, rng=0, backend=b),
    lambda b: zoo.MissingSigmoidDerivative(),
    lambda b: zoo.TanhSigmoidDerivative(),
    lambda b: zoo.LeakyReluDerivative(),
    lambda b: zoo.SoftmaxDiagonalOnly(),
    lambda b: zoo.LogSoftmaxNoExp(),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", WRONG, ids=lambda m: type(m("numpy")).__name__)
def test_gradcheck_catches_a_wrong_backward(make, backend):
    f = as_function(make(backend), backend=backend)
    args = (inputs(), *f.parameters())
    assert not torch.autograd.gradcheck(f, args, raise_exception=False)
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_gradients_agree_with_torch_nn_to_1e12(name, backend):
    layer, f = make_layer(name, backend)
    reference = to_torch_module(layer)
    with torch.no_grad():  # random weights and biases, not the layer's zero biases
        for p in reference.parameters():
            p.copy_(torch.randn_like(p))
    params = [p.detach().clone().requires_grad_(True) for p in reference.parameters()]
    x, x_ref = inputs(), inputs()
    y, y_ref = f(x, *params), reference(x_ref)
    dout = torch.randn_like(y_ref)  # a random upstream gradient, not ones
    (y * dout).sum().backward()
    (y_ref * dout).sum().backward()
    assert y.dtype == torch.float64 and rel_err(y, y_ref) < 1e-12
    assert rel_err(x.grad, x_ref.grad) < 1e-12
    for p, p_ref in zip(params, reference.parameters(), strict=True):
        assert rel_err(p.grad, p_ref.grad) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_layer_used_twice_in_a_graph(backend):
    layer = hg.Linear(4, 4, rng=0, backend=backend)
    f = as_function(layer)
    w, b = f.parameters()
    w_ref, b_ref = (p.detach().clone().requires_grad_(True) for p in (w, b))
    x, x_ref = inputs(), inputs()
    f(f(x, w, b).tanh(), w, b).pow(2).sum().backward()
    linear = torch.nn.functional.linear
    linear(linear(x_ref, w_ref, b_ref).tanh(), w_ref, b_ref).pow(2).sum().backward()
    for got, want in ((x, x_ref), (w, w_ref), (b, b_ref)):
        assert rel_err(got.grad, want.grad) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_leaves_the_layers_params_as_they_were(backend):
    layer = hg.Sequential(hg.Linear(4, 5, rng=0, backend=backend), hg.Sigmoid())
    own = dict(layer.layers[0].params)
    before = {k: np.array(to_numpy(v)) for k, v in own.items()}
    f = as_function(layer)
    params = [torch.randn_like(p).requires_grad_(True) for p in f.parameters()]
    assert torch.autograd.gradcheck(f, (inputs(), *params))
    for k, v in layer.layers[0].params.items():
        assert v is own[k]
        np.testing.assert_array_equal(to_numpy(v), before[k])
    # grads hold the last backward's, taken with the tensors that were passed in
    assert layer.layers[0].grads["weight"].shape == (5, 4)


def test_names_follow_named_layers_with_dots_mapped_for_modules():
    model = hg.mlp([4, 5, 3], "relu", rng=0)
    assert as_function(model).names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert as_function(hg.Tanh()).names == ()
    module = as_module(model)
    assert [n for n, _ in module.named_parameters()] == ["0_weight", "0_bias", "2_weight", "2_bias"]
    assert module.param_names["2_bias"] == "2.bias"
    outer = torch.nn.Sequential(module, torch.nn.Tanh())
    assert "0.0_weight" in dict(outer.named_parameters())
    assert "Linear(in_features=4" in repr(module)


def test_module_parameters_copy_the_layer_in_its_dtype_or_the_one_asked():
    layer = hg.Linear(4, 3, rng=0)
    module = as_module(layer)
    assert module.weight.dtype == torch.float64
    np.testing.assert_array_equal(module.weight.detach().numpy(), layer.params["weight"])
    small = as_module(layer, dtype=torch.float32)
    assert small.weight.dtype == torch.float32
    assert small(inputs().float()).dtype == torch.float32


def test_as_module_trains_with_torch_optim():
    layer = hg.Linear(4, 3, rng=0)
    start = layer.params["weight"].copy()
    model = torch.nn.Sequential(as_module(layer), torch.nn.Tanh())
    x, target = inputs(2, (16, 4)).detach(), torch.randn(16, 3, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(a > b for a, b in pairwise(losses)), losses
    assert not np.allclose(model[0].weight.detach().numpy(), start)
    np.testing.assert_array_equal(layer.params["weight"], start)  # the layer is not trained


def test_double_backward_is_refused():
    f = as_function(hg.Tanh())
    x = inputs()
    (g,) = torch.autograd.grad(f(x).pow(2).sum(), x, create_graph=True)  # dy = 2y needs grad
    with pytest.raises(RuntimeError, match=r"differentiate twice .*@once_differentiable"):
        g.sum().backward()


class _NoGrads:
    def __init__(self):
        self.params, self.grads = {"s": np.ones(4)}, {}

    def forward(self, x):
        return x * self.params["s"]

    def backward(self, dy):
        return dy * self.params["s"]


_METHODS = {"forward": _NoGrads.forward, "backward": _NoGrads.backward}
LINEAR = as_function(hg.Linear(4, 3, rng=0))
BAD = {
    "not a layer": (lambda: as_function(object()), TypeError, "lacks params, grads, forward"),
    "params not a dict": (
        lambda: as_function(type("L", (), {"params": [], "grads": {}, **_METHODS})()),
        TypeError,
        r"params must be a dict",
    ),
    "a layer twice in a model": (
        lambda: as_function(hg.Sequential(*[hg.Linear(4, 4)] * 2)),
        ValueError,
        "more than once",
    ),
    "unknown backend": (lambda: as_function(hg.Tanh(), backend="jax"), ValueError, "'jax'"),
    "numpy x": (lambda: LINEAR(np.ones((2, 4)), *LINEAR.parameters()), TypeError, "torch.Tensor"),
    "integer x": (
        lambda: LINEAR(torch.ones(2, 4, dtype=torch.int64), *LINEAR.parameters()),
        TypeError,
        "floating-point",
    ),
    "missing params": (
        lambda: LINEAR(inputs()),
        TypeError,
        r"takes x and 2 parameter tensors \(weight, bias\), got 0",
    ),
    "numpy param": (
        lambda: LINEAR(inputs(), np.ones((3, 4)), LINEAR.parameters()[1]),
        TypeError,
        "'weight' must be a torch.Tensor",
    ),
    "wrong shape": (
        lambda: LINEAR(inputs(), torch.ones(4, 3, dtype=torch.float64), torch.ones(3)),
        ValueError,
        r"'weight' must have shape \(3, 4\), got \(4, 3\)",
    ),
    "grads not written": (
        lambda: (
            as_function(_NoGrads())(inputs(), torch.ones(4, dtype=torch.float64)).sum().backward()
        ),
        RuntimeError,
        r"did not write grads\['s'\]",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_a_clear_error(case):
    call, error, match = BAD[case]
    with pytest.raises(error, match=match):
        call()


def test_without_torch_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "handgrad.torch")
    monkeypatch.delitem(sys.modules, "handgrad.interop.torch_bridge")
    with pytest.raises(ImportError, match=r"pip install 'handgrad\[torch\]'"):
        importlib.import_module("handgrad.torch")


def test_handgrad_torch_does_not_shadow_torch():
    import handgrad.interop.torch_bridge as bridge
    import handgrad.torch as public

    assert sys.modules["torch"] is torch and bridge.torch is torch
    assert sys.modules["handgrad.torch"] is public and hg.torch is public
    assert issubclass(bridge._LayerBridge, torch.autograd.Function)
