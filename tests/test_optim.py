import math

import numpy as np
import pytest
from helpers import as_torch, namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import convert
from handgrad.training.clipping import clip_grad_norm
from handgrad.training.optim import SGD, Adagrad, Adam, AdamW, RMSprop, make_optimizer
from handgrad.training.schedules import make_schedule

torch = pytest.importorskip("torch")

SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "weight_decay": 0.01},
    {"weight_decay": 0.1},
]
ADAM_CASES = [{}, {"betas": (0.8, 0.99), "eps": 1e-6}, {"weight_decay": 0.01}]


def _run_both(make_ours, make_theirs, steps=6):
    """The same gradients, step after step, into handgrad's and torch's optimizer."""
    rng = np.random.default_rng(0)
    params = {"0.weight": rng.standard_normal((3, 4)), "0.bias": rng.standard_normal(3)}
    theirs = [as_torch(p, requires_grad=True) for p in params.values()]
    ours = make_ours(params)
    reference = make_theirs(theirs)
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        ours.step(grads)
        for t, g in zip(theirs, grads.values(), strict=True):
            t.grad = as_torch(g)
        reference.step()
    return params, theirs


@pytest.mark.parametrize("options", SGD_CASES)
def test_sgd_matches_torch_over_several_steps(options):
    ours, theirs = _run_both(
        lambda p: SGD(p, lr=0.1, **options), lambda t: torch.optim.SGD(t, lr=0.1, **options)
    )
    for p, t in zip(ours.values(), theirs, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize("options", ADAM_CASES)
def test_adam_matches_torch_over_several_steps(options):
    ours, theirs = _run_both(
        lambda p: Adam(p, lr=0.01, **options), lambda t: torch.optim.Adam(t, lr=0.01, **options)
    )
    for p, t in zip(ours.values(), theirs, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


def test_adam_first_step_by_hand():
    """After one step, m = (1 - b1) g, v = (1 - b2) g^2, and the bias-corrected step is
    lr * g / (|g| + eps), i.e. almost exactly lr * sign(g)."""
    p = {"w": np.array([1.0, -2.0, 0.5])}
    g = np.array([0.3, -4.0, 1e-3])
    opt = Adam(p, lr=0.1, eps=1e-8)
    opt.step({"w": g})
    expected = np.array([1.0, -2.0, 0.5]) - 0.1 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p["w"], expected, rtol=1e-13)
    assert opt.t == 1
    opt.step({"w": g})
    assert opt.t == 2  # once per step, not once per parameter


def test_sgd_step_by_hand_and_state_is_per_parameter():
    p = {"a": np.array([1.0, 2.0]), "b": np.array([3.0])}
    opt = SGD(p, lr=0.5, momentum=0.9)
    opt.step({"a": np.array([1.0, 1.0]), "b": np.array([2.0])})
    opt.step({"a": np.array([1.0, 1.0]), "b": np.array([2.0])})
    # a: v1 = 1, p = 1 - .5 = .5; v2 = .9 + 1 = 1.9, p = .5 - .95 = -.45
    np.testing.assert_allclose(p["a"], [-0.45, 0.55], rtol=1e-15)
    # b: v1 = 2, p = 3 - 1 = 2; v2 = 1.8 + 2 = 3.8, p = 2 - 1.9 = 0.1
    np.testing.assert_allclose(p["b"], [0.1], rtol=1e-14)


def test_updates_are_in_place_on_the_models_arrays():
    model = hg.mlp([3, 2], rng=0)
    weight = model.params["0.weight"]
    before = weight.copy()
    opt = SGD(model.params, lr=0.1)
    model.forward(np.ones((2, 3)))
    model.backward(np.ones((2, 2)))
    opt.step(model.grads)
    assert model.params["0.weight"] is weight
    np.testing.assert_allclose(weight, before - 0.1 * model.grads["0.weight"], rtol=1e-15)


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
@pytest.mark.parametrize("make", [lambda p: SGD(p, 0.1, momentum=0.9), lambda p: Adam(p, 0.01)])
def test_optimizers_run_on_other_backends(backend, make):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(1)
    start, grad = rng.standard_normal(4), rng.standard_normal(4)
    ref = {"w": start.copy()}
    ours = {"w": convert(start, xp)}
    make(ref).step({"w": grad})
    opt = make(ours)
    opt.step({"w": convert(grad, xp)})
    assert rel_err(ours["w"], ref["w"]) < 1e-12


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: SGD(p, lr=0), ValueError, "lr must be a finite number greater than 0, got 0"),
        (lambda p: SGD(p, lr=-1), ValueError, "lr must be"),
        (lambda p: SGD(p, momentum=1.0), ValueError, r"momentum must be a number in \[0, 1\)"),
        (lambda p: SGD(p, nesterov=True), ValueError, "nesterov=True needs a momentum"),
        (
            lambda p: SGD(p, weight_decay=-0.1),
            ValueError,
            "weight_decay must be a finite number >= 0",
        ),
        (lambda p: Adam(p, betas=(0.9,)), ValueError, "betas must be a pair"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be"),
        (lambda p: Adam(p, eps=0), ValueError, "eps must be"),
        (lambda p: SGD({}), ValueError, "params must be a non-empty dict"),
        (lambda p: SGD([1, 2]), ValueError, "got list"),
    ],
)
def test_bad_hyperparameters_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call({"w": np.ones(2)})


