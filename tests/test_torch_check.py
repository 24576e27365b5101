"""handgrad.torch.gradcheck / gradgradcheck: every slip of the zoo caught by the check
that should catch it, no right Function failed, over seeds and in float64 and float32;
verdicts as torch.autograd.gradcheck's on small cases; the report, the routes, layouts,
undefined upstream gradients, reentrance, randomness and kinks."""

from __future__ import annotations

import os

import pytest
import torch

import handgrad.torch as hgt
from handgrad.core.errors import GradientCheckError, RandomLayerError
from handgrad.interop.torch_check import check_report
from tests.torch_function_zoo import CASES, SiLU, SiLUVmap, Square


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: torch's thread pool costs more than it gives on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SEEDS = range(int(os.environ.get("HANDGRAD_ZOO_SEEDS", "3")))
# right at second order too: their backward is differentiable (it saves only the inputs);
# layer norm, attention and the conv save intermediates of forward, detached from x
SECOND_ORDER = {"silu", "silu vmap", "square", "cube"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(CASES))
def test_the_zoo_gets_the_right_verdict(name, seed, dtype):
    fn, make, catches = CASES[name]
    inputs = make(seed, dtype)
    first = hgt.gradcheck(fn, inputs, check_layouts=False, seed=seed, raise_exception=False)
    assert first == (catches != "first"), name
    if catches == "first":
        return
    assert hgt.gradcheck(fn, inputs, seed=seed, raise_exception=False) == (catches != "layouts")
    if name in SECOND_ORDER or catches == "second":
        assert hgt.gradgradcheck(fn, inputs, seed=seed, raise_exception=False) == (
            catches != "second"
        )


@pytest.mark.parametrize(
    "name", [n for n in CASES if not n.startswith("float32") and CASES[n][2] != "second"]
)
def test_first_order_verdicts_match_torch_autograd_gradcheck(name):
    fn, make, catches = CASES[name]
    inputs = make(0, torch.float64)
    theirs = torch.autograd.gradcheck(fn, inputs, raise_exception=False)
    ours = hgt.gradcheck(
        fn, inputs, check_layouts=False, check_undefined_grad=False, raise_exception=False
    )
    assert ours == theirs == (catches != "first")


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("float32")])
def test_second_order_verdicts_match_torch_autograd_gradgradcheck(name):
    fn, make, _ = CASES[name]
    inputs = make(0, torch.float64)
    theirs = torch.autograd.gradgradcheck(fn, inputs, raise_exception=False)
    ours = hgt.gradgradcheck(
        fn, inputs, check_layouts=False, check_undefined_grad=False, raise_exception=False
    )
    assert ours == theirs


def test_torch_gradcheck_passes_the_contiguous_only_kernel_and_ours_names_the_layout():
    fn, make, _ = CASES["fused kernel contiguous only"]
    inputs = make(0, torch.float64)
    assert torch.autograd.gradcheck(fn, inputs)
    with pytest.raises(GradientCheckError) as caught:
        hgt.gradcheck(fn, inputs)
    text = str(caught.value)
    assert "grad_output transposed" in text and "inputs[0]" in text


def test_the_report_names_input_element_values_and_count():
    fn, make, _ = CASES["layer norm slip"]
    inputs = make(0, torch.float64)
    with pytest.raises(GradientCheckError) as caught:
        hgt.gradcheck(fn, inputs)
    report = caught.value.report
    row = report["inputs[0]"]
    assert row.n_checked == 72 and 0 < row.n_failed <= 72
    assert report["inputs[1]"].passed and report["inputs[2]"].passed
    text = str(caught.value)
    assert "'inputs[0]'" in text and f"{row.n_failed} of 72 elements off" in text
    assert f"{row.analytic:.6e}" in text and f"{row.numeric:.6e}" in text


def test_a_module_has_its_parameters_checked_by_name():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    report = check_report(module, (x,))
    assert report.passed
    assert [c.name for c in report.checks] == ["inputs[0]", "0.weight", "0.bias"]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert hgt.gradcheck(module, (x.detach(),))  # parameters alone
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


class _SlippedLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

    def forward(self, x):
        return _LinearSlip.apply(x, self.weight)


class _LinearSlip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.t()

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        return dy @ w, dy.t() @ x * 0.5  # slip: dW halved


def test_a_modules_wrong_parameter_gradient_is_named():
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(GradientCheckError) as caught:
        hgt.gradcheck(_SlippedLinear(), (x,))
    assert caught.value.failure.name == "weight" and caught.value.failure.n_failed == 12


