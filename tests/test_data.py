import contextlib
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import datasets as skdatasets
from sklearn.preprocessing import StandardScaler

from handgrad.core.errors import DataError
from handgrad.data import (
    DATASETS,
    Dataset,
    Standardizer,
    batches,
    load_csv,
    load_dataset,
    load_features,
    split,
)

IRIS_LIKE = "a,b,species\n1.5,2,setosa\n3,4,virginica\n5,6,setosa\n7,8,versicolor\n"


def write(tmp_path, content, name="data.csv"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


@contextlib.contextmanager
def raises_data_error(*fragments):
    """Expect a DataError (also a ValueError) whose message holds every fragment."""
    with pytest.raises(DataError) as info:
        yield info
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


# Bundled data sets


@pytest.mark.parametrize(
    ("name", "shape", "class_names"),
    [
        ("breast_cancer", (569, 30), ("malignant", "benign")),
        ("digits", (1797, 64), tuple(str(d) for d in range(10))),
        ("iris", (150, 4), ("setosa", "versicolor", "virginica")),
        ("wine", (178, 13), ("class_0", "class_1", "class_2")),
    ],
)
def test_bundled_data_sets_match_scikit_learn(name, shape, class_names):
    ds = load_dataset(name)
    bunch = getattr(skdatasets, f"load_{name}")()
    assert ds.X.shape == shape
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.y.dtype == np.int64 and ds.y.shape == (shape[0],)
    np.testing.assert_array_equal(ds.X, bunch.data)
    np.testing.assert_array_equal(ds.y, bunch.target)
    assert set(ds.y.tolist()) == set(range(len(class_names)))
    assert ds.class_names == class_names
    assert ds.feature_names == tuple(bunch.feature_names) and len(ds.feature_names) == shape[1]
    assert (ds.target_name, ds.name) == ("target", name)


def test_datasets_lists_the_four_bundled_sets():
    assert DATASETS == ("breast_cancer", "digits", "iris", "wine")


def test_unknown_data_set_names_the_choices_and_the_csv_route():
    with raises_data_error("'mnist'", "'breast_cancer', 'digits', 'iris', 'wine'", "--data"):
        load_dataset("mnist")


def test_importing_the_module_does_not_import_scikit_learn():
    code = "import sys, handgrad.data; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'handgrad\[sklearn\]'"):
        load_dataset("iris")


# load_csv: reading


@pytest.mark.parametrize("target", ["species", 2, "2"])
def test_csv_with_header_and_string_labels(tmp_path, target):
    ds = load_csv(write(tmp_path, IRIS_LIKE), target)
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.X, [[1.5, 2], [3, 4], [5, 6], [7, 8]])
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(ds.y, [0, 2, 0, 1])
    assert ds.y.dtype == np.int64
    assert (ds.feature_names, ds.target_name, ds.name) == (("a", "b"), "species", "data.csv")


@pytest.mark.parametrize("target", [0, "0", "label"])
def test_target_in_the_first_column(tmp_path, target):
    ds = load_csv(write(tmp_path, "label,x,y\nb,1,2\na,3,4\n"), target)
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
    assert ds.feature_names == ("x", "y") and ds.target_name == "label"
    np.testing.assert_array_equal(ds.y, [1, 0])


@pytest.mark.parametrize(
    ("text", "target", "feature_names", "n_rows"),
    [
        ("x,y,t\n1,2,0\n3,4,1\n", "t", ("x", "y"), 2),
        ("x,2,t\n1,2,0\n3,4,1\n", 2, ("x", "2"), 2),  # one text cell makes a header
        ("1,2,0\n3,4,1\n", 2, ("0", "1"), 2),
        ("1,2,cat\n3,4,dog\n", 2, ("0", "1"), 2),  # text labels do not make a header
    ],
)
def test_header_is_detected_from_the_feature_cells(tmp_path, text, target, feature_names, n_rows):
    ds = load_csv(write(tmp_path, text), target)
    assert ds.feature_names == feature_names
    assert ds.X.shape == (n_rows, 2)


def test_a_missing_value_in_the_first_row_does_not_make_a_header(tmp_path):
    with raises_data_error("row 1,", "column '0'", "missing"):
        load_csv(write(tmp_path, "NA,2,0\n3,4,1\n"), 2)


