"""The gradient check on the vision layers: check_layer passes each, in training and
evaluation mode, and catches every slip of the zoo; compare_with_autograd on a small
convolutional network, through to_torch_module."""

import numpy as np
import pytest
from test_dropout import FixedMaskDropout
from zoo import VISION_BUGS

import handgrad as hg

LAYERS = {
    "conv2d": (lambda: hg.Conv2d(2, 3, 3, stride=2, padding=1, rng=0), (2, 2, 5, 5)),
    "conv2d-same-dilated-groups": (
        lambda: hg.Conv2d(4, 2, 2, padding="same", dilation=2, groups=2, rng=0),
        (2, 4, 4, 4),
    ),
    "conv1d": (lambda: hg.Conv1d(2, 3, 3, stride=2, padding=1, rng=0), (2, 2, 7)),
    "max-pool-overlapping": (lambda: hg.MaxPool2d(3, stride=1, padding=1), (2, 2, 4, 4)),
    "avg-pool-overlapping": (lambda: hg.AvgPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    "batch-norm-1d": (lambda: hg.BatchNorm1d(3), (5, 3)),
    "batch-norm-2d": (lambda: hg.BatchNorm2d(2), (3, 2, 3, 3)),
    "layer-norm": (lambda: hg.LayerNorm((2, 3)), (4, 2, 3)),
    "group-norm": (lambda: hg.GroupNorm(2, 4), (3, 4, 5)),
    "dropout-fixed-mask": (lambda: FixedMaskDropout(0.3), (4, 5)),
    "flatten": (lambda: hg.Flatten(), (2, 3, 2, 2)),
    "unflatten": (lambda: hg.Unflatten(1, (2, 3)), (3, 6)),
    "leaky-relu": (lambda: hg.LeakyReLU(0.1), (4, 5)),
    "elu": (lambda: hg.ELU(1.5), (4, 5)),
    "gelu": (lambda: hg.GELU(), (4, 5)),
    "gelu-tanh": (lambda: hg.GELU("tanh"), (4, 5)),
    "silu": (lambda: hg.SiLU(), (4, 5)),
    "softplus": (lambda: hg.Softplus(beta=2.0), (4, 5)),
}


def _parameters_away_from_one(layer, rng):
    """Random parameters (a weight of ones and a bias of zeros hide slips)."""
    for name, p in layer.params.items():
        layer.params[name][...] = rng.standard_normal(p.shape)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", LAYERS)
def test_check_layer_passes(name, mode):
    make, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    layer = make()
    _parameters_away_from_one(layer, rng)
    if mode == "eval":
        if "running_var" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.standard_normal(layer.num_features)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, layer.num_features)
        layer.eval()
    report = hg.check_layer(layer, rng.standard_normal(shape), rng=1)
    assert report.passed, str(report)


@pytest.mark.parametrize("name", sorted(VISION_BUGS))
def test_every_slip_of_the_vision_zoo_is_caught(name):
    make, shape = VISION_BUGS[name]
    rng = np.random.default_rng(1)
    layer = make(rng)
    _parameters_away_from_one(layer, rng)
    x = rng.standard_normal(shape)
    if isinstance(layer, hg.MaxPool2d):
        x = x + 10.0 * (np.arange(x.size).reshape(shape) % 7 == 3)  # maxima in many windows
    report = hg.check_layer(layer, x, rng=2, raise_on_failure=False)
    assert not report.passed, name
    assert report.failures[0].n_failed > 0


def test_a_small_cnn_agrees_with_autograd():
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    model = hg.Sequential(
        hg.Unflatten(1, (2, 5, 5)),
        hg.Conv2d(2, 4, 3, padding=1, bias=False, rng=rng),  # a bias before BN gets dL/db = 0
        hg.BatchNorm2d(4),
        hg.GELU(),
        hg.MaxPool2d(2, stride=1),
        hg.Conv2d(4, 3, 2, stride=2, rng=rng),
        hg.GroupNorm(1, 3),
        hg.SiLU(),
        hg.Flatten(),
        hg.LayerNorm(12),
        hg.Linear(12, 4, rng=rng),
    )
    for name, p in model.params.items():
        model.params[name][...] = rng.standard_normal(p.shape)
    x, y = rng.standard_normal((6, 50)), rng.integers(0, 4, 6)
    for mode in (True, False):
        comparison = hg.compare_with_autograd(model.train(mode), hg.CrossEntropyLoss(), x, y)
        assert comparison.passed, str(comparison)
