import numpy as np
import pytest
from helpers import BACKENDS, as_torch, namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import convert

torch = pytest.importorskip("torch")


def _case(kind, rng, batch=5, classes=4):
    logits = rng.standard_normal((batch, classes)) * 3
    if kind == "labels":
        return logits, rng.integers(0, classes, batch)
    if kind == "one-hot":
        return logits, np.eye(classes)[rng.integers(0, classes, batch)]
    return logits, rng.dirichlet(np.ones(classes), batch) * rng.uniform(0.5, 2, (batch, 1))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["labels", "one-hot", "soft, unnormalised"])
def test_cross_entropy_matches_autograd(reduction, kind):
    logits, target = _case(kind, np.random.default_rng(0))
    loss = hg.CrossEntropyLoss(reduction)
    value = loss.forward(logits, target)
    grad = loss.backward()
    zt = as_torch(logits, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(reduction=reduction)(zt, as_torch(target))
    ref.backward()
    assert rel_err(value, ref.detach()) < 1e-12
    assert rel_err(grad, zt.grad) < 1e-12


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_matches_autograd(reduction):
    rng = np.random.default_rng(1)
    log_p = hg.LogSoftmax().forward(rng.standard_normal((6, 3)))
    target = rng.integers(0, 3, 6)
    loss = hg.NLLLoss(reduction)
    value, grad = loss.forward(log_p, target), loss.backward()
    lt = as_torch(log_p, requires_grad=True)
    ref = torch.nn.NLLLoss(reduction=reduction)(lt, as_torch(target))
    ref.backward()
    assert rel_err(value, ref.detach()) < 1e-12 and rel_err(grad, lt.grad) < 1e-12
    soft = hg.NLLLoss(reduction).forward(log_p, np.eye(3)[target])
    assert rel_err(soft, value) < 1e-15


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_autograd(reduction):
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = hg.MSELoss(reduction)
    value, grad = loss.forward(pred, target), loss.backward()
    pt = as_torch(pred, requires_grad=True)
    ref = torch.nn.MSELoss(reduction=reduction)(pt, as_torch(target))
    ref.backward()
    assert rel_err(value, ref.detach()) < 1e-12 and rel_err(grad, pt.grad) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_cls", [hg.CrossEntropyLoss, hg.NLLLoss, hg.MSELoss])
def test_losses_run_on_every_backend(backend, loss_cls):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((4, 3))
    target = rng.standard_normal((4, 3)) if loss_cls is hg.MSELoss else rng.integers(0, 3, 4)
    ref = loss_cls()
    expected, expected_grad = ref.forward(pred, target), ref.backward()
    loss = loss_cls()
    value = loss.forward(convert(pred, xp), convert(target, xp))
    assert value.shape == ()
    assert rel_err(value, expected) < 1e-12
    assert rel_err(loss.backward(), expected_grad) < 1e-12


def test_cross_entropy_is_stable_for_huge_logits():
    loss = hg.CrossEntropyLoss()
    value = loss.forward(np.array([[1000.0, -1000.0], [0.0, 800.0]]), np.array([1, 1]))
    assert float(value) == pytest.approx(1000.0)
    np.testing.assert_allclose(loss.backward(), [[0.5, -0.5], [0.0, 0.0]], atol=1e-300)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (
            np.array([0, 3, 1]),
            ValueError,
            r"class index 3 but logits has 3 classes \(valid indices 0 to 2\)",
        ),
        (np.array([0, -1, 1]), ValueError, "class index -1"),
        (
            np.array([0, 1]),
            ValueError,
            r"must have shape \(3,\) to match logits \(3, 3\), got \(2,\)",
        ),
        (np.ones((3, 2)), ValueError, r"shape of logits \(3, 3\), got \(3, 2\)"),
        (np.array([True, False, True]), TypeError, "integer class indices or floating-point"),
        (np.array([[0.5, np.nan, 0.5]] * 3), ValueError, "target contains NaN"),
        ([0, 1, 2], TypeError, "target must be an array"),
    ],
)
def test_cross_entropy_refuses_bad_targets(target, error, match):
    with pytest.raises(error, match=match):
        hg.CrossEntropyLoss().forward(np.zeros((3, 3)), target)


