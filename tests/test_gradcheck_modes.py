"""The batched method, the sample and fast modes, reports as JSON and pictures."""

import json
import warnings

import numpy as np
import pytest
from helpers import namespace_or_skip
from zoo import LAYER_BUGS, MissingSigmoidDerivative, SeedSlipNet

import handgrad as hg
from handgrad.core.arrays import convert
from handgrad.core.errors import NonFiniteLossError
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck import plan, probes, routes, shortcuts


def _problem(rng, sizes=(5, 7, 3), activation="tanh", batch=6):
    model = hg.mlp(list(sizes), activation, rng=rng)
    for p in model.params.values():  # non-zero biases, so bias gradients are not trivial
        p[...] = rng.standard_normal(p.shape) * 0.5
    x = rng.standard_normal((batch, sizes[0]))
    return model, x, rng.integers(0, sizes[-1], batch)


MODELS = {
    "sigmoid mlp + cross-entropy": lambda rng: (
        *_problem(rng, activation="sigmoid"),
        hg.CrossEntropyLoss(),
    ),
    "relu mlp + cross-entropy (sum)": lambda rng: (
        *_problem(rng, activation="relu"),
        hg.CrossEntropyLoss("sum"),
    ),
    "deep tanh + log-softmax + nll": lambda rng: _with_log_softmax(rng),
    "softmax + mse": lambda rng: _with_softmax_mse(rng),
}


def _with_log_softmax(rng):
    model, x, y = _problem(rng, sizes=(4, 6, 5, 3))
    return hg.Sequential(*model.layers, hg.LogSoftmax()), x, y, hg.NLLLoss()


def _with_softmax_mse(rng):
    model, x, _ = _problem(rng)
    return hg.Sequential(*model.layers, hg.Softmax()), x, rng.random((6, 3)), hg.MSELoss()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_and_loop_give_the_same_estimates_within_the_noise_floor(name):
    model, x, y, loss = MODELS[name](np.random.default_rng(0))
    batched = hg.check_gradients(model, loss, x, y, method="batched")
    assert batched.passed and batched.method == "batched"
    assert hg.check_gradients(model, loss, x, y, method="loop").method == "loop"
    evaluator = fd.BatchedEvaluator(model.layers, x, lambda s: loss.forward(s, y), 2**20)
    central = fd.make_stencil()
    for k, layer in enumerate(model.layers):
        for key, p in layer.params.items():
            flat = np.arange(p.size)
            values = p.reshape(-1).copy()
            h = fd.steps(values, 1e-6, False)
            loop = fd.LoopEvaluator(lambda: float(loss.forward(model.forward(x), y)), key)
            a = fd.estimate(lambda c, d, p=p, f=flat, e=loop: e(p, f, d), values, h, central)
            b = fd.estimate(
                lambda c, d, k=k, key=key, p=p, f=flat: evaluator.losses(k, key, p, f, d),
                values,
                h,
                central,
            )
            # two estimates of one derivative, differing only by the rounding of the loss
            assert np.max(np.abs(a - b)) <= batched.atol / 4, (k, key)


def test_the_batched_method_catches_the_zoo_and_stays_batched():
    rng = np.random.default_rng(1)
    for name, make in LAYER_BUGS.items():
        layer = make(rng)
        x = rng.standard_normal((4, getattr(layer, "in_features", 5)))
        report = hg.check_layer(layer, x, rng=2, raise_on_failure=False)
        assert not report.passed, name
        assert report.method == "batched", name


def test_a_layer_that_does_not_broadcast_falls_back_to_the_loop():
    class RowsOnly(hg.Softmax):
        """A user's layer that insists on 2-D input."""

        def forward(self, x):
            if x.ndim != 2:
                raise ValueError("2-D only")
            return super().forward(x)

    rng = np.random.default_rng(2)
    model = hg.Sequential(hg.Linear(4, 5, rng=rng), RowsOnly(), hg.Linear(5, 3, rng=rng))
    x, y = rng.standard_normal((3, 4)), rng.integers(0, 3, 3)
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert report.passed and report.method in ("loop", "mixed")
    assert hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, method="loop").passed
    with pytest.raises(ValueError, match="2-D only"):
        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, method="batched")


def test_a_parameter_layer_without_shortcuts_runs_once_per_copy():
    rng = np.random.default_rng(3)
    net = SeedSlipNet(4, rng)  # has params but no perturbed_columns
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    report = hg.check_gradients(
        net, hg.CrossEntropyLoss(), x, y, method="batched", raise_on_failure=False
    )
    assert report.method == "batched"
    assert report["w_2"].passed and not report["w_1"].passed


