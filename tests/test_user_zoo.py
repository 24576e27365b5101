"""The checker on layers as people write them (tests/user_zoo.py): every right one passes
and every wrong one is caught, in every mode and by every method, over several seeds.

``HANDGRAD_ZOO_SEEDS`` sets the seeds per family (3 by default, 10 in the full run). A
method that a layer does not allow ("batched" on a layer that does not take stacked
copies, "rows" on one whose samples are not independent) must refuse with its reason;
"auto" must never refuse.
"""

import os
import warnings

import numpy as np
import pytest
from user_zoo import FAMILIES

import handgrad as hg

SEEDS = range(int(os.environ.get("HANDGRAD_ZOO_SEEDS", "3")))
COMBINATIONS = [
    (mode, method) for mode in ("full", "sample", "fast") for method in hg.gradcheck.METHODS
]
TORCH = {name for name in FAMILIES if name.startswith("torch")}


def run(make, seed, mode, method):
    """The report, or None when the method refuses the layer (with its reason)."""
    layer, x = make(np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hg.GradientCheckWarning)
        try:
            return hg.check_layer(
                layer, x, mode=mode, method=method, rng=seed, raise_on_failure=False
            )
        except ValueError as err:
            if method in ("batched", "rows") and f"method={method!r} cannot check" in str(err):
                return None
            raise


@pytest.fixture
def one_torch_thread():
    """torch on one thread: small products on two threads of a busy machine wait long."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_right_layers_pass_and_wrong_ones_are_caught_in_every_mode_and_method(name, request):
    if name in TORCH:
        request.getfixturevalue("one_torch_thread")
    right, wrong = FAMILIES[name]
    false_alarms, missed = [], []
    for mode, method in COMBINATIONS:
        for seed in SEEDS:
            report = run(right, seed, mode, method)
            if report is None:
                assert method != "auto"
                continue
            if not report.passed:
                false_alarms.append((mode, method, seed, str(report)))
            report = run(wrong, seed, mode, method)
            if report is not None and report.passed:
                missed.append((mode, method, seed))
    assert not false_alarms, false_alarms[0]
    assert not missed, missed