def test_without_header_the_target_is_named_by_its_index(tmp_path):
    ds = load_csv(write(tmp_path, "1,0,2\n3,1,4\n5,0,6\n"), 1)
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6]])
    assert (ds.feature_names, ds.target_name, ds.class_names) == (("0", "2"), "1", ("0", "1"))


def test_a_digit_string_is_a_column_name_when_the_header_has_it(tmp_path):
    ds = load_csv(write(tmp_path, "x,y,0\n1,2,a\n3,4,b\n"), "0")
    assert ds.target_name == "0" and ds.feature_names == ("x", "y")
    assert ds.class_names == ("a", "b")


def test_a_digit_string_is_an_index_when_there_is_no_header(tmp_path):
    ds = load_csv(write(tmp_path, "5,0,7\n6,1,8\n"), "0")  # "0" also appears in column 1
    assert ds.target_name == "0" and ds.class_names == ("5", "6")
    np.testing.assert_array_equal(ds.X, [[0, 7], [1, 8]])


def test_numeric_labels_are_classes_as_written_sorted_by_value(tmp_path):
    text = "x,t\n1,10\n2,2\n3,2.0\n4,9\n5,0.5\n6,-1\n"
    ds = load_csv(write(tmp_path, text), "t")
    assert ds.class_names == ("-1", "0.5", "2", "2.0", "9", "10")
    np.testing.assert_array_equal(ds.y, [5, 2, 3, 4, 1, 0])


def test_numeric_labels_by_value_on_request(tmp_path):
    text = "x,t\n1,10\n2,2\n3,2.0\n4,9\n5,0.5\n6,-1\n7,02\n"
    ds = load_csv(write(tmp_path, text), "t", numeric_labels=True)
    assert ds.class_names == ("-1", "0.5", "2", "9", "10")
    np.testing.assert_array_equal(ds.y, [4, 2, 2, 3, 1, 0, 2])


def test_labels_that_are_not_all_numbers_sort_as_text(tmp_path):
    ds = load_csv(write(tmp_path, "x,t\n1,b\n2,10\n3,2\n4,b\n"), "t")
    assert ds.class_names == ("10", "2", "b")
    np.testing.assert_array_equal(ds.y, [2, 0, 1, 2])


def test_bom_crlf_blank_lines_and_spaces_are_accepted(tmp_path):
    raw = b"\xef\xbb\xbfa , b,t\r\n 1 ,2, yes\r\n\r\n3,4 ,no\r\n,,\r\n"
    ds = load_csv(write(tmp_path, raw), "t")
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
    assert ds.class_names == ("no", "yes")
    np.testing.assert_array_equal(ds.y, [1, 0])


def test_a_single_feature_column_is_enough(tmp_path):
    ds = load_csv(write(tmp_path, "x,t\n1,0\n2,1\n"), "t")
    assert ds.X.shape == (2, 1) and ds.feature_names == ("x",)


# load_csv: errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with raises_data_error(str(path), "no file"):
        load_csv(path, "t")


def test_directory(tmp_path):
    with raises_data_error(str(tmp_path), "is a directory"):
        load_csv(tmp_path, "t")


@pytest.mark.parametrize("text", ["", "\n\n", " , \n"])
def test_empty_file(tmp_path, text):
    with raises_data_error("data.csv", "is empty"):
        load_csv(write(tmp_path, text), 0)


@pytest.mark.parametrize("target", ["t", 1])
def test_header_only(tmp_path, target):
    with raises_data_error("data.csv", "header row but no data rows"):
        load_csv(write(tmp_path, "a,t\n"), target)


@pytest.mark.parametrize(("row", "cells"), [("3,4", 2), ("3,4,1,9", 4)])
def test_ragged_row(tmp_path, row, cells):
    text = f"a,b,t\n1,2,0\n{row}\n5,6,1\n"
    with raises_data_error("row 3 of", f"has {cells} cells, expected 3"):
        load_csv(write(tmp_path, text), "t")


def test_non_numeric_feature_value(tmp_path):
    text = "a,b,t\n1,2,0\n3,4,1\n5,abc,1\n"
    with raises_data_error("row 4", "column 'b'", "'abc'", "not a number", "data.csv"):
        load_csv(write(tmp_path, text), "t")