@pytest.mark.parametrize("max_memory", [1, 10_000, 2**30])
def test_any_memory_budget_gives_the_same_numbers(max_memory):
    model, x, y = _problem(np.random.default_rng(4))
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, max_memory=max_memory)
    reference = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert report.passed and reference.passed
    for a, b in zip(report.checks, reference.checks, strict=True):
        # a pass over more copies may round differently, never by more than the noise
        assert np.max(np.abs(a.errors - b.errors)) <= report.threshold


def test_sample_mode_checks_the_asked_number_of_elements():
    model, x, y = _problem(np.random.default_rng(5), sizes=(20, 30, 4))
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="sample", samples=7, rng=0)
    assert [c.n_checked for c in report.checks] == [7, 7, 7, 4]
    assert report.mode == "sample" and report.passed
    broken = hg.Sequential(hg.Linear(20, 30, rng=1), MissingSigmoidDerivative(), hg.Linear(30, 4))
    with pytest.raises(hg.GradientCheckError, match=r"'0\.weight'"):
        hg.check_gradients(broken, hg.CrossEntropyLoss(), x, y, mode="sample", samples=5)


def test_fast_mode_passes_correct_models_quickly():
    model, x, y = _problem(np.random.default_rng(6), sizes=(30, 40, 5))
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="fast", rng=0)
    assert report.passed and report.mode == "fast"
    assert [c.name for c in report.checks] == [f"random direction {i}" for i in range(1, 5)]


def test_fast_mode_names_the_guilty_parameter_and_element():
    rng = np.random.default_rng(7)
    model = hg.Sequential(
        hg.Linear(5, 6, rng=rng), hg.Sigmoid(), LAYER_BUGS["sign error in the weight gradient"](rng)
    )
    model.layers[2] = type(model.layers[2])(6, 4, rng=rng)
    x, y = rng.standard_normal((3, 5)), rng.integers(0, 4, 3)
    with pytest.raises(hg.GradientCheckError, match=r"'2\.weight' .* worst at index") as caught:
        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="fast", rng=1)
    report = caught.value.report
    assert report.failures[0].name == "2.weight" and report.failures[0].shape == (4, 6)
    assert {c.name for c in report.checks if c.shape} == {"2.weight"}


@pytest.mark.parametrize("name", sorted(LAYER_BUGS))
def test_fast_mode_catches_every_wrong_layer_in_100_seeds(name):
    caught = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        layer = LAYER_BUGS[name](rng)
        x = rng.standard_normal((4, getattr(layer, "in_features", 5)))
        report = hg.check_layer(layer, x, mode="fast", rng=seed, raise_on_failure=False)
        caught += not report.passed
    assert caught >= 99


def test_fast_mode_never_fails_correct_layers_over_100_seeds():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        model, x, y = _problem(rng, activation=("sigmoid", "tanh", "relu")[seed % 3])
        assert hg.check_gradients(
            model, hg.CrossEntropyLoss(), x, y, mode="fast", rng=seed
        ).passed, seed


def test_fast_mode_restores_parameters_bit_for_bit():
    model, x, y = _problem(np.random.default_rng(8))
    before = {k: v.copy() for k, v in model.params.items()}
    hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="fast")
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_batched_and_fast_run_on_other_backends(backend):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(9)
    model = hg.mlp([4, 5, 3], "sigmoid", rng=rng, backend=backend)
    x, y = convert(rng.standard_normal((3, 4)), xp), convert(rng.integers(0, 3, 3), xp)
    full = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert full.passed and full.method == "batched"
    assert hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, mode="fast").passed


def test_a_non_finite_loss_names_the_element_in_the_batched_method():
    class LogLayer(hg.Sigmoid):
        def _forward(self, xp, x):
            return xp.log(x)

    x = np.array([[1.0, 1e-7, 2.0]])
    with (
        np.errstate(invalid="ignore"),
        pytest.raises(NonFiniteLossError, match=r"x\[0, 1\] moves by -1e-06"),
    ):
        hg.check_layer(LogLayer(), x)


