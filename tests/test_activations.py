"""The activations with options, LeakyReLU, ELU, GELU (exact and tanh), SiLU and Softplus,
against torch.nn (float64, 1e-12 relative) on random inputs, on every backend, tails
included; the error function they rest on against the C library's."""

import math

import numpy as np
import pytest
from helpers import BACKENDS, against_torch
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad as hg
from handgrad.core.arrays import get_namespace
from handgrad.nn.functional import erf
from handgrad.nn.registry import activation, activation_names, build_layer, layer_spec

pytest.importorskip("torch")

TOL = 1e-12
LAYERS = {
    "leaky_relu": lambda: hg.LeakyReLU(0.2),
    "leaky_relu-negative-slope": lambda: hg.LeakyReLU(-0.5),
    "elu": lambda: hg.ELU(),
    "elu-alpha": lambda: hg.ELU(2.5),
    "gelu": lambda: hg.GELU(),
    "gelu-tanh": lambda: hg.GELU("tanh"),
    "silu": lambda: hg.SiLU(),
    "softplus": lambda: hg.Softplus(),
    "softplus-beta": lambda: hg.Softplus(beta=2.0, threshold=3.0),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(4, 5), (2, 3, 4)]),
    scale=st.sampled_from([1.0, 4.0, 30.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_activation_equals_torch(backend, name, shape, scale, seed):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal(shape)
    x = np.where(np.abs(x) < 1e-9, 1.0, x)  # away from the kinks at 0
    errors = against_torch(LAYERS[name](), x, rng.standard_normal(shape), backend)
    assert max(errors.values()) < TOL, errors


def test_they_are_offered_to_mlp_and_the_command_line():
    for name, cls in {
        "leaky_relu": hg.LeakyReLU,
        "elu": hg.ELU,
        "gelu": hg.GELU,
        "silu": hg.SiLU,
        "softplus": hg.Softplus,
    }.items():
        assert name in activation_names() and activation(name) is cls
    model = hg.mlp([3, 4, 2], activation="gelu", rng=0)
    assert type(model[1]) is hg.GELU


@pytest.mark.parametrize("name", LAYERS)
def test_a_spec_rebuilds_the_activation(name):
    layer = LAYERS[name]()
    rebuilt = build_layer(layer_spec(layer))
    assert repr(rebuilt) == repr(layer) and rebuilt.config() == layer.config()


@pytest.mark.parametrize("backend", BACKENDS)
def test_erf_is_the_c_librarys_to_float64_precision(backend):
    xp = get_namespace(backend)
    z = np.concatenate([np.linspace(-7, 7, 2801), [0.0, 1e-300, -1e-8, 5.99, 6.0, 6.01]])
    ours = np.asarray(erf(xp, xp.asarray(z)), dtype=np.float64)
    theirs = np.array([math.erf(v) for v in z])
    assert np.max(np.abs(ours - theirs)) < 4e-15
    assert np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)) < 4e-15


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hg.GELU("fast"), "approximate must be one of 'none', 'tanh'"),
        (lambda: hg.Softplus(beta=0), "beta must be a finite number greater than 0"),
        (lambda: hg.LeakyReLU(float("nan")), "negative_slope must be a finite number"),
        (lambda: hg.ELU("1"), "alpha must be a finite number"),
    ],
)
def test_bad_options_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