def test_a_missing_gradient_is_named():
    opt = SGD({"w": np.ones(2), "b": np.ones(1)}, lr=0.1)
    with pytest.raises(KeyError, match="grads has no entry 'b'"):
        opt.step({"w": np.ones(2)})


def test_schedules_match_torch():
    def torch_lrs(make_scheduler, epochs):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        scheduler = make_scheduler(opt)
        lrs = []
        for _ in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        return lrs

    step = make_schedule("step", step_size=3, gamma=0.5)
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), 10)
    np.testing.assert_allclose([0.5 * step(e) for e in range(10)], expected, rtol=1e-12)
    cosine = make_schedule("cosine", total_epochs=8, min_factor=0.1)
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8, eta_min=0.05), 9
    )
    np.testing.assert_allclose([0.5 * cosine(e) for e in range(9)], expected, rtol=1e-12)
    assert make_schedule("constant")(100) == 1.0
    assert cosine(8) == pytest.approx(0.1) and cosine(20) == pytest.approx(0.1)
    assert math.isclose(cosine(4), 0.55)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="schedule must be one of 'constant', 'step', 'cosine'"):
        make_schedule("linear")
    with pytest.raises(TypeError, match="schedule 'step' takes step_size, gamma, got total_epochs"):
        make_schedule("step", total_epochs=3)
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        make_schedule("step", step_size=0)


# AdamW, RMSprop, Adagrad; clipping; warm-up + cosine


