"""The GPT: nanoGPT's keys and shapes; loaded from a PyTorch GPT of that layout, its loss and
every gradient equal torch's to 1e-10 in float64, also after 10 SGD steps; a full gradient
check passes and catches a forgotten tied-weight gradient."""

import numpy as np
import pytest
import torch
from helpers import IndexInput, rel_err
from torch_gpt import TorchGPT
from zoo import ForgottenTiedGradient

import handgrad as hg
from handgrad.nn.registry import layer_spec, spec_shapes

SIZES = {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 8}


def _pair(seed=0, gelu="none", bias=True):
    """A torch GPT with random weights (std 0.3, biases too) and handgrad's GPT loaded from it."""
    torch.manual_seed(seed)
    reference = TorchGPT(**SIZES, bias=bias, approximate=gelu).double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0.0, 0.3)
    model = hg.GPT(**SIZES, bias=bias, gelu=gelu).load_state_dict(reference.state_dict())
    return model, reference


def test_keys_and_shapes_are_nanogpts():
    model, reference = _pair()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == theirs
    assert list(model.params) == [name for name, _ in reference.named_parameters()]
    assert "lm_head.weight" not in model.params  # tied: listed once, as named_parameters
    assert theirs["transformer.h.0.attn.c_attn.weight"] == (24, 8)
    assert model.lm_head.params["weight"] is model.transformer["wte"].params["weight"]
    shapes = spec_shapes(layer_spec(model))
    assert shapes == {k: tuple(v.shape) for k, v in model.params.items()}


@pytest.mark.parametrize(("gelu", "bias"), [("none", True), ("tanh", False)])
def test_loss_and_every_gradient_equal_torch_through_ten_sgd_steps(gelu, bias):
    model, reference = _pair(1, gelu, bias)
    rng = np.random.default_rng(1)
    idx, target = rng.integers(0, 11, (3, 7)), rng.integers(0, 11, (3, 7))
    target[0, :2] = -100  # ignored positions too
    loss = hg.SequenceCrossEntropyLoss()
    for _ in range(11):  # the loaded weights, then after each of 10 steps
        value = loss.forward(model.forward(idx), target)
        model.backward(loss.backward())
        reference.zero_grad()
        logits = reference(torch.from_numpy(idx))
        want = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 11), torch.from_numpy(target).reshape(-1)
        )
        want.backward()
        assert rel_err(value, want.detach()) < 1e-10
        for name, p in reference.named_parameters():
            assert rel_err(model.grads[name], p.grad) < 1e-10, name
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.5 * p.grad
        grads = dict(model.grads)
        for name, p in model.params.items():
            p -= 0.5 * grads[name]


def test_a_full_gradient_check_passes_and_catches_a_forgotten_tied_gradient():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, (2, 5)).astype(np.float64)  # token indices, as the checker wants
    y = rng.integers(0, 11, (2, 5))
    loss = hg.SequenceCrossEntropyLoss()
    model = hg.GPT(**SIZES, rng=3)
    report = hg.check_gradients(IndexInput(model), loss, x, y)
    assert report.passed
    assert sum(c.n_checked for c in report.checks) == sum(p.size for p in model.params.values())
    slipped = ForgottenTiedGradient(**SIZES, rng=3)
    report = hg.check_gradients(
        IndexInput(slipped), loss, x, y, mode="fast", raise_on_failure=False
    )
    assert not report.passed
    assert report.failures[0].name == "model.transformer.wte.weight"


def test_state_dict_lists_the_head_and_load_state_dict_keeps_the_tie():
    model, _ = _pair()
    state = model.state_dict()
    assert np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"])
    fresh = hg.GPT(**SIZES, rng=9)
    fresh.load_state_dict({k: v for k, v in state.items() if k != "lm_head.weight"})
    assert fresh.lm_head.params["weight"] is fresh.transformer["wte"].params["weight"]
    assert np.array_equal(fresh.lm_head.params["weight"], state["transformer.wte.weight"])
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(ValueError, match=r"state\['lm_head.weight'\] differs"):
        fresh.load_state_dict(state)


def test_generate_extends_the_context_and_crops_it_to_the_block():
    model = hg.GPT(**SIZES, rng=4)
    start = np.array([[1, 2], [3, 4]])
    out = model.generate(start, 10, rng=0)
    assert out.shape == (2, 12) and np.array_equal(out[:, :2], start)
    assert np.array_equal(out, model.generate(start, 10, rng=0))  # the same draws
    greedy = model.generate(start, 1, top_k=1)
    assert np.array_equal(greedy[:, -1], model.forward(start)[:, -1].argmax(-1))
    with pytest.raises(ValueError, match="temperature must be a number greater than 0"):
        model.generate(start, 1, temperature=0)


def test_the_gpt_moves_to_torch_and_float32_with_its_tie():
    model = hg.GPT(**SIZES, rng=5)
    idx = np.array([[1, 2, 3]])
    want = model.forward(idx)
    model.to("torch", dtype="float32")
    assert model.lm_head.params["weight"] is model.transformer["wte"].params["weight"]
    got = model.forward(torch.from_numpy(idx))
    assert got.dtype == torch.float32 and rel_err(got, want) < 1e-5


def test_bad_input_is_refused():
    model = hg.GPT(**SIZES, rng=6)
    with pytest.raises(ValueError, match=r"1 <= time <= block_size \(8\), got shape \(1, 9\)"):
        model.forward(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="idx holds index 11 but a GPT of vocab_size 11"):
        model.forward(np.array([[11]]))
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be a multiple of n_head \(4\)"):
        hg.GPT(11, 8, n_head=4, n_embd=10)
    with pytest.raises(TypeError, match=r"GPT has no torch\.nn counterpart"):
        model.torch_module()
