"""handgrad.jax.check_grads: JAX functions with custom_vjp rules, right and wrong, checked
on every element in reverse mode; each wrong one caught by the order it needs, no right
one failed, over seeds, in float64 and float32; the safeguards of handgrad's checker
(kinks, randomness, float32 noise, batching proven first) for JAX functions."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax_zoo import ZOO  # noqa: E402

import handgrad as hg  # noqa: E402
import handgrad.jax as hj  # noqa: E402
from handgrad.core.errors import GradientCheckWarning, RandomLayerError  # noqa: E402

SEEDS = (0, 1, 2)


def _float32(args):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), args)


def _verdict(case, report):
    """0 when it passed, else the order of the first failed row."""
    failed = report.failures
    if not failed:
        return 0
    return 2 if all(r.name.endswith("(order 2)") for r in failed) else 1


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_zoo_each_wrong_one_caught_by_its_order_no_right_one_failed(case):
    order = 1 if case.caught_by == 1 else 2
    for seed in SEEDS:
        args = case.args(np.random.default_rng(seed))
        for given in (args, _float32(args)):  # float32 arguments: checked as float64 copies
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GradientCheckWarning)
                report = hj.gradient_report(case.f, given, order, rng=seed)
            assert _verdict(case, report) == case.caught_by, f"seed {seed}\n{report}"
            assert report.precision == "float64"
            sizes = [np.size(leaf) for leaf in jax.tree.leaves(args)]
            assert [r.n_checked for r in report.checks[: len(sizes)]] == sizes  # every element


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_zoo_at_float32s_own_precision(case):
    """float64=False: float32 steps and tolerance, and the same verdicts."""
    for seed in SEEDS[:2]:
        args = _float32(case.args(np.random.default_rng(seed)))
        order = 1 if case.caught_by == 1 else 2
        with pytest.warns(GradientCheckWarning, match="checked in float32"):
            report = hj.gradient_report(case.f, args, order, rng=seed, float64=False)
        assert report.precision == "float32" and report.threshold == 1e-3
        assert _verdict(case, report) == case.caught_by, f"seed {seed}\n{report}"


def _autodiff_agrees(case, args, order):
    """Whether the custom rule agrees with JAX's autodiff of the plain forward (1e-12)."""
    plain = case.f.plain
    with jax.enable_x64(True):
        args = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), args)
        out = plain(*args)
        v = jnp.asarray(np.random.default_rng(9).standard_normal(out.shape))

        def pulled(f):
            return lambda *a: jax.vjp(f, *a)[1](v)

        if order == 2:
            draw = np.random.default_rng(8).standard_normal
            w = jax.tree.map(lambda a: jnp.asarray(draw(a.shape)), args)

            def second(f):
                return lambda *a: jax.vjp(pulled(f), *a)[1](w)

            got, want = jax.jit(second(case.f))(*args), jax.jit(second(plain))(*args)
        else:
            got, want = jax.jit(pulled(case.f))(*args), jax.jit(pulled(plain))(*args)
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    scale = max(float(np.max(np.abs(w))) for w in want)
    return all(
        float(np.max(np.abs(g - w))) <= 1e-12 * scale for g, w in zip(got, want, strict=True)
    )


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_the_zoo_is_what_it_says_by_jax_autodiff(case):
    """An oracle independent of the checker: JAX's own derivatives of the forward."""
    args = case.args(np.random.default_rng(0))
    if case.name == "relu-at-a-kink":  # autodiff's choice at 0 is ours: compare away from it
        args = (np.abs(args[0]) + 0.1,)
    first = _autodiff_agrees(case, args, 1)
    assert first == (case.caught_by != 1)
    if case.caught_by != 1:  # a wrong first derivative has a wrong second one, whatever
        assert _autodiff_agrees(case, args, 2) == (case.caught_by == 0)


def test_the_report_names_the_argument_the_element_and_both_values():
    silu_slip = next(c for c in ZOO if c.name == "layer-norm-slip")
    x, params = silu_slip.args(np.random.default_rng(0))
    with pytest.raises(hg.GradientCheckError) as caught:
        hj.check_grads(silu_slip.f, (x, params), rng=0)
    failure = caught.value.failure
    assert failure.name == "x" and failure.shape == (3, 5) and failure.n_checked == 15
    assert 0 < failure.n_failed <= 15 and failure.analytic != failure.numeric
    assert str(caught.value).startswith("gradient check failed for 'x' (shape (3, 5)): ")
    assert [c.name for c in caught.value.report.checks] == [
        "x",
        "params['beta']",
        "params['gamma']",
    ]
    assert hj.check_grads(silu_slip.f, (x, params), rng=0, raise_on_failure=False) is False
    right = next(c for c in ZOO if c.name == "layer-norm")
    assert hj.check_grads(right.f, (x, params), order=2, rng=0) is True


def test_a_kink_is_named_not_failed():
    relu = next(c for c in ZOO if c.name == "relu-at-a-kink")
    report = hj.gradient_report(relu.f, relu.args(np.random.default_rng(0)), rng=0)
    assert report.passed
    kink = report["x"].kinks[0]
    assert kink.index == (1, 2) and kink.left == 0.0 and kink.analytic == 0.0  # relu' = 0 there
    assert abs(kink.right) > 0.1  # the slope of <v, relu(x)> from the right: v[1, 2]


