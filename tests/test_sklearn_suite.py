"""scikit-learn's own MLP tests, run on handgrad's estimators.

The file ``sklearn/neural_network/tests/test_mlp.py`` of the installed scikit-learn is read
at test time (not copied here), ``MLPClassifier`` and ``MLPRegressor`` are replaced by
``HandgradClassifier`` and ``HandgradRegressor`` (its one import of them is pointed at
``handgrad.sklearn``), and every test in it runs, except those below, which read or set
private attributes of scikit-learn's implementation. The module is skipped when the file
is not there (scikit-learn installed without its tests) or no longer imports the two names.
"""

from __future__ import annotations

import importlib.util
import os
import types
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

EXCLUDED = {
    "test_fit": "sets the private _coef_grads, _intercept_grads, _coef_velocity, ... by hand",
    "test_gradient": "calls the private _loss_grad_lbfgs",
    "test_learning_rate_warmstart": "reads the private _optimizer.learning_rate",
    "test_adaptive_learning_rate": "reads the private _optimizer.learning_rate",
    "test_n_iter_no_change": "reads the private _no_improvement_count",
    "test_n_iter_no_change_inf": "reads the private _no_improvement_count",
}
# The slowest tests here (3 to 15 s each on 2 cores, about 35 s together; scikit-learn's own
# MLPClassifier takes as long on them): marked slow, they run in CI (CI=true) and with
# HANDGRAD_SLOW=1, and are skipped in a plain local run.
SLOW = {
    "test_partial_fit_classification",
    "test_multioutput_regression",
    "test_warm_start",
    "test_lbfgs_classification_maxfun",
    "test_lbfgs_regression",
}
RUN_SLOW = bool(os.environ.get("CI") or os.environ.get("HANDGRAD_SLOW"))
_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"


def _sklearn_tests() -> Path:
    spec = importlib.util.find_spec("sklearn")
    return Path(spec.origin).parent / "neural_network" / "tests" / "test_mlp.py"


def _load() -> types.ModuleType:
    path = _sklearn_tests()
    if not path.is_file():
        pytest.skip(f"scikit-learn's MLP tests are not installed ({path})", allow_module_level=True)
    source = path.read_text(encoding="utf-8")
    if _IMPORT not in source:
        pytest.skip(f"{path} no longer has the line {_IMPORT!r}", allow_module_level=True)
    source = source.replace(_IMPORT, "from handgrad.sklearn import MLPClassifier, MLPRegressor")
    source = source.replace("MLPClassifier", "HandgradClassifier")
    source = source.replace("MLPRegressor", "HandgradRegressor")
    module = types.ModuleType("sklearn_test_mlp_on_handgrad")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


@pytest.fixture
def global_random_seed() -> int:
    """scikit-learn's fixture of the same name, at its default seed."""
    return 42


_module = _load()
for _name, _test in vars(_module).items():
    if _name.startswith("test_") and callable(_test) and _name not in EXCLUDED:
        if _name in SLOW:
            _test = pytest.mark.slow(_test)
            if not RUN_SLOW:
                reason = "slow: runs in CI, or here with HANDGRAD_SLOW=1"
                _test = pytest.mark.skip(reason=reason)(_test)
        globals()[_name] = _test


def test_the_excluded_tests_exist():
    """Each exclusion (and slow mark) names a test of the file: none is left out by a typo."""
    assert set(EXCLUDED) | SLOW <= set(vars(_module))
    assert not set(EXCLUDED) & {name for name in globals() if name.startswith("test_")}
