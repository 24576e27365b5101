"""Dropout: inverted dropout in training mode with the layer's own seedable generator, the
identity in evaluation mode; its backward against torch's own dropout backward on the same
mask, on every backend; a gradient check with the mask held fixed."""

import numpy as np
import pytest
from helpers import BACKENDS, as_torch, namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy

torch = pytest.importorskip("torch")


class FixedMaskDropout(hg.Dropout):
    """Dropout that draws the same mask on every forward pass: its generator is seeded
    again each time, so finite differences see one function."""

    def forward(self, x):
        self.generator = np.random.default_rng(7)
        return super().forward(x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_training_mode_matches_torch_on_the_same_mask(backend, p):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(0)
    x, r = rng.standard_normal((40, 50)), rng.standard_normal((40, 50))
    layer = hg.Dropout(p, rng=1)
    y = layer.forward(convert(x, xp))
    dx = layer.backward(convert(r, xp))
    keep = as_torch(to_numpy(layer.mask)) != 0
    scale = 1 / (1 - p)
    assert rel_err(y, as_torch(x) * keep * scale) < 1e-15
    assert rel_err(dx, torch.ops.aten.native_dropout_backward(as_torch(r), keep, scale)) < 1e-15
    kept = float(keep.double().mean())
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / 2000)  # four standard errors


def test_evaluation_mode_is_the_identity_as_in_torch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    layer = hg.Dropout(0.5, rng=0).eval()
    y = layer.forward(x)
    assert y is x
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * x)
    module = layer.torch_module().eval()
    assert rel_err(y, module(as_torch(x))) == 0.0


def test_the_generator_makes_runs_repeatable_and_masks_fresh():
    x = np.ones((4, 6))
    first, second = hg.Dropout(0.5, rng=3), hg.Dropout(0.5, rng=3)
    a, b = first.forward(x), second.forward(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.forward(x), a)  # a new mask for every forward


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_the_ends_of_p(p):
    x = np.random.default_rng(0).standard_normal((3, 4))
    layer = hg.Dropout(p, rng=0)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x if p == 0 else np.zeros_like(x))
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.full_like(x, 1 - p))


def test_a_fixed_mask_passes_the_gradient_check():
    x = np.random.default_rng(0).standard_normal((5, 6))
    assert hg.check_layer(FixedMaskDropout(0.3), x).passed


@pytest.mark.parametrize("p", [-0.1, 1.5, "half"])
def test_p_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]"):
        hg.Dropout(p)