def test_row_numbers_count_blank_lines_as_a_spreadsheet_does(tmp_path):
    with raises_data_error("row 4,", "column 'a'", "'?'"):
        load_csv(write(tmp_path, "a,t\n1,0\n\n?,1\n"), "t")


@pytest.mark.parametrize("cell", ["", "NA", "nan", "NaN", "n/a"])
def test_missing_feature_value(tmp_path, cell):
    text = f"a,b,t\n1,2,0\n3,{cell},1\n"
    with raises_data_error("row 3", "column 'b'", "missing", "impute"):
        load_csv(write(tmp_path, text), "t")


@pytest.mark.parametrize("cell", ["inf", "-Infinity"])
def test_infinite_feature_value(tmp_path, cell):
    with raises_data_error("row 2", "column 'a'", repr(cell), "not finite"):
        load_csv(write(tmp_path, f"a,t\n{cell},0\n2,1\n"), "t")


def test_missing_label(tmp_path):
    with raises_data_error("row 3", "column 't'", "no label"):
        load_csv(write(tmp_path, "a,t\n1,0\n2,\n3,1\n"), "t")


def test_target_column_that_does_not_exist_lists_the_columns(tmp_path):
    with raises_data_error("no column 'label'", "'a', 'b', 'species'"):
        load_csv(write(tmp_path, IRIS_LIKE), "label")


def test_long_column_lists_are_cut_short(tmp_path):
    header = ",".join(f"f{i}" for i in range(30))
    with raises_data_error("'f19', ... (30 in all)"):
        load_csv(write(tmp_path, header + "\n" + ",".join(["1"] * 30) + "\n"), "label")


def test_target_name_without_a_header(tmp_path):
    with raises_data_error("no header row", "'label'", "0 to 2"):
        load_csv(write(tmp_path, "1,2,0\n3,4,1\n"), "label")


@pytest.mark.parametrize("target", [3, "7", -1])
def test_target_index_out_of_range(tmp_path, target):
    with raises_data_error("out of range", "3 columns", "0 to 2"):
        load_csv(write(tmp_path, "1,2,0\n3,4,1\n"), target)


@pytest.mark.parametrize("target", [True, 1.0, None])
def test_target_of_the_wrong_type(tmp_path, target):
    with pytest.raises(TypeError, match="target must be a column name or index"):
        load_csv(write(tmp_path, "1,2,0\n3,4,1\n"), target)


def test_only_one_class(tmp_path):
    with raises_data_error("column 't'", "one class only", "'x'"):
        load_csv(write(tmp_path, "a,t\n1,x\n2,x\n"), "t")


def test_no_feature_columns(tmp_path):
    with raises_data_error("only the target column"):
        load_csv(write(tmp_path, "t\n0\n1\n"), "t")


def test_duplicate_column_names(tmp_path):
    with raises_data_error("'a' appears twice"):
        load_csv(write(tmp_path, "a,a,t\n1,2,0\n3,4,1\n"), "t")


def test_bytes_that_are_not_utf8(tmp_path):
    with raises_data_error("line 2 of", "not UTF-8", "0xff at offset 8"):
        load_csv(write(tmp_path, b"a,b,t\n1,\xff,0\n"), "t")


def test_broken_quoting(tmp_path):
    with raises_data_error("not valid CSV"):
        load_csv(write(tmp_path, 'a,t\n"1"x,0\n', name="q.csv"), "t")


_CSV_TEXT = st.text(alphabet='01.-,"\n\r ab\x00\ufeffNA', max_size=120).map(str.encode)
_CELLS = st.sampled_from(["1", "0", "2.5", "-3e2", "x"])
_GRIDS = (  # rectangular grids of mostly good cells, so that some files load
    st.integers(1, 4)
    .flatmap(lambda w: st.lists(st.lists(_CELLS, min_size=w, max_size=w), min_size=1, max_size=8))
    .map(lambda rows: "\n".join(",".join(row) for row in rows).encode())
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(_GRIDS, _CSV_TEXT, st.binary(max_size=120)),
    target=st.sampled_from([0, 1, "1", "a"]),
)
def test_any_bytes_give_a_dataset_or_a_data_error(tmp_path, raw, target):
    path = write(tmp_path, raw, name="fuzz.csv")
    try:
        ds = load_csv(path, target)
    except DataError:
        return
    assert ds.X.shape[0] == ds.y.shape[0] >= 2
    assert ds.X.shape[1] == len(ds.feature_names) >= 1
    assert np.isfinite(ds.X).all() and set(ds.y.tolist()) == set(range(len(ds.class_names)))


