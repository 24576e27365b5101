"""SequenceCrossEntropyLoss (ignore index, mask) and HuberLoss against torch in float64 at
1e-12, stacked copies, and their refusals."""

import numpy as np
import pytest
import torch
from helpers import namespace_or_skip, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad as hg
from handgrad.core.arrays import convert

TOL = 1e-12
examples = settings(max_examples=10, deadline=None)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@examples
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 4),
    classes=st.integers(1, 5),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sequence_cross_entropy_equals_torch(
    backend, reduction, batch, time, classes, use_mask, seed
):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((batch, time, classes))
    target = rng.integers(0, classes, (batch, time))
    target[rng.random((batch, time)) < 0.3] = -1  # ignored positions
    target[0, 0] = 0  # at least one counts
    mask = rng.random((batch, time)) < 0.7 if use_mask else None
    if mask is not None:
        mask[0, 0] = True
    loss = hg.SequenceCrossEntropyLoss(ignore_index=-1, reduction=reduction)
    xp = namespace_or_skip(backend)
    value = loss.forward(
        convert(logits, xp), convert(target, xp), None if mask is None else convert(mask, xp)
    )
    grad = loss.backward()

    logits_t = torch.tensor(logits, requires_grad=True)
    keep = torch.from_numpy(target if mask is None else np.where(mask, target, -1))
    want = torch.nn.functional.cross_entropy(
        logits_t.reshape(-1, classes), keep.reshape(-1), ignore_index=-1, reduction=reduction
    )
    want.backward()
    assert tuple(value.shape) == ()
    assert rel_err(value, want.detach()) < TOL
    assert rel_err(grad, logits_t.grad) < TOL


def test_stacked_copies_give_one_loss_each():
    rng = np.random.default_rng(1)
    logits, target = rng.standard_normal((4, 2, 3, 5)), rng.integers(0, 5, (2, 3))
    loss = hg.SequenceCrossEntropyLoss()
    stacked = loss.forward(logits, target)
    assert stacked.shape == (4,)
    for i in range(4):
        assert stacked[i] == pytest.approx(float(loss.forward(logits[i], target)), abs=1e-15)


def test_sequence_cross_entropy_refuses_bad_targets():
    loss = hg.SequenceCrossEntropyLoss()
    logits = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"logits must have shape \(\.\.\., 2, 2, classes\)"):
        loss.forward(logits, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="target holds class index 4 but logits have 4 classes"):
        loss.forward(logits, np.full((2, 3), 4))
    with pytest.raises(ValueError, match="no position counts"):
        loss.forward(logits, np.full((2, 3), -100))
    with pytest.raises(ValueError, match="mask must be a boolean array of the target's shape"):
        loss.forward(logits, np.zeros((2, 3), dtype=np.int64), np.ones((2, 3)))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        loss.forward(logits, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        hg.SequenceCrossEntropyLoss(ignore_index=0.5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@examples
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    delta=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_huber_equals_torch(reduction, shape, delta, seed):
    rng = np.random.default_rng(seed)
    pred, target = 2 * rng.standard_normal(shape), rng.standard_normal(shape)
    loss = hg.HuberLoss(reduction, delta)
    value, grad = loss.forward(pred, target), loss.backward()
    pred_t = torch.tensor(pred, requires_grad=True)
    want = torch.nn.HuberLoss(reduction=reduction, delta=delta)(pred_t, torch.from_numpy(target))
    want.backward()
    assert rel_err(value, want.detach()) < TOL
    assert rel_err(grad, pred_t.grad) < TOL


def test_huber_is_checked_by_the_gradient_check_on_a_model():
    rng = np.random.default_rng(2)
    model = hg.Sequential(hg.Linear(3, 4, rng=0), hg.Tanh(), hg.Linear(4, 2, rng=1))
    x, y = rng.standard_normal((5, 3)), 2 * rng.standard_normal((5, 2))
    assert hg.check_gradients(model, hg.HuberLoss(delta=0.5), x, y).passed
    with pytest.raises(ValueError, match="delta must be a finite number greater than 0, got 0"):
        hg.HuberLoss(delta=0)
