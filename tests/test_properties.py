"""Property tests: every hand-written backward equals PyTorch autograd (float64, 1e-12 relative)
for random shapes, data and upstream gradients, on the NumPy and PyTorch backends."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad
from handgrad.core.arrays import to_numpy

BACKENDS = ["numpy", "torch"]
TOL = 1e-12

batches = st.integers(1, 6)
features = st.integers(1, 7)
seeds = st.integers(0, 2**32 - 1)
examples = settings(max_examples=25, deadline=None)


def on(backend, a):
    """A float64 or int64 NumPy array as an array of ``backend``."""
    return torch.from_numpy(a.copy()) if backend == "torch" else a


def rel_err(got, want):
    """max |got - want| / max(max |want|, 1e-300); want is autograd's."""
    got, want = to_numpy(got), to_numpy(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype == np.float64
    return np.max(np.abs(got - want), initial=0.0) / max(np.max(np.abs(want), initial=0.0), 1e-300)


def drive(module, x, r):
    """Autograd's output, dL/dx and the module itself after fakeloss = (out * r).sum()."""
    xt = torch.tensor(x, requires_grad=True)
    out = module(xt)
    (out * torch.from_numpy(r)).sum().backward()
    return out.detach(), xt.grad


ACTIVATIONS = {
    "sigmoid": (handgrad.Sigmoid, torch.nn.Sigmoid()),
    "tanh": (handgrad.Tanh, torch.nn.Tanh()),
    "relu": (handgrad.ReLU, torch.nn.ReLU()),
    "softmax": (handgrad.Softmax, torch.nn.Softmax(dim=-1)),
    "log_softmax": (handgrad.LogSoftmax, torch.nn.LogSoftmax(dim=-1)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ACTIVATIONS)
@examples
@given(batch=batches, n=features, seed=seeds)
def test_activation_backward_equals_autograd(backend, name, batch, n, seed):
    layer_cls, module = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    # Within |x| <= 4: where tanh or sigmoid saturate, 1 - y^2 and y (1 - y) cancel, and
    # NumPy's and PyTorch's forward values, one ulp apart, give derivatives 1e-11 apart.
    x = np.clip(3 * rng.standard_normal((batch, n)), -4, 4)
    if name == "relu":
        x = np.where(np.abs(x) < 1e-9, 1.0, x)  # away from the kink
    r = rng.standard_normal((batch, n))
    layer = layer_cls()
    y = layer.forward(on(backend, x))
    dx = layer.backward(on(backend, r))
    want_y, want_dx = drive(module, x, r)
    assert type(dx) is type(on(backend, r))
    assert rel_err(y, want_y) < TOL
    assert rel_err(dx, want_dx) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@examples
@given(batch=batches, n_in=features, n_out=features, seed=seeds)
def test_linear_backward_equals_autograd(backend, bias, batch, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = handgrad.Linear(n_in, n_out, bias, rng=seed, backend=backend)
    if bias:
        layer.params["bias"][...] = on(backend, rng.standard_normal(n_out))
    module = torch.nn.Linear(n_in, n_out, bias, dtype=torch.float64)
    with torch.no_grad():
        for k, p in layer.params.items():
            getattr(module, k).copy_(torch.from_numpy(to_numpy(p).copy()))
    x = rng.standard_normal((batch, n_in))
    r = rng.standard_normal((batch, n_out))

    y = layer.forward(on(backend, x))
    dx = layer.backward(on(backend, r))
    want_y, want_dx = drive(module, x, r)
    assert rel_err(y, want_y) < TOL
    assert rel_err(dx, want_dx) < TOL
    assert sorted(layer.grads) == sorted(k for k, _ in module.named_parameters())
    for k, p in module.named_parameters():
        assert rel_err(layer.grads[k], p.grad) < TOL


def softmax_rows(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def normal(rng, batch, n):
    return rng.standard_normal((batch, n))


def class_indices(rng, batch, n):
    return rng.integers(0, n, size=batch, dtype=np.int64)


def soft_targets(rng, batch, n):
    return softmax_rows(normal(rng, batch, n))


def logits(rng, batch, n):
    return 3 * normal(rng, batch, n)


def log_probs(rng, batch, n):
    return np.log(softmax_rows(logits(rng, batch, n)))


CROSS_ENTROPY = (handgrad.CrossEntropyLoss, torch.nn.CrossEntropyLoss)
NLL = (handgrad.NLLLoss, torch.nn.NLLLoss)
MSE = (handgrad.MSELoss, torch.nn.MSELoss)

# name: (handgrad loss, torch loss, make prediction, make target)
LOSSES = {
    "cross_entropy-indices": (*CROSS_ENTROPY, logits, class_indices),
    "cross_entropy-probabilities": (*CROSS_ENTROPY, logits, soft_targets),
    "nll-indices": (*NLL, log_probs, class_indices),
    "mse": (*MSE, normal, normal),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", LOSSES)
@examples
@given(batch=batches, n=features, seed=seeds)
def test_loss_and_gradient_equal_autograd(backend, reduction, name, batch, n, seed):
    loss_cls, torch_cls, make_pred, make_target = LOSSES[name]
    rng = np.random.default_rng(seed)
    pred, target = make_pred(rng, batch, n), make_target(rng, batch, n)

    loss = loss_cls(reduction=reduction)
    value = loss.forward(on(backend, pred), on(backend, target))
    grad = loss.backward()

    pred_t = torch.tensor(pred, requires_grad=True)
    want = torch_cls(reduction=reduction)(pred_t, torch.from_numpy(target))
    want.backward()
    assert tuple(value.shape) == ()
    assert rel_err(value, want.detach()) < TOL
    assert rel_err(grad, pred_t.grad) < TOL
