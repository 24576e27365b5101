"""Embedding: rows by index, against torch.nn.Embedding in float64 (1e-12), its gradient a
scatter-add that sums repeated indices, on every backend."""

import numpy as np
import pytest
import torch
from helpers import IndexInput, namespace_or_skip, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import EmbeddingOverwritesRepeats

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy

TOL = 1e-12


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@settings(max_examples=10, deadline=None)
@given(
    vocab=st.integers(1, 6),
    dim=st.integers(1, 5),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_embedding_equals_torch(backend, vocab, dim, shape, seed):
    rng = np.random.default_rng(seed)
    layer = hg.Embedding(vocab, dim, rng=rng, backend=backend)
    idx = rng.integers(0, vocab, size=shape)  # few rows, many positions: repeats
    reference = torch.nn.Embedding(vocab, dim).double()
    reference.load_state_dict({"weight": torch.from_numpy(to_numpy(layer.params["weight"]))})
    out = reference(torch.from_numpy(idx))
    r = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(r)).sum().backward()

    xp = namespace_or_skip(backend)
    y = layer.forward(convert(idx, xp))
    assert layer.backward(convert(r, xp)) is None
    assert rel_err(y, out.detach()) < TOL
    assert rel_err(layer.grads["weight"], reference.weight.grad) < TOL


def test_embedding_runs_on_array_api_strict_as_on_numpy():
    xp = namespace_or_skip("array_api_strict")
    rng = np.random.default_rng(0)
    idx, r = rng.integers(0, 4, (3, 5)), rng.standard_normal((3, 5, 2))
    here, there = hg.Embedding(4, 2, rng=0), hg.Embedding(4, 2, rng=0, backend=xp)
    assert rel_err(there.forward(convert(idx, xp)), here.forward(idx)) == 0
    here.backward(r)
    there.backward(convert(r, xp))
    assert rel_err(there.grads["weight"], here.grads["weight"]) < TOL


def test_the_table_passes_the_gradient_check_and_the_overwriting_slip_does_not():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (3, 5)).astype(np.float64)  # indices, as floats for the checker
    y = rng.integers(0, 3, (3, 5))
    loss = hg.SequenceCrossEntropyLoss()

    def model(table):
        return IndexInput(hg.Sequential(table, hg.Tanh(), hg.Linear(6, 3, rng=2)))

    assert hg.check_gradients(model(hg.Embedding(4, 6, rng=3)), loss, x, y).passed
    report = hg.check_gradients(
        model(EmbeddingOverwritesRepeats(4, 6, rng=3)), loss, x, y, raise_on_failure=False
    )
    assert not report.passed and report.failures[0].name == "model.0.weight"


def test_indices_are_checked():
    table = hg.Embedding(4, 2)
    with pytest.raises(TypeError, match="idx must hold integer indices"):
        table.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"idx holds index 4 but Embedding\(4, 2\) takes"):
        table.forward(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="holds index -1"):
        table.forward(np.array([-1]))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        hg.Embedding(4, 2).backward(np.ones((1, 2)))


def test_spec_shapes_and_torch_counterpart():
    from handgrad.interop.oracle import to_torch_module
    from handgrad.nn.registry import build_layer, layer_spec, spec_shapes

    table = hg.Embedding(7, 3, rng=0)
    spec = layer_spec(table)
    assert spec == {"type": "Embedding", "num_embeddings": 7, "embedding_dim": 3}
    assert spec_shapes(spec) == {"weight": (7, 3)}
    assert build_layer(spec).params["weight"].shape == (7, 3)
    module = to_torch_module(table)
    assert isinstance(module, torch.nn.Embedding)
    idx = np.array([[1, 6, 1]])
    assert rel_err(table.forward(idx), module(torch.from_numpy(idx)).detach()) == 0