# load_features


@pytest.mark.parametrize(
    "text",
    [
        "a,b,species\n1.5,2,setosa\n3,4,virginica\n",
        "species,extra,b,a\nsetosa,x,2,1.5\nvirginica,y,4,3\n",
        "1.5,2,setosa\n3,4,virginica\n",
    ],
)
def test_load_features_picks_the_columns_by_name_or_position(tmp_path, text):
    path = write(tmp_path, text)
    classes = ("setosa", "versicolor", "virginica")
    X, y = load_features(path, ("a", "b"), target="species", class_names=classes)
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 2])
    assert X.dtype == np.float64 and y.dtype == np.int64


def test_load_features_without_target(tmp_path):
    X, y = load_features(write(tmp_path, "b,a\n2,1\n4,3\n"), ["a", "b"])
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert y is None
    X, _ = load_features(write(tmp_path, "1,2\n3,4\n", name="n.csv"), ["0", "1"])
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])


@pytest.mark.parametrize("text", [IRIS_LIKE, "1,0,2\n3,1,4\n5,0,6\n", "x,t\n1,10\n2,2\n3,2.0\n"])
def test_load_features_reads_back_what_load_csv_trained_on(tmp_path, text):
    path = write(tmp_path, text)
    ds = load_csv(path, "species" if text == IRIS_LIKE else 1)
    X, y = load_features(path, ds.feature_names, target=ds.target_name, class_names=ds.class_names)
    np.testing.assert_array_equal(X, ds.X)
    np.testing.assert_array_equal(y, ds.y)


def test_labels_are_matched_as_written_or_by_value_on_request(tmp_path):
    path = write(tmp_path, "x,t\n1,1.0\n2,0\n3,2\n")
    with raises_data_error("row 2", "holds class '1.0', which the model does not know"):
        load_features(path, ["x"], target="t", class_names=("0", "1", "2"))
    _, y = load_features(path, ["x"], target="t", class_names=("0", "1", "2"), numeric_labels=True)
    np.testing.assert_array_equal(y, [1, 0, 2])


def test_load_features_missing_column(tmp_path):
    with raises_data_error("no column 'c'", "'a', 'b', 'species'"):
        load_features(write(tmp_path, IRIS_LIKE), ["a", "c"])


def test_load_features_missing_target_column(tmp_path):
    with raises_data_error("no column 'label'"):
        load_features(write(tmp_path, IRIS_LIKE), ["a", "b"], target="label", class_names=["x"])


@pytest.mark.parametrize(("text", "target"), [("1,2,3\n", None), ("1,2\n", "t")])
def test_load_features_without_header_needs_the_right_columns(tmp_path, text, target):
    classes = None if target is None else ("0", "1")
    needed = 2 + (target is not None)
    with raises_data_error(
        "no header row", f"{len(text.split(','))} columns", f"{needed} are needed"
    ):
        load_features(write(tmp_path, text), ["a", "b"], target=target, class_names=classes)


def test_load_features_unknown_label(tmp_path):
    with raises_data_error("row 5", "'versicolor'", "does not know", "'setosa', 'virginica'"):
        load_features(
            write(tmp_path, IRIS_LIKE),
            ["a", "b"],
            target="species",
            class_names=("setosa", "virginica"),
        )


def test_load_features_reports_bad_cells(tmp_path):
    with raises_data_error("row 3", "column 'a'", "missing"):
        load_features(write(tmp_path, "a,b\n1,2\nNA,4\n"), ["a", "b"])


