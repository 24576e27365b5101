"""Small helpers shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.core.arrays import get_namespace, to_numpy

BACKENDS = ("numpy", "torch", "array_api_strict")


def namespace_or_skip(name: str):
    """The namespace ``name``, or skip the test if its library is missing."""
    try:
        return get_namespace(name)
    except ImportError:
        pytest.skip(f"{name} is not installed")


def rel_err(actual, expected) -> float:
    """Largest absolute difference relative to the largest magnitude of ``expected``."""
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    b = np.asarray(to_numpy(expected), dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def as_torch(a, requires_grad: bool = False):
    """A float64 (or integer) torch copy of an array of any library."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.array(to_numpy(a)))
    return t.requires_grad_(requires_grad) if requires_grad else t


class Square:
    """y = x^2: a user's layer with nothing but the protocol."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return 2 * self.x * dy


def against_torch(layer, x, r, backend: str = "numpy") -> dict:
    """Run ``layer`` (its arrays on ``backend``) and its torch counterpart
    (``layer.torch_module()`` with the layer's parameters and buffers, in the layer's mode)
    on the float64 NumPy input ``x`` with the upstream gradient ``r``; return the relative
    error (:func:`rel_err`) of the output, dL/dx, every parameter gradient and, after the
    step, every floating buffer. Integer buffers (batch counts) must be equal."""
    pytest.importorskip("torch")
    from handgrad.core.arrays import convert

    module = layer.torch_module().double()
    module.load_state_dict({k: as_torch(v) for k, v in layer.state_dict().items()})
    module.train(layer.training)
    xt = as_torch(x, requires_grad=True)
    yt = module(xt)
    (yt * as_torch(r)).sum().backward()
    xp = namespace_or_skip(backend)
    y = layer.forward(convert(x, xp))
    dx = layer.backward(convert(r, xp))
    assert type(dx) is type(convert(r, xp))
    errors = {"y": rel_err(y, yt.detach()), "dx": rel_err(dx, xt.grad)}
    for name, p in module.named_parameters():
        errors[name] = rel_err(layer.grads[name], p.grad)
    for name, b in module.named_buffers():
        if b.is_floating_point():
            errors[name] = rel_err(layer.buffers[name], b)
        else:
            assert int(to_numpy(layer.buffers[name])) == int(b), name
    return errors


class FixedMaskDropout(hg.Dropout):
    """Dropout that draws the same mask on every forward pass: its generator is seeded again
    each time, so finite differences see one function."""

    def forward(self, x):
        self.generator = np.random.default_rng(7)
        return super().forward(x)


class IndexInput:
    """Feeds a model that takes integer indices (an Embedding, a GPT) from a float array of
    whole numbers, since the gradient checks take float inputs; its parameters are the
    model's, under ``"model."``."""

    def __init__(self, model):
        self.model = model
        self.params, self.grads = {}, {}

    @property
    def children(self):
        return {"model": self.model}

    def forward(self, x):
        self._shape = x.shape
        return self.model.forward(x.astype(np.int64))

    def backward(self, dy):
        self.model.backward(dy)
        return np.zeros(self._shape)
