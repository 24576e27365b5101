"""BatchNorm1d, BatchNorm2d, LayerNorm and GroupNorm against torch.nn (float64, 1e-12
relative) in training and evaluation mode, on random shapes and every backend; running
statistics over several batches, as torch keeps them."""

import numpy as np
import pytest
from helpers import BACKENDS, against_torch, as_torch, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad as hg
from handgrad.core.arrays import convert
from handgrad.nn.registry import build_layer, layer_spec, spec_shapes

torch = pytest.importorskip("torch")

TOL = 1e-12
# Every statistic here runs over at least 3 values: over 2, the normalised values are +-1
# whatever x is, dL/dx is of the order of eps / var, and it comes out of a cancellation
# that leaves any two correct implementations 1e-11 apart relative to it.
few = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def _randomise(layer, rng, backend):
    """Random parameters and running statistics (variances positive)."""
    for store in (layer.params, layer.buffers):
        for name, a in store.items():
            if name == "num_batches_tracked":
                continue
            values = rng.standard_normal(tuple(a.shape))
            store[name][...] = convert(
                np.abs(values) + 0.5 if name == "running_var" else values, backend
            )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@few
@given(
    kind=st.sampled_from(["1d-rows", "1d-length", "2d"]),
    batch=st.integers(3, 5),
    channels=st.integers(1, 4),
    momentum=st.sampled_from([0.1, 0.5, None]),
    affine=st.booleans(),
    track=st.booleans(),
    seed=seeds,
)
def test_batch_norm_equals_torch(
    backend, mode, kind, batch, channels, momentum, affine, track, seed
):
    rng = np.random.default_rng(seed)
    cls = hg.BatchNorm2d if kind == "2d" else hg.BatchNorm1d
    layer = cls(
        channels, momentum=momentum, affine=affine, track_running_stats=track, backend=backend
    )
    _randomise(layer, rng, backend)
    layer.train(mode == "train")
    tail = {"1d-rows": (), "1d-length": (int(rng.integers(1, 5)),), "2d": (3, 2)}[kind]
    x = 3 * rng.standard_normal((batch, channels, *tail)) + 1
    errors = against_torch(layer, x, rng.standard_normal(x.shape), backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_follow_torch_over_several_batches(momentum):
    """Five training batches update the running mean, the *unbiased* running variance and
    the batch count as torch does; evaluation then uses them."""
    rng = np.random.default_rng(0)
    layer = hg.BatchNorm2d(3, momentum=momentum)
    module = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    for _ in range(5):
        x = 2 * rng.standard_normal((4, 3, 2, 3)) + 5
        layer.forward(x)
        module(as_torch(x))
    for name, value in module.state_dict().items():
        assert rel_err(layer.state_dict()[name], value) < TOL, name
    assert int(layer.buffers["num_batches_tracked"]) == 5
    x = rng.standard_normal((2, 3, 2, 2))
    errors = against_torch(layer.eval(), x, rng.standard_normal(x.shape))
    assert max(errors.values()) < TOL


def test_evaluation_mode_leaves_the_running_statistics_alone():
    layer = hg.BatchNorm1d(2).eval()
    before = layer.state_dict()
    layer.forward(np.random.default_rng(0).standard_normal((4, 2)))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(
    lead=st.sampled_from([(3,), (2, 3)]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).filter(lambda s: np.prod(s) >= 3),
    affine=st.booleans(),
    bias=st.booleans(),
    seed=seeds,
)
def test_layer_norm_equals_torch(backend, lead, shape, affine, bias, seed):
    rng = np.random.default_rng(seed)
    layer = hg.LayerNorm(tuple(shape), elementwise_affine=affine, bias=bias, backend=backend)
    _randomise(layer, rng, backend)
    x = rng.standard_normal((*lead, *shape))
    errors = against_torch(layer, x, rng.standard_normal(x.shape), backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(
    groups=st.integers(1, 3),
    per_group=st.integers(1, 3),
    tail=st.sampled_from([(4,), (2, 3)]),
    affine=st.booleans(),
    seed=seeds,
)
def test_group_norm_equals_torch(backend, groups, per_group, tail, affine, seed):
    rng = np.random.default_rng(seed)
    channels = groups * per_group
    layer = hg.GroupNorm(groups, channels, affine=affine, backend=backend)
    _randomise(layer, rng, backend)
    x = rng.standard_normal((3, channels, *tail))
    errors = against_torch(layer, x, rng.standard_normal(x.shape), backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize(
    "layer",
    [
        hg.BatchNorm1d(3, eps=1e-3, momentum=None, affine=False),
        hg.BatchNorm2d(2, track_running_stats=False),
        hg.LayerNorm((2, 3), elementwise_affine=True, bias=False),
        hg.GroupNorm(2, 4, affine=False),
    ],
    ids=repr,
)
def test_a_spec_rebuilds_the_layer_and_names_its_arrays(layer):
    spec = layer_spec(layer)
    rebuilt = build_layer(spec)
    assert rebuilt.config() == layer.config()
    assert spec_shapes(spec) == {k: tuple(v.shape) for k, v in layer.state_dict().items()}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hg.BatchNorm1d(3).forward(np.ones((1, 3))), "more than one value per channel"),
        (lambda: hg.BatchNorm2d(3).forward(np.ones((2, 3, 4))), "must be a 4-D array"),
        (lambda: hg.BatchNorm1d(3).forward(np.ones((2, 4))), "must have 3 channels"),
        (lambda: hg.GroupNorm(3, 4), "num_groups must divide num_channels"),
        (lambda: hg.LayerNorm(3).forward(np.ones((2, 4))), r"must end in the axes \(3,\)"),
        (lambda: hg.BatchNorm1d(3, momentum=1.5), r"momentum must be a number in \[0, 1\]"),
        (lambda: hg.LayerNorm(()), "normalized_shape must be a positive integer"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