def test_load_features_needs_class_names_with_a_target(tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        load_features(write(tmp_path, IRIS_LIKE), ["a", "b"], target="species")


# split


def _imbalanced(n_per_class=(10, 30, 60), features=3):
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    X = np.column_stack([np.arange(len(y), dtype=np.float64)] * features)  # row id in each column
    return X, y


@pytest.mark.parametrize(
    ("data", "test_size", "val_size"),
    [
        ("iris", 0.25, 0.1),
        ("breast_cancer", 0.2, 0.2),
        ("imbalanced", 0.3, 0.15),
        ("imbalanced", 0.25, 0.0),
    ],
)
def test_split_sizes_stratification_and_coverage(data, test_size, val_size):
    if data == "imbalanced":
        X, y = _imbalanced()
    else:
        ds = load_dataset(data)
        X, y = np.column_stack([np.arange(len(ds.y), dtype=np.float64), ds.X]), ds.y
    n = len(y)
    s = split(X, y, test_size=test_size, val_size=val_size, rng=0)
    n_test, n_val = math.ceil(test_size * n), math.ceil(val_size * n)
    assert (len(s.y_test), len(s.y_val), len(s.y_train)) == (n_test, n_val, n - n_test - n_val)
    overall = np.bincount(y) / n
    for Xp, yp in ((s.X_train, s.y_train), (s.X_val, s.y_val), (s.X_test, s.y_test)):
        assert Xp.shape == (len(yp), X.shape[1]) and Xp.dtype == X.dtype and yp.dtype == y.dtype
        counts = np.bincount(yp, minlength=len(overall))
        assert np.all(np.abs(counts - overall * len(yp)) <= 1)
        np.testing.assert_array_equal(y[Xp[:, 0].astype(int)], yp)  # rows keep their labels
    ids = np.concatenate([s.X_train[:, 0], s.X_val[:, 0], s.X_test[:, 0]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))


def test_same_seed_same_split_and_another_seed_another():
    X, y = _imbalanced()
    a, b, c = (split(X, y, rng=seed) for seed in (3, 3, 4))
    for field in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.X_test, c.X_test)


def test_no_validation_gives_empty_arrays_of_the_right_shape():
    X, y = _imbalanced(features=4)
    s = split(X, y, val_size=0, rng=1)
    assert s.X_val.shape == (0, 4) and s.X_val.dtype == np.float64
    assert s.y_val.shape == (0,) and s.y_val.dtype == y.dtype
    assert len(s.y_train) + len(s.y_test) == len(y)


@pytest.mark.parametrize(
    ("test_size", "val_size"), [(0, 0.1), (1, 0), (-0.1, 0), (0.5, 0.5), (0.25, -0.1), (0.9, 0.2)]
)
def test_split_refuses_bad_sizes(test_size, val_size):
    X, y = _imbalanced()
    with pytest.raises(ValueError, match=f"test_size={test_size!r} and val_size={val_size!r}"):
        split(X, y, test_size=test_size, val_size=val_size)


@pytest.mark.parametrize("val_size", [0.1, 0.0])
def test_split_names_a_class_of_one_row(val_size):
    X, y = _imbalanced((20, 1, 20))
    with raises_data_error("class 1 has only 1 row", "needs 2 of each class"):
        split(X, y, val_size=val_size)
    with raises_data_error("class 'b' has only 1 row"):
        split(X, y, val_size=val_size, class_names=["a", "b", "c"])


def test_a_test_part_too_small_for_the_classes_grows_and_says_so():
    X, y = _imbalanced((20, 20, 20))
    s = split(X, y, test_size=0.02, val_size=0)
    np.testing.assert_array_equal(np.bincount(s.y_test), [1, 1, 1])
    assert s.note == "the test part holds 3 rows, not 2, for a row of each class"


def test_split_checks_shapes():
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="shape"):
        split(X, y[:-1])


# Standardizer


def _features_with_a_constant_column(seed=0):
    X = np.random.default_rng(seed).normal(3.0, 2.5, size=(40, 5))
    X[:, 2] = 7.0
    return X


def test_standardiser_agrees_with_standard_scaler():
    X = _features_with_a_constant_column()
    other = np.random.default_rng(1).normal(size=(6, 5))
    st_ = Standardizer().fit(X)
    sk = StandardScaler().fit(X)
    np.testing.assert_allclose(st_.mean_, sk.mean_, rtol=1e-12)
    np.testing.assert_allclose(st_.scale_, sk.scale_, rtol=1e-12)
    assert st_.scale_[2] == 1.0
    np.testing.assert_allclose(st_.transform(other), sk.transform(other), rtol=1e-12)
    assert st_.mean_.dtype == st_.scale_.dtype == np.float64