def test_adamw_decays_only_the_matrices_as_torch_with_two_groups():
    def theirs(tensors):
        weight, bias = tensors
        groups = [{"params": [weight]}, {"params": [bias], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1)

    ours, reference = _run_both(lambda p: AdamW(p, lr=0.01, weight_decay=0.1), theirs)
    for p, t in zip(ours.values(), reference, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize("options", [{}, {"betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.5}])
def test_adamw_decaying_everything_matches_torch(options):
    ours, theirs = _run_both(
        lambda p: AdamW(p, lr=0.02, decay="all", **options),
        lambda t: torch.optim.AdamW(t, lr=0.02, **options),
    )
    for p, t in zip(ours.values(), theirs, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"alpha": 0.9, "eps": 1e-6},
        {"momentum": 0.8},
        {"centered": True},
        {"centered": True, "momentum": 0.5, "weight_decay": 0.1},
    ],
)
def test_rmsprop_matches_torch_over_several_steps(options):
    ours, theirs = _run_both(
        lambda p: RMSprop(p, lr=0.01, **options),
        lambda t: torch.optim.RMSprop(t, lr=0.01, **options),
    )
    for p, t in zip(ours.values(), theirs, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize(
    "options",
    [{}, {"lr_decay": 0.1}, {"weight_decay": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6}],
)
def test_adagrad_matches_torch_over_several_steps(options):
    ours, theirs = _run_both(
        lambda p: Adagrad(p, lr=0.1, **options),
        lambda t: torch.optim.Adagrad(t, lr=0.1, **options),
    )
    for p, t in zip(ours.values(), theirs, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize(
    "make",
    [
        lambda p: AdamW(p, lr=0.01, weight_decay=0.1),
        lambda p: RMSprop(p, lr=0.01, momentum=0.5, centered=True),
        lambda p: Adagrad(p, lr=0.1, lr_decay=0.01),
    ],
    ids=["adamw", "rmsprop", "adagrad"],
)
def test_a_restored_state_goes_on_as_if_never_stopped(make):
    rng = np.random.default_rng(3)
    start = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(2)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(6)]
    straight = {k: v.copy() for k, v in start.items()}
    opt = make(straight)
    for g in grads:
        opt.step(g)
    resumed = {k: v.copy() for k, v in start.items()}
    first = make(resumed)
    for g in grads[:3]:
        first.step(g)
    second = make(resumed)
    second.load_state_dict(first.state_dict())
    for g in grads[3:]:
        second.step(g)
    for k in start:
        assert np.array_equal(resumed[k], straight[k]), k


def test_make_optimizer_knows_the_new_names():
    params = hg.mlp([3, 2], rng=0).params
    assert type(make_optimizer("adamw", params)).__name__ == "AdamW"
    assert make_optimizer("rmsprop", params, centered=True).centered
    assert make_optimizer("adagrad", params).lr == 0.1
    with pytest.raises(TypeError, match="optimizer 'rmsprop' takes the options alpha, eps"):
        make_optimizer("rmsprop", params, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="decay must be one of 'matrices', 'all', got 'biases'"):
        AdamW(params, decay="biases")


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(4)
    grads = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(3)}
    before = {k: v.copy() for k, v in grads.items()}
    clipped, norm = clip_grad_norm(grads, max_norm)
    tensors = [as_torch(g, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = as_torch(g)
    want = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert norm == pytest.approx(float(want), rel=1e-14)
    for t, g in zip(tensors, clipped.values(), strict=True):
        assert rel_err(g, t.grad) < 1e-14
    assert all(np.array_equal(grads[k], before[k]) for k in grads)  # inputs untouched
    total = math.sqrt(sum(float(np.sum(g * g)) for g in clipped.values()))
    assert total <= max_norm * (1 + 1e-9)


def test_clip_grad_norm_refuses_bad_arguments():
    with pytest.raises(ValueError, match="max_norm must be a finite number greater than 0"):
        clip_grad_norm({"w": np.ones(2)}, 0)
    with pytest.raises(ValueError, match="grads must be a non-empty dict"):
        clip_grad_norm({}, 1.0)


def test_warmup_cosine_is_nanogpts_get_lr():
    lr, min_lr, warmup, decay_iters = 6e-4, 6e-5, 10, 50

    def get_lr(it):  # nanoGPT's train.py, as it is written there
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warmup) / (decay_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    schedule = make_schedule("warmup_cosine", warmup=warmup, total=decay_iters, min_factor=0.1)
    np.testing.assert_allclose(
        [lr * schedule(i) for i in range(70)], [get_lr(i) for i in range(70)]
    )
    with pytest.raises(ValueError, match=r"warmup \(5\) must be shorter than total \(5\)"):
        make_schedule("warmup_cosine", warmup=5, total=5)
    with pytest.raises(ValueError, match="warmup must be an integer >= 0, got -1"):
        make_schedule("warmup_cosine", warmup=-1)