class _TwoOutputs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return x.sin(), x.exp()

    @staticmethod
    def backward(ctx, da, db):
        (x,) = ctx.saved_tensors
        return da * x.cos() + db * x.exp()  # fails when a grad_output is None


class _TwoOutputsRight(_TwoOutputs):
    @staticmethod
    def backward(ctx, da, db):
        (x,) = ctx.saved_tensors
        dx = torch.zeros_like(x)
        if da is not None:
            dx = dx + da * x.cos()
        if db is not None:
            dx = dx + db * x.exp()
        return dx


def test_undefined_upstream_gradients_are_handled_and_a_backward_that_cannot_is_named():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert hgt.gradcheck(_TwoOutputsRight.apply, (x,))
    with pytest.raises(GradientCheckError) as caught:
        hgt.gradcheck(_TwoOutputs.apply, (x,))
    assert "grad_output None" in str(caught.value) and "TypeError" in str(caught.value)
    assert hgt.gradcheck(_TwoOutputs.apply, (x,), check_undefined_grad=False)


class _Noisy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x * dy * (1 + 1e-13 * torch.rand_like(x))  # atomics' order, as it were


def test_nondeterminism_of_the_backward_is_named_and_tolerated_within_nondet_tol():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(GradientCheckError, match="a second backward pass"):
        hgt.gradcheck(_Noisy.apply, (x,))
    assert hgt.gradcheck(_Noisy.apply, (x,), nondet_tol=1e-10)


def test_a_random_forward_is_named():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RandomLayerError, match="is random"):
        hgt.gradcheck(lambda a: torch.nn.functional.dropout(a, 0.5), (x,))


def test_a_kink_is_named_not_failed():
    x = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]], dtype=torch.float64)
    report = check_report(torch.relu, (x.requires_grad_(True),))
    assert report.passed and {k.index for k in report["inputs[0]"].kinks} == {(0, 0), (1, 1)}


@pytest.mark.parametrize("method", ["rows", "vmap", "stacked", "loop"])
def test_every_method_agrees_and_stays_within_a_tiny_memory_budget(method):
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    report = check_report(SiLUVmap.apply, (x,), method=method, max_memory=1)
    assert report.passed and report["inputs[0]"].method == method


def test_vmap_is_refused_with_the_reason_for_a_function_without_a_vmap_rule():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="setup_context"):
        hgt.gradcheck(SiLU.apply, (x,), method="vmap")
    notes = " ".join(check_report(SiLU.apply, (x,), method="auto").notes)
    assert check_report(SiLU.apply, (x,))["inputs[0]"].method == "rows" and "loop" not in notes


def test_a_function_mixing_samples_is_not_batched_by_rows():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    report = check_report(lambda a: a - a.mean(0), (x,))
    assert report.passed and report["inputs[0]"].method == "vmap"


def test_float32_inputs_are_checked_without_false_failures_and_slips_still_caught():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    report = check_report(SiLU.apply, (x,))
    assert report.passed and report.precision == "float64" and "float64 copy" in report.notes[0]
    assert not hgt.gradcheck(CASES["silu slip"][0], (x,), raise_exception=False)


def test_gradgradcheck_takes_given_grad_outputs_and_checks_them():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 4, dtype=torch.float64)
    report = check_report(Square.apply, (x,), order=2, grad_outputs=(v,))
    assert report.passed and [c.name for c in report.checks] == ["inputs[0]", "grad_outputs[0]"]


def test_gradgradcheck_batches_by_vmap_a_function_that_mixes_samples():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)

    def centred(a):
        y = SiLUVmap.apply(a)
        return y - y.mean(0)

    report = check_report(centred, (x,), order=2)
    assert report.passed and [c.method for c in report.checks] == ["vmap", "vmap"]


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x * dy


def test_a_backward_that_cannot_be_differentiated_fails_gradgradcheck_as_torchs_does():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert hgt.gradcheck(_OnceDifferentiable.apply, (x,))
    with pytest.raises(GradientCheckError) as caught:
        hgt.gradgradcheck(_OnceDifferentiable.apply, (x,))
    assert caught.value.failure.name == "inputs[0]" and caught.value.failure.analytic == 0.0
    notes = check_report(_OnceDifferentiable.apply, (x,), order=2).notes
    assert any("outside autograd (once_differentiable)" in note for note in notes), notes
    assert not torch.autograd.gradgradcheck(_OnceDifferentiable.apply, (x,), raise_exception=False)