def test_from_arrays_round_trip_needs_no_scikit_learn(monkeypatch):
    X = _features_with_a_constant_column()
    fitted = Standardizer().fit(X)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    rebuilt = Standardizer.from_arrays(list(fitted.mean_), fitted.scale_)
    np.testing.assert_array_equal(rebuilt.transform(X), fitted.transform(X))
    assert rebuilt.mean_ is not fitted.mean_  # a copy, not a view of the caller's array


@pytest.mark.parametrize(
    ("mean", "scale"),
    [
        ([0.0, 1.0], [1.0, 0.0]),
        ([0.0, 1.0], [1.0, -2.0]),
        ([0.0, 1.0], [1.0, np.nan]),
        ([np.inf, 1.0], [1.0, 1.0]),
        ([0.0, 1.0], [1.0]),
        ([[0.0, 1.0]], [[1.0, 1.0]]),
    ],
)
def test_from_arrays_refuses_bad_arrays(mean, scale):
    with pytest.raises(ValueError, match=r"mean .*scale"):
        Standardizer.from_arrays(mean, scale)


def test_transform_checks_the_feature_count_and_fitting():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(np.zeros((2, 3)))
    fitted = Standardizer().fit(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*fitted on 3 features"):
        fitted.transform(np.zeros((2, 4)))


def test_fit_refuses_non_finite_values():
    X = _features_with_a_constant_column()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        Standardizer().fit(X)


# batches


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (10, 10), (10, 1), (7, 20), (1, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_index_once(n, batch_size, shuffle):
    parts = list(batches(n, batch_size, np.random.default_rng(0), shuffle=shuffle))
    assert len(parts) == math.ceil(n / batch_size)
    assert [len(p) for p in parts[:-1]] == [batch_size] * (len(parts) - 1)
    assert len(parts[-1]) == n - batch_size * (len(parts) - 1)
    order = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(order, np.arange(n))


def test_batches_are_reproducible_and_fresh_each_epoch():
    def epoch(rng):
        return np.concatenate(list(batches(50, 8, rng)))

    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    first_a, first_b = epoch(rng_a), epoch(rng_b)
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(first_a, np.arange(50))
    assert not np.array_equal(epoch(rng_a), first_a)


@pytest.mark.parametrize(
    ("n", "batch_size", "rng", "error"),
    [
        (0, 4, np.random.default_rng(0), ValueError),
        (10, 0, np.random.default_rng(0), ValueError),
        (10, 2.0, np.random.default_rng(0), ValueError),
        (10, 4, np.random.RandomState(0), TypeError),
    ],
)
def test_batches_refuse_bad_arguments(n, batch_size, rng, error):
    with pytest.raises(error):
        batches(n, batch_size, rng)


# issue 15: headers, labels, missing values, separators


def test_a_header_of_numbers_is_a_header_when_it_names_the_target(tmp_path):
    ds = load_csv(write(tmp_path, "400,500,600\n1,2,a\n3,4,b\n"), "600")
    assert ds.feature_names == ("400", "500") and ds.target_name == "600"
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])


def test_load_features_takes_a_first_row_of_the_models_names_as_a_header(tmp_path):
    X, _ = load_features(write(tmp_path, "500,9,400\n1,2,3\n4,5,6\n"), ["400", "500"])
    np.testing.assert_array_equal(X, [[3, 1], [6, 4]])  # by name, in the model's order
    X, y = load_features(
        write(tmp_path, "7,500,400\nb,1,2\na,3,4\n", name="t.csv"),
        ["400", "500"],
        target="7",
        class_names=("a", "b"),
    )
    np.testing.assert_array_equal(X, [[2, 1], [4, 3]])
    np.testing.assert_array_equal(y, [1, 0])


def test_column_numbers_of_a_model_without_a_header_are_not_a_header(tmp_path):
    X, _ = load_features(write(tmp_path, "0,1\n5,6\n"), ["0", "1"])  # the names are positions
    np.testing.assert_array_equal(X, [[0, 1], [5, 6]])


