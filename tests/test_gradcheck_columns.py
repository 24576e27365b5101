"""The columns route (handgrad.gradcheck.columns): a parameter whose slices each move one
slice of the output alone has one element of every slice moved per evaluation; its probe
refuses a parameter whose slices move other output slices, and its losses are the loop's."""

import numpy as np
import pytest
from user_zoo import DotLinear, TorchStyleLinear

import handgrad as hg
from handgrad.gradcheck.columns import columns_route, probe_columns, worth_probing
from handgrad.gradcheck.probes import probe_stacked_param
from handgrad.gradcheck.routes import LayerProblem, loop_route

UNIT = 2.0**-52


class Leaky(DotLinear):
    """np.dot(x, W) + b plus ``leak(W)``, an output-shaped term that may mix W's columns."""

    def __init__(self, rng, leak, n_in=6, n_out=5):
        super().__init__(rng, n_in, n_out)
        self.leak = leak

    def forward(self, x):
        return super().forward(x) + self.leak(self.params["W"])


def pair_leak(source, target):
    """Column ``source`` of W moves output column ``target`` (and its own)."""

    def leak(W):
        term = np.zeros(W.shape[1])
        term[target] = np.tanh(W[:, source]).sum()
        return term

    return leak


class SoftmaxLinear(DotLinear):
    """softmax(x W + b) over the output axis: every column of W moves every output."""

    def forward(self, x):
        z = super().forward(x)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, dout):
        # dL/dz = y * (dL/dy - sum(dL/dy * y))
        return super().backward(self.y * (dout - np.sum(dout * self.y, axis=-1, keepdims=True)))


def problem_of(layer, x, seed=1):
    y0 = layer.forward(x)
    return LayerProblem(layer, x.copy(), y0, np.random.default_rng(seed).standard_normal(y0.shape))


def probe(layer, x, key="W"):
    return probe_columns(problem_of(layer, x), layer.params, key, UNIT, np.random.default_rng(0))


def data(n_in=6, n_out=5, batch=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal((batch, n_in))


@pytest.mark.parametrize("source, target", [(s, t) for s in range(5) for t in range(5) if s != t])
def test_the_probe_refuses_a_leak_from_any_column_to_any_other(source, target):
    rng, x = data()
    found = probe(Leaky(rng, pair_leak(source, target)), x)
    assert not found.ok and "move other slices of the output" in found.reason


@pytest.mark.parametrize(
    "leak",
    [lambda W: W.sum(), lambda W: np.roll(W.sum(axis=0), 1), lambda W: W.sum(axis=0).mean()],
    ids=["W.sum()", "roll(W.sum(0), 1)", "W.sum(0).mean()"],
)
def test_the_probe_refuses_terms_that_mix_columns(leak):
    rng, x = data()
    assert not probe(Leaky(rng, leak), x).ok


def test_the_probe_refuses_a_normalisation_over_the_output_axis():
    rng, x = data()
    layer = SoftmaxLinear(rng, 6, 5)
    assert not probe(layer, x).ok and not probe(layer, x, "b").ok
    report = hg.check_layer(layer, x, rng=0)  # today's routes, still right
    assert report.passed and report["W"].method == "batched"


def test_a_term_per_column_is_no_leak():
    rng, x = data()
    layer = Leaky(rng, lambda W: W.sum(axis=0))  # column j of W moves output column j alone
    found = probe(layer, x)
    assert found.ok and (found.param_axis, found.axis) == (1, 1)


@pytest.mark.parametrize("stacked", [True, False])
def test_the_route_gives_the_loops_losses(stacked):
    rng, x = data(20, 10, 10)
    layer = DotLinear(rng, 20, 10)
    problem = problem_of(layer, x)
    rng = np.random.default_rng(0)
    found = probe_columns(problem, layer.params, "W", UNIT, rng)
    layout = probe_stacked_param(problem, layer.params, "W", UNIT, rng) if stacked else None
    assert found.ok and (layout is None or layout.ok)
    route = columns_route(problem, layer.params, "W", found, layout, 2**20)
    loop = loop_route(problem.current, layer.params["W"])
    flat = rng.permutation(200)[:150]  # uneven counts per column, in no order
    disp = rng.standard_normal((150, 4)) * 1e-3
    before = layer.params["W"].copy()
    (got, scales), (want, loop_scales) = route(flat, disp), loop(flat, disp)
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    assert np.array_equal(scales, loop_scales) and np.array_equal(layer.params["W"], before)


def test_check_layer_takes_it_where_it_pays_and_catches_a_wrong_weight_gradient():
    rng, x = data(20, 10, 10)
    report = hg.check_layer(DotLinear(rng, 20, 10), x, rng=0)
    assert report.passed and report["W"].method == "columns"
    assert report["b"].method == "batched"  # 10 elements: the probe would cost more

    class Slip(DotLinear):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"][3, 7] *= 1.001
            return dx

    rng, x = data(20, 10, 10)
    wrong = hg.check_layer(Slip(rng, 20, 10), x, rng=0, raise_on_failure=False)
    assert wrong["W"].method == "columns" and wrong["W"].n_failed == 1
    assert wrong["W"].worst_index == (3, 7)


def test_a_weight_read_from_an_attribute_goes_by_plain_forwards():
    rng, x = data(20, 10, 10)
    report = hg.check_layer(TorchStyleLinear(rng, 20, 10), x, rng=0)
    assert report.passed and report["weight"].method == "columns"

    class Slip(TorchStyleLinear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["weight"][6, 2] += 1e-4
            return dx

    rng, x = data(20, 10, 10)
    wrong = hg.check_layer(Slip(rng, 20, 10), x, rng=0, raise_on_failure=False)
    assert wrong["weight"].method == "columns" and wrong["weight"].n_failed == 1
    assert wrong["weight"].worst_index == (6, 2)


def test_worth_probing_weighs_the_saved_evaluations_against_the_probe():
    assert worth_probing((20, 10), (10, 10), 200, copy_cost=0.5)  # 360 / 32 saved, 5 spent
    assert not worth_probing((20, 10), (10, 10), 200, copy_cost=0.01)  # 3.6 saved
    assert not worth_probing((10,), (10, 10), 10, copy_cost=0.5)  # 18 / 32 saved
    assert worth_probing((10,), (10, 10), 10)  # 18 forwards of the loop saved
    assert not worth_probing((3, 7), (10, 10), 21)  # no axis of one size
