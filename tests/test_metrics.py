import dataclasses
import json
import re
import sys
import warnings

import numpy as np
import pytest

from handgrad.app.metrics import ClassificationMetrics, classification_metrics

pytest.importorskip("sklearn")

NAMES = ["cat", "dog", "bird"]


def _example():
    return classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], NAMES)


def test_hand_worked_example():
    m = _example()
    # rows = true class: cat -> cat, dog; dog -> dog, dog; bird -> cat
    assert m.confusion == ((1, 1, 0), (0, 2, 0), (1, 0, 0))
    assert m.accuracy == pytest.approx(3 / 5, rel=1e-12)
    # precision = diagonal / column sum: 1/2, 2/3, 0/0 -> 0
    assert m.precision == pytest.approx((1 / 2, 2 / 3, 0.0), rel=1e-12)
    # recall = diagonal / row sum: 1/2, 2/2, 0/1
    assert m.recall == pytest.approx((1 / 2, 1.0, 0.0), rel=1e-12)
    # f1 = 2pr / (p + r): 1/2, 2 * (2/3) / (5/3) = 4/5, 0
    assert m.f1 == pytest.approx((1 / 2, 4 / 5, 0.0), rel=1e-12)
    assert m.support == (2, 2, 1)
    assert m.class_names == tuple(NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scores_counted_from_the_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    m = classification_metrics(y_true, y_pred, list("abcd"))
    counts = np.zeros((4, 4), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    tp = np.diag(counts)
    precision, recall = tp / counts.sum(axis=0), tp / counts.sum(axis=1)
    assert np.array_equal(m.confusion, counts)
    assert m.accuracy == pytest.approx(tp.sum() / 200, rel=1e-12)
    assert m.precision == pytest.approx(precision, rel=1e-12)
    assert m.recall == pytest.approx(recall, rel=1e-12)
    assert m.f1 == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-12)
    assert m.support == tuple(counts.sum(axis=1))


def test_classes_never_predicted_or_never_true_get_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # "bird" is never predicted; "fish" is neither true nor predicted
        m = classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), [*NAMES, "fish"])
    assert m.precision == pytest.approx((1.0, 0.5, 0.0, 0.0))
    assert m.recall == pytest.approx((1.0, 1.0, 0.0, 0.0))
    assert m.f1[2:] == (0.0, 0.0)
    assert m.support == (1, 1, 1, 0)
    assert m.confusion[3] == (0, 0, 0, 0)
    assert [row[3] for row in m.confusion] == [0, 0, 0, 0]


def test_str_shows_accuracy_scores_macro_average_and_confusion():
    text = str(_example())
    lines = text.splitlines()
    assert lines[0] == "accuracy 0.6000 on 5 examples"
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:6]}
    assert rows == {
        "cat": ["0.5000", "0.5000", "0.5000", "2"],
        "dog": ["0.6667", "1.0000", "0.8000", "2"],
        "bird": ["0.0000", "0.0000", "0.0000", "1"],
    }
    # macro average of all three classes, the never-predicted one included
    assert re.search(r"^macro avg\s+0\.3889\s+0\.5000\s+0\.4333\s+5$", text, re.MULTILINE)
    header = lines.index(next(line for line in lines if line.startswith("true \\ predicted")))
    assert lines[header].split()[3:] == NAMES
    assert [line.split() for line in lines[header + 1 :]] == [
        ["cat", "1", "1", "0"],
        ["dog", "0", "2", "0"],
        ["bird", "1", "0", "0"],
    ]


def test_to_dict_round_trips_through_json_with_plain_types():
    m = _example()
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert all(type(v) is int for v in d["support"])
    loaded = {
        k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(json.dumps(d)).items()
    }
    loaded["confusion"] = tuple(map(tuple, d["confusion"]))
    assert ClassificationMetrics(**loaded) == m


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _example().accuracy = 1.0


def test_accepts_any_integer_dtype_and_lists():
    a = classification_metrics(np.array([0, 1], dtype=np.uint8), [1, 1], ["a", "b"])
    assert a.confusion == ((0, 1), (0, 1))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "names", "error", "message"),
    [
        ([0, 1, 1], [0, 1], NAMES, ValueError, "same length, got 3 and 2"),
        (
            [[0, 1]],
            [[0, 1]],
            NAMES,
            ValueError,
            r"y_true must be 1-D class indices, got shape \(1, 2\)",
        ),
        ([0, 1], [0, 3], NAMES, ValueError, r"y_pred\[1\] = 3 is not a class index.*0\.\.2"),
        ([0, -1, -2], [0, 1, 2], NAMES, ValueError, r"y_true\[1\] = -1 .*\(2 out of range"),
        ([], [], NAMES, ValueError, "y_true is empty"),
        ([0.0, 1.0], [0, 1], NAMES, TypeError, "y_true must hold integer class indices"),
        ([True], [True], NAMES, TypeError, "got dtype bool"),
        ([0], [0], [], ValueError, "class_names must be a non-empty list"),
        ([0], [0], "ab", ValueError, "class_names must be a non-empty list"),
        ([0], [0], ["a", "a"], ValueError, "class_names must be distinct"),
    ],
)
def test_bad_input_is_refused(y_true, y_pred, names, error, message):
    with pytest.raises(error, match=message):
        classification_metrics(y_true, y_pred, names)


def test_missing_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    with pytest.raises(ImportError, match=r"pip install 'handgrad\[sklearn\]'"):
        _example()
