"""Flatten and Unflatten against torch.nn, on every backend."""

import numpy as np
import pytest
from helpers import BACKENDS, against_torch

import handgrad as hg
from handgrad.nn.registry import build_layer, layer_spec

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (hg.Flatten(), (2, 3, 4, 5)),
        (hg.Flatten(0, 1), (2, 3, 4)),
        (hg.Flatten(-3, -2), (2, 3, 4, 5)),
        (hg.Unflatten(1, (2, 3)), (4, 6)),
        (hg.Unflatten(-1, (1, 2, 2)), (3, 2, 4)),
    ],
    ids=repr,
)
def test_reshapes_equal_torch(backend, layer, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    out = layer.torch_module()(torch.from_numpy(x)).shape
    errors = against_torch(layer, x, rng.standard_normal(tuple(out)), backend)
    assert max(errors.values()) == 0.0
    assert build_layer(layer_spec(layer)).config() == layer.config()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hg.Flatten(2).forward(np.ones((2, 3))), "x must have the axes start_dim=2"),
        (lambda: hg.Unflatten(1, (3, 3)).forward(np.ones((2, 8))), "x must have 9 elements"),
        (lambda: hg.Unflatten(1, (3, 0)), "unflattened_size must be a non-empty sequence"),
        (lambda: hg.Flatten(1.5), "start_dim must be an integer axis"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
