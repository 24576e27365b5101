"""Attention: the fused-QKV core and MultiheadSelfAttention against PyTorch (F.scaled_dot_
product_attention and torch.nn.MultiheadAttention) in float64 at 1e-12, causal or not; the
gradient check passes them and catches the classic slips."""

import numpy as np
import pytest
import torch
from helpers import namespace_or_skip, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import SEQUENCE_BUGS

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy
from handgrad.interop.oracle import to_torch_module

TOL = 1e-12
shapes = settings(max_examples=8, deadline=None)


def _against_torch(layer, x, rng, backend="numpy"):
    """Forward, dL/dx and every parameter gradient: handgrad's against torch's."""
    module = to_torch_module(layer)
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    r = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(r)).sum().backward()
    xp = namespace_or_skip(backend)
    y = layer.forward(convert(x, xp))
    dx = layer.backward(convert(r, xp))
    assert rel_err(y, out.detach()) < TOL
    assert rel_err(dx, x_t.grad) < TOL
    names = [name for name, _ in module.named_parameters()]
    assert names == list(layer.params)
    for name, p in module.named_parameters():
        assert rel_err(layer.grads[name], p.grad) < TOL, name


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@shapes
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_attention_equals_torch(causal, batch, time, heads, head_dim, seed):
    rng = np.random.default_rng(seed)
    qkv = 2 * rng.standard_normal((batch, time, 3 * heads * head_dim))
    _against_torch(hg.ScaledDotProductAttention(heads, causal), qkv, rng)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@shapes
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_multihead_self_attention_equals_torch(
    backend, causal, batch, time, heads, head_dim, bias, seed
):
    rng = np.random.default_rng(seed)
    e = heads * head_dim
    layer = hg.MultiheadSelfAttention(e, heads, bias, causal, rng=rng)
    for p in layer.params.values():  # biases away from zero too
        p[...] = 0.5 * rng.standard_normal(p.shape)
    layer.to(backend)
    _against_torch(layer, rng.standard_normal((batch, time, e)), rng, backend)


def test_weights_move_both_ways_between_handgrad_and_torch():
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(6, 3, batch_first=True).double()
    layer = hg.MultiheadSelfAttention(6, 3).load_state_dict(reference.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 4, 6))
    x_t = torch.from_numpy(x)
    want = reference(x_t, x_t, x_t, need_weights=False)[0].detach()
    assert rel_err(layer.forward(x), want) < TOL
    back = torch.nn.MultiheadAttention(6, 3, batch_first=True).double()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert rel_err(back(x_t, x_t, x_t, need_weights=False)[0].detach(), want) == 0


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_the_gradient_check_passes_attention(causal):
    rng = np.random.default_rng(2)
    core = hg.ScaledDotProductAttention(2, causal)
    assert hg.check_layer(core, rng.standard_normal((2, 4, 12)), rng=1).passed
    layer = hg.MultiheadSelfAttention(4, 2, causal=causal, rng=3)
    report = hg.check_layer(layer, rng.standard_normal((2, 3, 4)), rng=4)
    assert report.passed and report.method == "batched"  # it takes stacked copies


@pytest.mark.parametrize(
    "name", [n for n in SEQUENCE_BUGS if "attention" in n or "mask" in n], ids=str
)
def test_the_gradient_check_catches_attention_slips(name):
    make, shape = SEQUENCE_BUGS[name]
    rng = np.random.default_rng(5)
    report = hg.check_layer(make(rng), rng.standard_normal(shape), rng=6, raise_on_failure=False)
    assert not report.passed and report["x"].n_failed > 0


def test_the_first_position_of_a_causal_sequence_sees_only_itself():
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((1, 5, 6))
    layer = hg.ScaledDotProductAttention(1, causal=True)
    y = layer.forward(qkv)
    assert np.array_equal(y[0, 0], qkv[0, 0, 4:])
    later = qkv.copy()
    later[0, 3:] += 1.0  # changing the future leaves the past alone
    assert np.array_equal(layer.forward(later)[0, :3], y[0, :3])


def test_attention_runs_on_array_api_strict_as_on_numpy():
    xp = namespace_or_skip("array_api_strict")
    rng = np.random.default_rng(8)
    x, r = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    here = hg.MultiheadSelfAttention(4, 2, causal=True, rng=0)
    there = hg.MultiheadSelfAttention(4, 2, causal=True, rng=0, backend=xp)
    assert rel_err(there.forward(convert(x, xp)), here.forward(x)) < TOL
    assert rel_err(there.backward(convert(r, xp)), here.backward(r)) < TOL
    for name in here.params:
        assert rel_err(there.grads[name], here.grads[name]) < TOL


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be a multiple of num_heads \(4\)"):
        hg.MultiheadSelfAttention(6, 4)
    with pytest.raises(ValueError, match=r"qkv's last axis \(10\) must be 3 \* embed_dim"):
        hg.ScaledDotProductAttention(1).forward(np.ones((1, 2, 10)))
    with pytest.raises(ValueError, match="x must have 4 features"):
        hg.MultiheadSelfAttention(4, 2).forward(np.ones((1, 2, 3)))
    with pytest.raises(TypeError, match="x has dtype float32"):
        hg.MultiheadSelfAttention(4, 2).forward(np.ones((1, 2, 4), dtype=np.float32))


def test_spec_round_trip():
    from handgrad.nn.registry import build_layer, layer_spec, spec_shapes

    layer = hg.MultiheadSelfAttention(4, 2, bias=False, causal=True)
    spec = layer_spec(layer)
    assert spec == {"type": "MultiheadSelfAttention", **layer.config()}
    assert spec_shapes(spec) == {k: tuple(v.shape) for k, v in layer.params.items()}
    rebuilt = build_layer(spec)
    assert rebuilt.causal and list(rebuilt.params) == ["in_proj_weight", "out_proj.weight"]
    assert to_numpy(rebuilt.forward(np.ones((1, 2, 4)))).shape == (1, 2, 4)