def test_a_step_below_float64_resolution_warns():
    layer = hg.Linear(2, 2, rng=0)
    layer.params["weight"][0, 0] = 1e12
    with pytest.warns(hg.GradientCheckWarning, match="below what float64 resolves") as caught:
        hg.check_layer(layer, np.ones((1, 2)), raise_on_failure=False)
    assert caught[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hg.check_layer(layer, np.ones((1, 2)), scaled_steps=True, raise_on_failure=False)


def test_report_json_table_and_picture(tmp_path):
    rng = np.random.default_rng(10)
    model = hg.Sequential(hg.Linear(5, 6, rng=rng), MissingSigmoidDerivative(), hg.Linear(6, 3))
    x, y = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, raise_on_failure=False)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False and data["mode"] == "full" and data["method"] == "batched"
    assert [c["name"] for c in data["checks"]] == list(model.params)
    assert data["checks"][0]["failed"] == 30 and data["checks"][2]["failed"] == 0
    lines = str(report).splitlines()
    assert lines[2].startswith("0.") and "FAIL" in lines[2] and lines[-2].endswith("ok")
    path = report.plot(tmp_path / "errors.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "quick"}, "mode must be one of 'full', 'sample', 'fast'"),
        ({"method": "gpu"}, "method must be one of 'auto', 'batched', 'rows', 'loop'"),
        ({"samples": 0}, "samples must be a positive integer"),
        ({"directions": -1}, "directions must be a positive integer"),
        ({"max_memory": 0}, "max_memory must be a positive integer"),
        ({"stencil": "9-point"}, "stencil must be"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hg.check_layer(hg.Tanh(), np.ones((2, 2)), **kwargs)


# The batched evaluator's shortcuts and what a check keeps between its passes.


def _soft_targets(rng, batch, classes):
    t = rng.random((batch, classes))
    return t / t.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_changes_equal_the_dense_loss(reduction, targets):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 4)) * 3
    y = rng.integers(0, 4, 6) if targets == "indices" else _soft_targets(rng, 6, 4)
    loss = hg.CrossEntropyLoss(reduction)
    changes = shortcuts.CrossEntropyChanges.of(loss, y, z)
    delta, vectors = rng.standard_normal((5, 6)) * 1e-3, rng.standard_normal((5, 4))
    got = changes(delta, vectors)
    base = float(loss.forward(z, y))
    for p in range(5):
        dense = float(loss.forward(z + np.outer(delta[p], vectors[p]), y)) - base
        # the dense change carries the rounding of the whole loss; the shortcut does not
        assert abs(got[p] - dense) <= 64 * np.finfo(float).eps * abs(base), p


def test_cross_entropy_shortcut_covers_only_what_it_computes():
    rng = np.random.default_rng(6)
    z, y = rng.standard_normal((3, 4)), np.array([0, 3, 1])

    class Relabelled(hg.CrossEntropyLoss):
        def forward(self, logits, target):
            return super().forward(logits, (target + 1) % 4)

    assert shortcuts.CrossEntropyChanges.of(hg.MSELoss(), y, z) is None
    assert shortcuts.CrossEntropyChanges.of(Relabelled(), y, z) is None
    assert shortcuts.CrossEntropyChanges.of(hg.CrossEntropyLoss(), y, z.astype(np.float32)) is None
    changes = shortcuts.CrossEntropyChanges.of(hg.CrossEntropyLoss(), y, z)
    vectors = np.ones((1, 4))
    assert changes(np.full((1, 3), 2.0), vectors) is None  # a logit moves by more than 1
    assert changes(np.full((1, 3), np.nan), vectors) is None  # the dense way names a NaN
    assert changes(np.full((1, 3), 1e-3), vectors).shape == (1,)


def test_the_fused_batched_evaluator_gives_the_loops_estimates():
    rng = np.random.default_rng(7)
    model, x, y = _problem(rng, sizes=(5, 7, 3), activation="sigmoid")
    loss = hg.CrossEntropyLoss()
    base = float(loss.forward(model.forward(x), y))
    fused_calls = []

    def fused(copies):
        fused_calls.append(copies.delta.shape[0])
        shortcut = shortcuts.CrossEntropyChanges.of(loss, y, copies.base)
        return shortcut(copies.delta, copies.vectors)

    evaluator = fd.BatchedEvaluator(
        model.layers, x, lambda s: loss.forward(s, y) - base, 2**20, fused=fused
    )
    central, atol = fd.make_stencil(), 16 * np.finfo(float).eps * base / 1e-6
    for k, layer in enumerate(model.layers):
        for key, p in layer.params.items():
            flat, values = np.arange(p.size), p.reshape(-1).copy()
            h = fd.steps(values, 1e-6, False)
            loop = fd.LoopEvaluator(lambda: float(loss.forward(model.forward(x), y)) - base, key)
            a = fd.estimate(lambda c, d, p=p, f=flat, e=loop: e(p, f, d), values, h, central)
            b = fd.estimate(
                lambda c, d, k=k, key=key, p=p, f=flat: evaluator.losses(k, key, p, f, d),
                values,
                h,
                central,
            )
            assert np.max(np.abs(a - b)) <= atol, (k, key)
    assert sum(fused_calls) == 2 * sum(p.size for p in model.params.values())


