"""The flat in-place optimizer state: bit for bit the per-parameter formulas (written out
here as the optimizers computed them before), against torch.optim in float64, checkpoints
through it, and no temporary arrays in an update."""

import math
import tracemalloc

import numpy as np
import pytest
from helpers import as_torch, rel_err

from handgrad.training.optim import SGD, Adam, AdamW

SHAPES = [(4, 3), (4,), (2, 4), (2,)]


def _reference_sgd(params, velocity, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            if velocity[i] is None:
                velocity[i] = g.copy()
            else:
                velocity[i] *= momentum
                velocity[i] += g
            g = g + momentum * velocity[i] if nesterov else velocity[i]
        p -= lr * g


def _reference_adam(params, m, v, t, grads, lr, betas, eps, weight_decay, decoupled, decayed):
    beta1, beta2 = betas
    if decoupled and weight_decay:
        for p, d in zip(params, decayed, strict=True):
            if d:
                p *= 1 - lr * weight_decay
    step_size = lr / (1 - beta1**t)
    root_correction = math.sqrt(1 - beta2**t)
    for p, g, mi, vi in zip(params, grads, m, v, strict=True):
        if weight_decay and not decoupled:
            g = g + weight_decay * p
        mi *= beta1
        mi += (1 - beta1) * g
        vi *= beta2
        vi += (1 - beta2) * (g * g)
        p -= step_size * (mi / (np.sqrt(vi) / root_correction + eps))


def _start(dtype):
    rng = np.random.default_rng(1)
    return {f"p{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(SHAPES)}


def _grads(rng, dtype):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


SGD_CASES = [
    {},
    {"weight_decay": 0.1},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", SGD_CASES)
def test_flat_sgd_is_bit_for_bit_the_per_parameter_formula(options, dtype):
    ours, theirs = _start(dtype), [p.copy() for p in _start(dtype).values()]
    optimizer = SGD(ours, lr=0.05, **options)
    assert optimizer._flat is not None
    velocity = [None] * len(SHAPES)
    rng = np.random.default_rng(2)
    for _ in range(5):
        grads = _grads(rng, dtype)
        optimizer.update(grads)
        _reference_sgd(theirs, velocity, grads, 0.05, **options)
    for p, q in zip(ours.values(), theirs, strict=True):
        assert p.dtype == dtype
        np.testing.assert_array_equal(p, q)
    if options.get("momentum"):
        for a, b in zip(optimizer.velocity, velocity, strict=True):
            np.testing.assert_array_equal(a, b)


ADAM_CASES = [
    (Adam, {}),
    (Adam, {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    (AdamW, {"weight_decay": 0.1}),
    (AdamW, {"weight_decay": 0.1, "decay": "all"}),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("kind", "options"), ADAM_CASES)
def test_flat_adam_is_bit_for_bit_the_per_parameter_formula(kind, options, dtype):
    ours, theirs = _start(dtype), [p.copy() for p in _start(dtype).values()]
    optimizer = kind(ours, lr=0.01, **options)
    assert optimizer._flat is not None
    m = [np.zeros_like(p) for p in theirs]
    v = [np.zeros_like(p) for p in theirs]
    decayed = [options.get("decay") == "all" or p.ndim >= 2 for p in theirs]
    betas, eps = options.get("betas", (0.9, 0.999)), options.get("eps", 1e-8)
    rng = np.random.default_rng(3)
    for t in range(1, 6):
        grads = _grads(rng, dtype)
        optimizer.update(grads)
        _reference_adam(
            theirs, m, v, t, grads, 0.01, betas, eps, options.get("weight_decay", 0.0),
            kind is AdamW, decayed,
        )  # fmt: skip
    for a, b in zip([*ours.values(), *optimizer.m, *optimizer.v], [*theirs, *m, *v], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
         lambda t: __import__("torch").optim.SGD(t, lr=0.1, momentum=0.9, nesterov=True,
                                                 weight_decay=0.01)),
        (lambda p: Adam(p, lr=0.01, weight_decay=0.01),
         lambda t: __import__("torch").optim.Adam(t, lr=0.01, weight_decay=0.01)),
        (lambda p: AdamW(p, lr=0.01, weight_decay=0.1, decay="all"),
         lambda t: __import__("torch").optim.AdamW(t, lr=0.01, weight_decay=0.1)),
    ],
)  # fmt: skip
def test_flat_optimizers_match_torch_optim_in_float64(ours, theirs):
    torch = pytest.importorskip("torch")
    params = _start("float64")
    tensors = [as_torch(p.copy(), requires_grad=True) for p in params.values()]
    optimizer, reference = ours(params), theirs(tensors)
    rng = np.random.default_rng(4)
    for _ in range(6):
        grads = _grads(rng, "float64")
        optimizer.update(grads)
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.from_numpy(g)
        reference.step()
    for p, t in zip(params.values(), tensors, strict=True):
        assert rel_err(p, t.detach()) < 1e-12


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: Adam(p, lr=0.01),
        lambda p: AdamW(p, lr=0.01),
    ],
)
def test_a_loaded_state_goes_into_the_flat_buffers_and_on_bit_for_bit(make):
    rng = np.random.default_rng(5)
    steps = [_grads(rng, "float64") for _ in range(6)]
    straight, resumed = _start("float64"), _start("float64")
    first = make(straight)
    for grads in steps:
        first.update(grads)
    before = make(resumed)
    for grads in steps[:3]:
        before.update(grads)
    after = make(resumed)  # a fresh optimizer on the same arrays, from the checkpoint
    after.load_state_dict(before.state_dict())
    for grads in steps[3:]:
        after.update(grads)
    for p, q in zip(straight.values(), resumed.values(), strict=True):
        np.testing.assert_array_equal(p, q)
    buffers = after._buffers()
    for kind, values in buffers.items():
        assert all(isinstance(a, np.ndarray) and a.base is not None for a in values), kind


def test_sgd_state_dict_has_no_velocity_before_the_first_step():
    optimizer = SGD(_start("float64"), lr=0.1, momentum=0.9)
    assert optimizer.state_dict() == {"step": 0}
    optimizer.update(_grads(np.random.default_rng(6), "float64"))
    assert sorted(optimizer.state_dict()) == ["step"] + [f"velocity/p{i}" for i in range(4)]


def test_mixed_dtypes_take_the_per_parameter_route():
    params = {"a": np.ones(3), "b": np.ones(2, dtype=np.float32)}
    optimizer = Adam(params, lr=0.1)
    assert optimizer._flat is None
    optimizer.update([np.ones(3), np.ones(2, dtype=np.float32)])
    assert params["b"].dtype == np.float32 and np.allclose(params["a"], 0.9)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD(p, lr=0.1),
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda p: Adam(p, lr=0.01, weight_decay=0.1),
        lambda p: AdamW(p, lr=0.01),
    ],
)
def test_an_update_allocates_no_arrays(make):
    rng = np.random.default_rng(7)
    params = {"w": rng.standard_normal((200, 100)), "b": rng.standard_normal(200)}
    grads = [rng.standard_normal((200, 100)), rng.standard_normal(200)]
    optimizer = make(params)
    optimizer.update(grads)  # the velocity is made on the first step
    tracemalloc.start()
    for _ in range(3):
        optimizer.update(grads)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096  # bytes: a temporary would be 160 kB
