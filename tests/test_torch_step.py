"""The torch backend's fast route: the library's own kernels where the standard has none,
namespaces remembered by type, batch indices converted once an epoch; and the same
training as on NumPy."""

import numpy as np
import pytest
import torch
from helpers import rel_err

import handgrad as hg
from handgrad.core.arrays import convert, get_namespace, namespace, native
from handgrad.training.fit import fit
from handgrad.training.inputs import on_model
from handgrad.training.optim import SGD
from handgrad.training.step import Step

XT = get_namespace("torch")


def standard(name, xp, *args):
    """What each kernel computes, written with the standard's functions only."""
    if name == "sigmoid":
        (x,) = args
        return 1 / (1 + xp.exp(-x))
    if name == "relu":
        return xp.where(args[0] > 0, args[0], 0.0)
    if name in ("softmax", "log_softmax"):
        (x,) = args
        shifted = x - xp.max(x, axis=-1, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
        return log_p if name == "log_softmax" else xp.exp(log_p)
    if name == "addmm":
        b, x, w = args
        return b + x @ w
    dy, y = args  # sigmoid_backward
    return dy * y * (1 - y)


@pytest.mark.parametrize(
    "name", ["sigmoid", "relu", "softmax", "log_softmax", "addmm", "sigmoid_backward"]
)
def test_torchs_kernels_compute_the_standards_formulas(name):
    rng = np.random.default_rng(0)
    shapes = {"addmm": [(3,), (4, 5), (5, 3)], "sigmoid_backward": [(4, 3), (4, 3)]}
    args = [rng.standard_normal(s) * 3 for s in shapes.get(name, [(4, 3)])]
    if name == "sigmoid_backward":
        args[1] = 1 / (1 + np.exp(-args[1]))  # an output of the sigmoid
    tensors = [convert(a, XT) for a in args]
    got = native(XT, name)(*tensors)
    assert type(got) is torch.Tensor and got.dtype == torch.float64
    assert rel_err(got, standard(name, XT, *tensors)) < 1e-12


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_other_libraries_have_no_kernels_and_keep_the_standards_formulas(backend):
    xp = get_namespace(backend)
    for name in ("sigmoid", "relu", "softmax", "log_softmax", "take_rows", "addmm"):
        assert native(xp, name) is None
    assert native(XT, "no such kernel") is None


def test_take_rows_is_take_along_the_first_axis():
    x = convert(np.arange(12.0).reshape(4, 3), XT)
    index = convert(np.array([2, 0, 2]), XT)
    assert torch.equal(native(XT, "take_rows")(x, index=index), XT.take(x, index, axis=0))


def test_a_tensors_namespace_is_remembered_and_mixtures_still_refused():
    assert namespace(torch.ones(2)) is XT and namespace(torch.zeros(3, 2)) is XT
    assert namespace(torch.nn.Parameter(torch.ones(2))) is XT  # a subclass: looked up
    with pytest.raises(TypeError, match="one array library"):
        namespace(torch.ones(2), np.ones(2))


def test_an_epochs_batches_are_converted_at_once():
    model = hg.mlp([3, 4, 2], rng=0, backend="torch")
    rng = np.random.default_rng(0)
    X, y = on_model(model, rng.standard_normal((7, 3)), rng.integers(0, 2, 7))
    step = Step(model, hg.CrossEntropyLoss(), None, X, y, 0.0)
    batches = [np.array([4, 1, 6]), np.array([0, 2, 5]), np.array([3])]
    converted = step.indices(batches)
    assert [type(b) for b in converted] == [torch.Tensor] * 3
    assert [b.tolist() for b in converted] == [b.tolist() for b in batches]
    assert step.indices(converted) is converted  # already the data's: as they are
    np_model = hg.mlp([3, 4, 2], rng=0)
    np_step = Step(np_model, hg.CrossEntropyLoss(), None, *on_model(np_model, X.numpy(), y), 0.0)
    assert np_step.indices(batches) is batches


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_training_on_torch_gives_numpys_weights(activation):
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((50, 6)), rng.integers(0, 3, 50)
    weights = []
    for backend in ("numpy", "torch"):
        model = hg.mlp([6, 8, 3], activation, rng=0, backend=backend)
        fit(
            model,
            hg.CrossEntropyLoss(),
            SGD(model.params, lr=0.5),
            X,
            y,
            epochs=4,
            batch_size=8,
            rng=1,
        )
        weights.append({k: np.asarray(convert(v, "numpy")) for k, v in model.params.items()})
    for k in weights[0]:
        assert rel_err(weights[1][k], weights[0][k]) < 1e-12, k


def test_sgd_on_tensors_updates_every_parameter_in_one_call_as_numpy_does():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(())]
    grads = [rng.standard_normal(a.shape) for a in arrays]
    tensors = [convert(a, XT) for a in arrays]
    SGD(dict(enumerate(tensors)), lr=0.3).step(dict(enumerate(convert(g, XT) for g in grads)))
    SGD(dict(enumerate(arrays)), lr=0.3).step(dict(enumerate(grads)))
    for tensor, array in zip(tensors, arrays, strict=True):
        assert rel_err(tensor, array) < 1e-15  # in place, the same update
    add_scaled = native(XT, "add_scaled")
    add_scaled(tensors, [convert(g, XT) for g in grads], alpha=-0.5)
    assert rel_err(tensors[0], arrays[0] - 0.5 * grads[0]) < 1e-15
    assert native(get_namespace("numpy"), "add_scaled") is None
