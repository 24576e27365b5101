"""RNN, LSTM and GRU over (batch, time, features) against torch.nn's (batch_first) in
float64 at 1e-12, with torch's names and gate order; backpropagation through time passes
the gradient check, which catches a gate-order slip."""

import numpy as np
import pytest
import torch
from helpers import namespace_or_skip, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import SEQUENCE_BUGS

import handgrad as hg
from handgrad.core.arrays import convert
from handgrad.interop.oracle import to_torch_module

TOL = 1e-12
KINDS = {
    "rnn-tanh": lambda *a, **k: hg.RNN(*a, **k),
    "rnn-relu": lambda *a, **k: hg.RNN(*a, nonlinearity="relu", **k),
    "lstm": lambda *a, **k: hg.LSTM(*a, **k),
    "gru": lambda *a, **k: hg.GRU(*a, **k),
}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=6, deadline=None)
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 4),
    n_in=st.integers(1, 3),
    hidden=st.integers(1, 3),
    layers=st.integers(1, 2),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_recurrent_layers_equal_torch(backend, kind, batch, time, n_in, hidden, layers, bias, seed):
    rng = np.random.default_rng(seed)
    layer = KINDS[kind](n_in, hidden, layers, bias=bias, rng=rng).to(backend)
    module = to_torch_module(layer)
    assert [name for name, _ in module.named_parameters()] == list(layer.params)
    x = rng.standard_normal((batch, time, n_in))
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    r = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(r)).sum().backward()

    xp = namespace_or_skip(backend)
    y = layer.forward(convert(x, xp))
    dx = layer.backward(convert(r, xp))
    assert rel_err(y, out.detach()) < TOL
    assert rel_err(dx, x_t.grad) < TOL
    for name, p in module.named_parameters():
        assert rel_err(layer.grads[name], p.grad) < TOL, name


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_weights_move_both_ways_with_torch(kind):
    torch.manual_seed(0)
    reference = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True).double()
    layer = getattr(hg, kind)(3, 4, 2).load_state_dict(reference.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    want = reference(torch.from_numpy(x))[0].detach()
    assert rel_err(layer.forward(x), want) < TOL
    back = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True).double()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert rel_err(back(torch.from_numpy(x))[0].detach(), want) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_gradient_check_passes_backpropagation_through_time(kind):
    rng = np.random.default_rng(2)
    layer = KINDS[kind](3, 4, 2, rng=rng)
    x = rng.standard_normal((2, 5, 3))
    if kind == "rnn-relu":
        x = 3 * x  # fewer pre-activations near ReLU's kink
    report = hg.check_layer(layer, x, rng=3)
    assert report.passed and report.method == "batched"


@pytest.mark.parametrize("name", [n for n in SEQUENCE_BUGS if "LSTM" in n or "GRU" in n])
def test_the_gradient_check_catches_recurrent_slips(name):
    make, shape = SEQUENCE_BUGS[name]
    rng = np.random.default_rng(4)
    report = hg.check_layer(make(rng), rng.standard_normal(shape), rng=5, raise_on_failure=False)
    assert not report.passed
    assert not report["weight_ih_l0"].passed and not report["x"].passed


def test_recurrent_layers_run_on_array_api_strict_as_on_numpy():
    xp = namespace_or_skip("array_api_strict")
    rng = np.random.default_rng(6)
    x, r = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 4))
    for kind in ("RNN", "LSTM", "GRU"):
        here = getattr(hg, kind)(2, 4, rng=0)
        there = getattr(hg, kind)(2, 4, rng=0, backend=xp)
        assert rel_err(there.forward(convert(x, xp)), here.forward(x)) < TOL
        assert rel_err(there.backward(convert(r, xp)), here.backward(r)) < TOL


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="nonlinearity must be one of 'tanh', 'relu', got 'gelu'"):
        hg.RNN(2, 3, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        hg.LSTM(2, 0)
    with pytest.raises(ValueError, match="x must have 2 features"):
        hg.GRU(2, 3).forward(np.ones((1, 4, 3)))
    with pytest.raises(ValueError, match=r"at least 2 dimensions \(batch, time, input_size\)"):
        hg.GRU(2, 3).forward(np.ones(2))


def test_spec_round_trip():
    from handgrad.nn.registry import build_layer, layer_spec, spec_shapes

    for layer in (hg.RNN(2, 3, 2, "relu", False), hg.LSTM(2, 3), hg.GRU(2, 3, 3)):
        spec = layer_spec(layer)
        assert spec_shapes(spec) == {k: tuple(v.shape) for k, v in layer.params.items()}
        assert build_layer(spec).config() == layer.config()