def test_losses_refuse_bad_arguments():
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', got 'none'"):
        hg.CrossEntropyLoss(reduction="none")
    with pytest.raises(RuntimeError, match=r"MSELoss.backward called before forward"):
        hg.MSELoss().backward()
    with pytest.raises(
        ValueError, match=r"target must have the shape of pred \(4, 1\), got \(4,\)"
    ):
        hg.MSELoss().forward(np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(
        ValueError, match=r"logits must be an array of at least 2 dimensions \(batch, classes\)"
    ):
        hg.CrossEntropyLoss().forward(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="logits contains NaN"):
        hg.CrossEntropyLoss().forward(np.array([[np.inf, 0.0]]), np.array([0]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["cross-entropy", "nll", "mse"])
def test_stacked_copies_give_one_loss_per_copy(kind, reduction):
    rng = np.random.default_rng(5)
    stack = rng.standard_normal((3, 4, 5))
    if kind == "mse":
        loss, target = hg.MSELoss(reduction), rng.standard_normal((4, 5))
    else:
        loss = hg.CrossEntropyLoss(reduction) if kind == "cross-entropy" else hg.NLLLoss(reduction)
        target = rng.integers(0, 5, 4)
    values = loss.forward(stack, target)
    assert values.shape == (3,)
    for copy, value in zip(stack, values, strict=True):
        assert float(loss.forward(copy, target)) == pytest.approx(float(value), rel=1e-14)


def _bce_case(rng, shape=(5, 3)):
    logits = rng.standard_normal(shape) * 4
    return logits, rng.uniform(size=shape)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("extras", [(), ("weight",), ("pos_weight",), ("weight", "pos_weight")])
def test_bce_with_logits_matches_autograd(reduction, extras):
    rng = np.random.default_rng(6)
    logits, target = _bce_case(rng)
    options = {}
    if "weight" in extras:
        options["weight"] = rng.uniform(size=(5, 3))
    if "pos_weight" in extras:
        options["pos_weight"] = rng.uniform(0.5, 2.0, size=3)
    loss = hg.BCEWithLogitsLoss(reduction=reduction, **options)
    value, grad = loss.forward(logits, target), loss.backward()
    zt = as_torch(logits, requires_grad=True)
    ref = loss.torch_loss(zt, as_torch(target))
    ref.backward(torch.tensor(1.7, dtype=torch.float64))  # a random upstream scalar
    assert rel_err(value, ref.detach()) < 1e-12
    assert rel_err(1.7 * grad, zt.grad) < 1e-12


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_nll_matches_autograd(reduction, log_input):
    rng = np.random.default_rng(7)
    log_rate = rng.standard_normal((6, 2))
    pred = log_rate if log_input else np.exp(log_rate)
    counts = rng.poisson(2.0, size=(6, 2)).astype(np.float64)
    loss = hg.PoissonNLLLoss(log_input=log_input, reduction=reduction)
    value, grad = loss.forward(pred, counts), loss.backward()
    pt = as_torch(pred, requires_grad=True)
    ref = loss.torch_loss(pt, as_torch(counts))
    ref.backward()
    assert rel_err(value, ref.detach()) < 1e-12 and rel_err(grad, pt.grad) < 1e-12


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["cross-entropy", "bce", "mse", "poisson"])
def test_row_weights_weigh_each_example_as_autograd_does(kind, reduction):
    """``forward_unchecked(..., row_weight=w)``: each example's loss times its weight, then
    the reduction: torch's reduction='none' losses times w, averaged or summed."""
    rng = np.random.default_rng(8)
    pred, w = rng.standard_normal((5, 3)) * 2, rng.uniform(0, 3, 5)
    labels = rng.integers(0, 3, 5)
    target = {
        "cross-entropy": np.eye(3)[labels],
        "bce": rng.uniform(size=(5, 3)),
        "mse": rng.standard_normal((5, 3)),
        "poisson": rng.poisson(2.0, (5, 3)).astype(np.float64),
    }[kind]
    ours, theirs = {
        "cross-entropy": (hg.CrossEntropyLoss(reduction), torch.nn.CrossEntropyLoss),
        "bce": (hg.BCEWithLogitsLoss(reduction=reduction), torch.nn.BCEWithLogitsLoss),
        "mse": (hg.MSELoss(reduction), torch.nn.MSELoss),
        "poisson": (hg.PoissonNLLLoss(reduction=reduction), torch.nn.PoissonNLLLoss),
    }[kind]
    extra = {"one_hot": True} if kind == "cross-entropy" else {}
    value = ours.forward_unchecked(pred, target, row_weight=w, **extra)
    grad = ours.backward()
    pt = as_torch(pred, requires_grad=True)
    torch_target = as_torch(labels) if kind == "cross-entropy" else as_torch(target)
    each = theirs(reduction="none")(pt, torch_target)
    each = each * (as_torch(w) if each.ndim == 1 else as_torch(w)[:, None])
    ref = each.mean() if reduction == "mean" else each.sum()
    if kind == "cross-entropy" and reduction == "mean":
        ref = each.sum() / 5  # torch's mean of reduction='none' over the batch
    upstream = rng.standard_normal()
    ref.backward(torch.tensor(upstream, dtype=torch.float64))
    assert rel_err(value, ref.detach()) < 1e-12
    assert rel_err(upstream * grad, pt.grad) < 1e-12


@pytest.mark.parametrize("kind", ["bce", "poisson"])
def test_new_losses_pass_a_finite_difference_check(kind):
    rng = np.random.default_rng(9)
    pred, target = _bce_case(rng, (4, 2))
    loss = hg.BCEWithLogitsLoss(pos_weight=np.array([2.0, 0.5])) if kind == "bce" else None
    if kind == "poisson":
        loss, target = hg.PoissonNLLLoss(), rng.poisson(2.0, (4, 2)).astype(np.float64)
    loss.forward(pred, target)
    analytic = loss.backward()
    numeric = hg.numerical_gradient(lambda p: float(loss.forward(p, target)), pred.copy())
    assert rel_err(analytic, numeric) < 1e-8


def test_bce_with_logits_is_stable_for_huge_logits():
    loss = hg.BCEWithLogitsLoss(reduction="sum")
    value = loss.forward(np.array([[800.0, -800.0]]), np.array([[0.0, 1.0]]))
    assert float(value) == pytest.approx(1600.0)
    np.testing.assert_allclose(loss.backward(), [[1.0, -1.0]])


def test_new_losses_refuse_bad_targets():
    with pytest.raises(
        ValueError, match=r"target must have the shape of logits \(2, 3\), got \(2,\)"
    ):
        hg.BCEWithLogitsLoss().forward(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(
        ValueError, match=r"target must have the shape of pred \(2, 1\), got \(3, 1\)"
    ):
        hg.PoissonNLLLoss().forward(np.zeros((2, 1)), np.zeros((3, 1)))
    with pytest.raises(TypeError, match="log_input must be True or False, got 1"):
        hg.PoissonNLLLoss(log_input=1)