def test_integer_leaves_are_indices_passed_as_they_are():
    def gather(table, index):
        return jnp.tanh(table[index]) * 2.0

    table, index = np.random.default_rng(0).standard_normal((5, 3)), jnp.array([4, 0, 4])
    report = hj.gradient_report(gather, (table, index), order=2, rng=0)
    assert report.passed and [c.name for c in report.checks] == [
        "table",
        "table (order 2)",
        "v (order 2)",
    ]


def _host_sin(x):  # a callback with no batching rule: vmap cannot run it
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


_sin_on_host = jax.custom_vjp(_host_sin)
_sin_on_host.defvjp(lambda x: (_host_sin(x), x), lambda x, g: (g * jnp.cos(x),))


def test_a_function_vmap_cannot_run_is_checked_by_the_loop():
    x = np.random.default_rng(0).standard_normal(4)
    report = hj.gradient_report(_sin_on_host, (x,), rng=0)
    assert report.passed and report.method == "loop"
    assert report.notes[0].startswith("x: jax.vmap of the function failed")
    with pytest.raises(ValueError, match="method='vmap' cannot check 'x'"):
        hj.check_grads(_sin_on_host, (x,), method="vmap")


def _mixing(x):
    """x - mean(x) over a batch axis that a wrong vmap_method adds: copies mixed."""

    def host(a):
        return np.asarray(a - a.mean(axis=0) if a.ndim > 1 else a - a.mean(), a.dtype)

    shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.pure_callback(host, shape, x, vmap_method="broadcast_all")


_centred = jax.custom_vjp(_mixing)
_centred.defvjp(lambda x: (_mixing(x), None), lambda _, g: (g - g.mean(),))


def test_batched_copies_that_mix_are_caught_and_the_loop_used():
    x = np.random.default_rng(0).standard_normal(5)
    report = hj.gradient_report(_centred, (x,), rng=0)
    assert report.passed and report.method == "loop"
    assert "batched copies do not compute what it computes" in report.notes[0]


def test_randomness_is_named():
    def noisy(x):  # a new draw at every call, outside JAX's keys
        noise = jax.pure_callback(
            lambda: np.random.standard_normal(3), jax.ShapeDtypeStruct((3,), x.dtype)
        )
        return x * noise

    with pytest.raises(RandomLayerError, match="f is random: two calls on the same arguments"):
        hj.check_grads(noisy, (np.ones(3),))

    def drawn_when_traced(x):
        return x * np.random.standard_normal()

    with pytest.raises(RandomLayerError, match="f is random"):
        hj.check_grads(drawn_when_traced, (np.ones(3),), rng=0)


def _jitter(x, g):
    bump = jax.pure_callback(lambda: np.random.uniform(0, 1e-13), jax.ShapeDtypeStruct((), g.dtype))
    return (2 * x * g + bump,)


_square_jittered = jax.custom_vjp(lambda x: x * x)
_square_jittered.defvjp(lambda x: (x * x, x), _jitter)


def test_a_nondeterministic_vjp_is_named_and_tolerated_with_nondet_tol():
    x = np.linspace(0.5, 1.5, 4)
    with pytest.raises(RandomLayerError, match="the VJP of f is not deterministic"):
        hj.check_grads(_square_jittered, (x,), rng=0)
    assert hj.check_grads(_square_jittered, (x,), rng=0, nondet_tol=1e-12)


def test_the_check_leaves_jax_and_the_arguments_as_they_were():
    silu = ZOO[0]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    before, flag = x.copy(), jax.config.jax_enable_x64
    with pytest.warns(GradientCheckWarning, match="x is float32, too coarse"):
        assert hj.check_grads(silu.f, (x,), order=2, rng=0)
    assert jax.config.jax_enable_x64 == flag and np.array_equal(x, before)


def test_a_small_memory_budget_gives_the_same_numbers_in_more_calls():
    attention = next(c for c in ZOO if c.name == "attention")
    args = attention.args(np.random.default_rng(0))
    wide = hj.gradient_report(attention.f, args, rng=0)
    narrow = hj.gradient_report(attention.f, args, rng=0, max_memory=4096)
    for a, b in zip(wide.checks, narrow.checks, strict=True):
        assert (a.numeric, a.analytic, a.n_checked) == (b.numeric, b.analytic, b.n_checked)


def test_sample_and_fast_modes():
    slip = next(c for c in ZOO if c.name == "silu-slip")
    args = slip.args(np.random.default_rng(0))
    report = hj.gradient_report(slip.f, args, rng=0, mode="fast")
    assert not report.passed and report.failures[0].name == "x"
    sampled = hj.gradient_report(ZOO[0].f, args, rng=0, mode="sample", samples=5)
    assert sampled.passed and sampled["x"].n_checked == 5


def test_cotangents_come_from_their_own_stream():
    report = hj.gradient_report(lambda x: x, (np.random.default_rng(0).standard_normal(4),), rng=0)
    # <v, x> with v drawn from the same seed as x would be |x|^2 > 0
    x = np.random.default_rng(0).standard_normal(4)
    assert report.loss != pytest.approx(float(x @ x))


def test_handgrad_imports_no_jax_until_a_check_runs():
    code = "import sys, handgrad, handgrad.jax; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