def test_chunks_hold_what_the_copies_hold_not_the_width_of_a_layer():
    rng = np.random.default_rng(8)
    sizes = {}
    for width in (16, 1024):
        model, x, _ = _problem(rng, sizes=(6, width, 3), activation="sigmoid", batch=4)
        evaluator = fd.BatchedEvaluator(model.layers, x, lambda s: s.sum(axis=(-2, -1)), 2**30)
        sizes[width] = evaluator.chunk_size(0)
    assert sizes[16] == sizes[1024] > 1000  # a column per copy until the loss


def test_rank_one_copies_densify_to_the_copies():
    rng = np.random.default_rng(9)
    base, columns = rng.standard_normal((3, 4)), np.array([1, 3])
    cols = fd.Columns(base, columns, rng.standard_normal((2, 3)))
    np.testing.assert_array_equal(cols.rank_one().dense(), cols.dense())
    layer = hg.Linear(4, 2, rng=rng)
    delta, vectors = shortcuts.rank_one_columns(layer)(base, cols.columns, cols.values)
    dense = fd.RankOne(layer.forward(base), delta, vectors).dense()
    for i in range(2):
        np.testing.assert_allclose(dense[i], layer.forward(cols.dense()[i]), rtol=1e-13)


@pytest.mark.parametrize("checked", ["model", "layer"])
def test_a_check_after_the_weights_change_uses_the_new_weights(checked):
    def check(model, x, y):
        if checked == "model":
            return hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, rng=0)
        return hg.check_layer(model, x, rng=0)

    model, x, y = _problem(np.random.default_rng(10), activation="sigmoid")
    first = check(model, x, y)
    for p in model.params.values():  # between checks, in place, as training would
        p *= 1.5
    again = check(model, x, y)
    twin, _, _ = _problem(np.random.default_rng(10), activation="sigmoid")
    for name, p in twin.params.items():
        p[...] = model.params[name]
    fresh = check(twin, x, y)
    assert again.loss == fresh.loss != first.loss
    for a, b in zip(again.checks, fresh.checks, strict=True):
        assert (a.name, a.numeric, a.analytic) == (b.name, b.numeric, b.analytic)
        np.testing.assert_array_equal(a.errors, b.errors)


def test_a_batched_check_leaves_the_model_as_it_found_it():
    model, x, y = _problem(np.random.default_rng(11), sizes=(6, 9, 4), activation="sigmoid")
    model.forward(x)  # caches of a forward pass, as a training step leaves them
    before = {name: p.copy() for name, p in model.params.items()}
    held = [dict(vars(layer)) for layer in model.layers]
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert report.passed and report.method == "batched"
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name])
        assert p is model.layers[int(name[0])].params[name.split(".")[1]]
    for layer, attributes in zip(model.layers, held, strict=True):
        assert vars(layer).keys() == attributes.keys()
        for key, value in attributes.items():
            if key != "grads":
                assert vars(layer)[key] is value, key


def test_a_route_faster_than_one_forward_is_not_raced_against_the_loop():
    calls = []

    def fast(flat, disp):
        return np.zeros(disp.shape), np.ones(flat.shape)

    def loop(flat, disp):
        calls.append(flat.size)
        return np.zeros(disp.shape), np.ones(flat.shape)

    flat, disp = np.arange(200), np.ones((200, 2))
    for floor, raced in ((lambda: np.inf, False), (lambda: 0.0, True)):
        calls.clear()
        way = plan._Timed(fast, "batched", loop, [], "w", floor)
        way.evaluate(flat, disp)
        assert bool(calls) == raced and way.method in ("batched", "loop")


def test_parameter_copies_stored_by_columns_give_what_the_loop_gives():
    rng = np.random.default_rng(12)

    class Dot:  # np.dot on a stack of W: one row of x and one column of W at a time
        def __init__(self):
            self.params, self.grads = {"W": rng.standard_normal((5, 3))}, {}

        def forward(self, x):
            return np.dot(x, self.params["W"])

    layer, x = Dot(), rng.standard_normal((4, 5))
    problem = routes.LayerProblem(layer, x, layer.forward(x), rng.standard_normal((4, 3)))
    found = probes.probe_stacked_param(problem, layer.params, "W", 2.0**-52, rng)
    assert found.ok and found.seconds < np.inf
    stacked = routes.stacked_param_route(
        problem, layer.params, "W", found.layout, found.axis, 2**20
    )
    flat, disp = np.arange(15), np.tile([1e-3, -1e-3], (15, 1))
    got, _ = stacked(flat, disp)
    want, _ = routes.loop_route(problem.current, layer.params["W"])(flat, disp)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