def test_a_layout_failure_shows_in_the_reports_json():
    fn, make, _ = CASES["fused kernel contiguous only"]
    report = check_report(fn, make(0, torch.float64))
    rows = [row for row in report.to_dict()["checks"] if "condition" in row]
    assert rows and rows[0]["condition"].startswith("grad_output transposed")
    assert rows[0]["baseline"] == "a contiguous grad_output" and not rows[0]["passed"]


_SCALE = torch.tensor([1.0, 1e-10, 2.0, -3e-10, 0.5], dtype=torch.float64)


class _TinyWrongSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * _SCALE

    @staticmethod
    def backward(ctx, dy):
        return dy * torch.where(_SCALE.abs() < 1e-5, -_SCALE, _SCALE)  # tiny ones' sign wrong


def test_a_wrong_sign_on_tiny_gradients_next_to_large_ones_is_caught():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    report = check_report(_TinyWrongSign.apply, (x,))
    assert not report.passed and report["inputs[0]"].worst_index[1] in (1, 3)
    assert hgt.gradcheck(lambda a: a * _SCALE, (x,))


class _Centre(torch.autograd.Function):
    """y = x - mean over the batch axis, counted from the end (so stacked copies work)."""

    @staticmethod
    def forward(ctx, x):
        return x - x.mean(-2, keepdim=True)

    @staticmethod
    def backward(ctx, dy):
        return dy - dy.mean(-2, keepdim=True)  # dL/dx = dy - mean(dy)


class _CentreFirstAxis(torch.autograd.Function):
    """The same with axis 0: stacked copies would be averaged together."""

    @staticmethod
    def forward(ctx, x):
        return x - x.mean(0, keepdim=True)

    @staticmethod
    def backward(ctx, dy):
        return dy  # slip: the mean's term left out


def test_old_style_functions_that_mix_samples_fall_back_to_stacked_copies_or_the_loop():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    report = check_report(_Centre.apply, (x,))
    assert report.passed and report["inputs[0]"].method == "stacked"
    report = check_report(_CentreFirstAxis.apply, (x,))
    assert not report.passed and report["inputs[0]"].method == "loop"
    assert "stacked:" in report.notes[0] and "vmap:" in report.notes[0]


def test_a_large_check_holds_a_few_arrays_of_the_inputs_size_beyond_the_budget():
    # tracemalloc sees NumPy's allocations (torch's own do not show): the upstream gradient
    # drawn (1 array of the input's size), the noise scale |y0 v| (2, for a moment), the
    # plot's per-element differences (1), a backward check's blocks; the blocks of the
    # verdict stay within the budget. Before the tally, the check held ~13 such arrays.
    import tracemalloc

    import numpy as np

    from handgrad.interop.torch_tally import Tally

    x = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    budget, size = 2**21, x.numel() * 8
    check_report(SiLU.apply, (x[:100].detach().clone().requires_grad_(True),))  # imports done
    tracemalloc.start()
    try:
        report = check_report(SiLU.apply, (x,), max_memory=budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.passed and report["inputs[0]"].n_checked == x.numel()
    assert peak <= 6 * size + budget, f"peak {peak / size:.1f} x the input's bytes"
    # the tally gives the row summarize gives, block by block: kinks, ties, NaN
    from handgrad.gradcheck.report import Kink, summarize

    rng = np.random.default_rng(0)
    a, n = rng.standard_normal(50), rng.standard_normal(50)
    rel = np.round(rng.random(50), 1)
    kink, slopes = rel < 0.2, rng.standard_normal((50, 2))
    rel, n[7] = np.where(kink, 0.0, rel), np.nan
    tally = Tally("w", (5, 10))
    for start in range(0, 50, 16):
        part = slice(start, start + 16)
        tally.add(start, a[part], n[part], rel[part], rel[part] > 0.85, kink[part], slopes[part])
    kinks = tuple(
        Kink(tuple(int(k) for k in np.unravel_index(i, (5, 10))), a[i], *slopes[i])
        for i in np.flatnonzero(kink)
    )
    want = summarize("w", (5, 10), np.arange(50), a, n, rel, rel > 0.85, kinks=kinks, ignored=kink)
    got = tally.row()
    for field in ("max_rel_diff", "worst_index", "analytic", "numeric", "n_failed", "kinks"):
        assert getattr(got, field) == getattr(want, field), field
    assert np.isnan(got.max_abs_diff) and np.isnan(want.max_abs_diff)
    assert np.array_equal(got.errors, want.errors)