def test_labels_that_differ_as_written_are_two_classes(tmp_path):
    big = 2**53  # float(big) == float(big + 1)
    text = f"x,t\n1,01\n2,1\n3,{big}\n4,{big + 1}\n5,1\n"
    ds = load_csv(write(tmp_path, text), "t")
    assert ds.class_names == ("01", "1", str(big), str(big + 1))
    np.testing.assert_array_equal(ds.y, [0, 1, 2, 3, 1])
    _, y = load_features(
        write(tmp_path, text, "e.csv"), ["x"], target="t", class_names=ds.class_names
    )
    np.testing.assert_array_equal(y, ds.y)


def test_na_is_a_label_unless_missing_says_otherwise(tmp_path):
    path = write(tmp_path, "x,t\n1,NA\n2,yes\n3,n/a\n")
    assert load_csv(path, "t").class_names == ("NA", "n/a", "yes")
    with raises_data_error("row 2, column 't'", "has no label ('NA')"):
        load_csv(path, "t", missing=["NA", "n/a"])
    with raises_data_error("row 3, column 'x'", "is missing ('?')"):
        load_csv(write(tmp_path, "x,t\n1,a\n?,b\n", "q.csv"), "t", missing=["?"])
    with raises_data_error("row 3, column 'x'", "holds 'NA', which is not a number"):
        load_csv(write(tmp_path, "x,t\n1,a\nNA,b\n", "n.csv"), "t", missing=["?"])


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_file_without_commas_is_read_with_the_separator_its_lines_agree_on(tmp_path, separator):
    text = "\n".join(
        separator.join(row) for row in [["a", "b", "t"], ["1.5", "2", "x"], ["3", "4", "y"]]
    )
    ds = load_csv(write(tmp_path, text), "t")
    assert ds.feature_names == ("a", "b") and ds.class_names == ("x", "y")
    np.testing.assert_array_equal(ds.X, [[1.5, 2], [3, 4]])


def test_a_separator_can_be_given_and_a_decimal_comma_is_named(tmp_path):
    path = write(tmp_path, "a;b;t\n1,5;2;x\n3;4,25;y\n")
    with raises_data_error("looks separated by ';', not by commas", "sep=';'"):
        load_csv(path, "t")
    with raises_data_error("row 2, column 'a'", "holds '1,5', which is not a number; write it 1.5"):
        load_csv(path, "t", sep=";")
    ds = load_csv(write(tmp_path, "a;b;t\n1.5;2;x\n3;4.25;y\n", "p.csv"), "t", sep=";")
    np.testing.assert_array_equal(ds.X, [[1.5, 2], [3, 4.25]])
    with pytest.raises(ValueError, match="sep must be one character"):
        load_csv(path, "t", sep=";;")


def test_a_file_too_large_for_memory_is_named_with_its_size(tmp_path, monkeypatch):
    path = write(tmp_path, "a,t\n" + "1,x\n" * 300)

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(type(path), "read_bytes", no_memory)
    with pytest.raises(
        MemoryError, match=r"reading .*data\.csv \(1.2 KiB\) needs more memory than is free"
    ):
        load_csv(path, "t")


def test_the_fingerprint_changes_with_any_value_or_name_and_only_then(tmp_path):
    base = "a,b,t\n1,2,x\n3,4,y\n"
    prints = {
        text: load_csv(write(tmp_path, text), "t").fingerprint()
        for text in (base, base.replace("4", "4.0"), base.replace("4", "5"), base.replace("y", "z"))
    }
    first, same, value, label = prints.values()
    assert first == same and len({first, value, label}) == 3


def test_a_split_of_two_rows_per_class_has_no_validation_part_and_says_so():
    s = split(np.arange(6.0)[:, None], np.array([0, 0, 1, 1, 2, 2]), rng=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (3, 0, 3)
    assert set(s.y_train) == set(s.y_test) == {0, 1, 2}
    assert "no validation part: every class has 2 rows" in s.note


def test_standardising_a_column_that_overflows_names_it():
    X = np.array([[1.0, 1e308], [2.0, 1e308], [3.0, 0.0]])
    with raises_data_error("feature 'b' holds values as large as 1e+308", "mean overflows"):
        Standardizer().fit(X, ["a", "b"])
