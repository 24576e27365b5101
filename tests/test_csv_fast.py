"""The vectorised CSV reader against the reference (cell-by-cell) reader: the same data set
or the same error on every file, and the fast path taken on the plain files it is for."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handgrad.core.errors import DataError
from handgrad.data import csv_faults, load_csv, load_features, loading
from handgrad.data.csv_fast import read_head


def outcome(read):
    """What ``read()`` gives: its result, or the type and message of its error."""
    try:
        return read()
    except (DataError, TypeError, ValueError) as err:
        return (type(err).__name__, str(err))


def reference(read):
    """``read()`` by the reference reader alone (no vectorised reader, no block search)."""
    with (
        mock.patch.object(loading, "_load_csv_fast", return_value=None),
        mock.patch.object(loading, "_load_features_fast", return_value=None),
    ):
        return outcome(read)


def without_reference(read):
    """``outcome(read)``, failing if the reference reader reads the whole file."""
    with mock.patch.object(loading, "read_table", side_effect=AssertionError("read_table")):
        return outcome(read)


def fast_answered(read):
    """``outcome(read)`` and whether the vectorised reader gave it."""
    answers = []

    def spying(reader):
        def spy(*args, **kwargs):
            answers.append(reader(*args, **kwargs))
            return answers[-1]

        return spy

    with (
        mock.patch.object(loading, "_load_csv_fast", spying(loading._load_csv_fast)),
        mock.patch.object(loading, "_load_features_fast", spying(loading._load_features_fast)),
    ):
        result = outcome(read)
    return result, any(a is not None for a in answers)


def assert_same(got, expected):
    """The same error, or the same arrays bit for bit and the same names."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(got, tuple) and isinstance(got[0], str):
        assert got == expected
    elif isinstance(got, tuple):  # load_features: X and y (or None)
        assert got[0].dtype == np.float64 and got[0].flags.c_contiguous
        assert got[0].shape == expected[0].shape and got[0].tobytes() == expected[0].tobytes()
        assert (got[1] is None) == (expected[1] is None)
        if got[1] is not None:
            np.testing.assert_array_equal(got[1], expected[1])
            assert got[1].dtype == np.int64
    else:
        assert got.X.dtype == np.float64 and got.X.flags.c_contiguous
        assert got.X.shape == expected.X.shape and got.X.tobytes() == expected.X.tobytes()
        assert got.y.dtype == np.int64
        np.testing.assert_array_equal(got.y, expected.y)
        assert got.feature_names == expected.feature_names
        assert got.class_names == expected.class_names
        assert got.target_name == expected.target_name
        assert got.fingerprint() == expected.fingerprint()


def write(tmp_path, content, name="data.csv"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# (file, target, whether the vectorised reader answers)
CASES = {
    "plain": ("a,b,t\n1.5,2,x\n3,-4e-3,y\n", "t", True),
    "quoted header": ('"a","b","t"\n1,2,x\n3,4,y\n', "t", True),
    "quoted cell": ('a,b,t\n"1",2,x\n3,4,y\n', "t", False),
    "quoted label": ('a,t\n1,"x"\n2,y\n', "t", False),
    "quoted separator": ('a,t\n1,"x,y"\n2,y\n', "t", False),
    "blank lines": ("\na,t\n\n1,x\n\n\n2,y\n\n", "t", True),
    "a line of spaces": ("a,t\n   \n1,x\n2,y\n", "t", False),
    "a line of separators": ("a,t\n,\n1,x\n2,y\n", "t", False),
    "trailing separators": ("a,t,\n1,x,\n2,y,\n", "t", False),
    "spaces around cells": ("a , t\n 1 , x\n2 ,y \n", "t", True),
    "labels that strip alike": ("a,t\n1, x\n2,x \n3,y\n", "t", True),
    "nan": ("a,t\nnan,x\n2,y\n", "t", False),
    "NaN": ("a,t\n1,x\nNaN,y\n", "t", False),
    "NA": ("a,t\nNA,x\n2,y\n", "t", False),
    "n/a": ("a,t\n1,x\nn/a,y\n", "t", False),
    "inf": ("a,t\n1,x\n-inf,y\n", "t", False),
    "Infinity": ("a,t\n1,x\nInfinity,y\n", "t", False),
    "overflow": ("a,t\n1,x\n1e400,y\n", "t", False),
    "empty cell": ("a,b,t\n1,,x\n2,3,y\n", "t", False),
    "empty label": ("a,t\n1,\n2,y\n", "t", False),
    "underscores": ("a,t\n1_000,x\n2,y\n", "t", False),
    "header of numbers naming the target": ("400,500,600\n1,2,a\n3,4,b\n", "600", True),
    "no header, index": ("1,0,2\n3,1,4\n5,0,6\n", 1, True),
    "no header, digits": ("5,0,7\n6,1,8\n", "0", True),
    "missing value in the first row": ("NA,2,0\n3,4,1\n", 2, False),
    "BOM": ("\ufeffa,t\n1,x\n2,y\n", "t", True),
    "BOM and CRLF": ("\ufeffa,t\r\n1,x\r\n\r\n2,y\r\n", "t", True),
    "CRLF": ("a,t\r\n1,x\r\n2,y\r\n", "t", True),
    "CR": ("a,t\r1,x\r2,y\r", "t", True),
    "integer labels": ("a,t\n1,1\n2,01\n3,2\n4,10\n", "t", True),
    "float labels": ("a,t\n1,1.0\n2,1\n3,2.5\n4,1e0\n", "t", True),
    "labels longer than the field": ("a,t\n1,x\n2,a-label-longer-than-eight-bytes\n", "t", True),
    "Latin-1 label": ("a,t\n1,café\n2,thé\n", "t", True),
    "Cyrillic label": ("a,t\n1,ж\n2,y\n", "t", False),
    "NUL in a label": ("a,t\n1,x\x00\n2,y\n", "t", False),
    "semicolons": ("a;b;t\n1.5;2;x\n3;4;y\n", "t", True),
    "tabs": ("a\tb\tt\n1.5\t2\tx\n3\t4\ty\n", "t", True),
    "decimal commas": ("a;b;t\n1,5;2;x\n3;4,25;y\n", "t", False),
    "ragged row": ("a,b,t\n1,2,x\n3,y\n", "t", False),
    "one class": ("a,t\n1,x\n2,x\n", "t", False),
    "a comment sign": ("a,t\n1,#x\n2,y\n", "t", True),
    "target absent": ("a,b,t\n1,2,x\n3,4,y\n", "label", False),
    "header only": ("a,t\n", "t", False),
}


@pytest.mark.parametrize("case", CASES)
def test_the_same_data_set_or_error_as_the_reference_reader(tmp_path, case):
    text, target, fast = CASES[case]
    path = write(tmp_path, text)
    got, answered = fast_answered(lambda: load_csv(path, target))
    assert_same(got, reference(lambda: load_csv(path, target)))
    assert answered == fast


FAULTS = [
    "nan",
    "NaN",
    "NA",
    "n/a",
    "inf",
    "Infinity",
    "overflow",
    "empty cell",
    "empty label",
    "ragged row",
    "trailing separators",
    "missing value in the first row",
]


@pytest.mark.parametrize("case", FAULTS)
def test_a_fault_is_found_block_by_block_as_the_reference_reader_reports_it(tmp_path, case):
    text, target, _ = CASES[case]
    path = write(tmp_path, text)
    got = without_reference(lambda: load_csv(path, target))
    assert isinstance(got, tuple) and got == reference(lambda: load_csv(path, target))


def test_a_later_ragged_row_outranks_an_earlier_bad_cell_and_a_missing_label(tmp_path):
    rows = "".join(f"{i},{i % 3}\n" for i in range(20_000))
    path = write(tmp_path, "a,t\n1,\nNA,2\n" + rows + "5,6,7\n")
    with mock.patch.object(csv_faults, "_BLOCK_BYTES", 4096):  # about 50 blocks
        got = without_reference(lambda: load_csv(path, "t"))
    assert got == reference(lambda: load_csv(path, "t"))
    assert got[1].startswith("row 20004 of ")


@pytest.mark.parametrize(("numeric", "missing"), [(True, None), (False, ["?"]), (False, ["-1"])])
def test_numeric_labels_and_missing_values_as_the_reference_reader(tmp_path, numeric, missing):
    path = write(tmp_path, "a,t\n1,1\n-1,1.0\n3,2\n")
    read = lambda: load_csv(path, "t", numeric_labels=numeric, missing=missing)  # noqa: E731
    got, answered = fast_answered(read)
    assert_same(got, reference(read))
    assert answered == (missing != ["-1"])  # a missing value that is a number: reference


def test_a_compressed_name_is_read_as_plain_text(tmp_path):
    path = write(tmp_path, "a,t\n1,x\n2,y\n", name="data.csv.gz")  # numpy would gunzip it
    got, answered = fast_answered(lambda: load_csv(path, "t"))
    assert answered and got.X.tolist() == [[1.0], [2.0]]


def test_a_bad_cell_on_the_last_row_of_a_big_file_is_named(tmp_path):
    rows = np.random.default_rng(0).standard_normal((30_000, 4))
    text = "a,b,c,d,t\n" + "".join(",".join(map(repr, r)) + ",x\n" for r in rows.tolist())
    path = write(tmp_path, text + "1,2,3,oops,y\n")
    got = without_reference(lambda: load_csv(path, "t"))  # found block by block
    assert got == (
        "DataError",
        f"row 30002, column 'd' of {path} holds 'oops', which is not a "
        "number; fix or remove that value",
    )
    good = write(tmp_path, text + "1,2,3,4,y\n", name="good.csv")
    data, answered = fast_answered(lambda: load_csv(good, "t"))
    assert answered and data.X.shape == (30_001, 4) and data.X[:-1].tobytes() == rows.tobytes()


def test_a_long_label_after_the_head_widens_the_field(tmp_path):
    text = "a,t\n" + "1,x\n2,y\n" * 60 + "3," + "z" * 40 + "\n"
    path = write(tmp_path, text)
    data, answered = fast_answered(lambda: load_csv(path, "t"))
    assert answered and data.class_names == ("x", "y", "z" * 40)
    assert_same(data, reference(lambda: load_csv(path, "t")))


def test_a_label_too_long_for_any_field_goes_to_the_reference_reader(tmp_path):
    path = write(tmp_path, "a,t\n1,x\n2," + "y" * 100 + "\n")
    got, answered = fast_answered(lambda: load_csv(path, "t"))
    assert not answered and got.class_names == ("x", "y" * 100)


def test_a_file_without_commas_beyond_its_head_is_read_with_its_own_separator(tmp_path):
    head = "a;b;t\n" + "1;2;x\n3;4;y\n" * 40_000  # more than the head the reader decodes
    for tail, comma in (("5;6;x\n", False), ("5;6;x,y\n", True)):
        path = write(tmp_path, head + tail, name=f"{comma}.csv")
        got, _ = fast_answered(lambda path=path: load_csv(path, "t"))
        assert_same(got, reference(lambda path=path: load_csv(path, "t")))
        assert isinstance(got, tuple) == comma  # a comma anywhere: read with commas, an error


@pytest.mark.parametrize(
    ("text", "features", "target", "classes", "fast"),
    [
        ("b,kind,id,a\n2,x,p,1\n4,y,q,3\n", ["a", "b"], "kind", ["x", "y"], True),
        ("b,kind,id,a\n2,x,p,1\n4,y,q,3\n", ["a", "b"], None, None, True),
        ("5,6,x\n3,4,y\n", ["0", "1"], "2", ["x", "y"], True),
        ("b,kind,a\n2,x,1\n4,z,3\n", ["a", "b"], "kind", ["x", "y"], False),
        ("b,kind,a\n2,x,1\n4,y\n", ["a", "b"], "kind", ["x", "y"], False),
        ("b,kind,a\n2, y,1\n4,01,3\n", ["a", "b"], "kind", ["y", "1"], False),
        ("a,b\n0,1\n1,2\n", ["a", "b"], "0", ["0", "1"], False),  # column 0: feature and label
        ("a,t\n1,x\n2,z\n" * 3, ["a"], "t", ["x", "y"], False),  # the header again: a bad cell
    ],
)
def test_load_features_as_the_reference_reader(tmp_path, text, features, target, classes, fast):
    path = write(tmp_path, text)
    read = lambda: load_features(path, features, target=target, class_names=classes)  # noqa: E731
    got, answered = fast_answered(read)
    assert_same(got, reference(read))
    assert answered == fast


def test_read_head_matches_the_first_row_and_counts_its_lines(tmp_path):
    path = write(tmp_path, '\r\n\n"a\nb",c\n1,2\n')
    head = read_head(path, None)
    assert head.first == ["a\nb", "c"] and head.lines == 4 and head.separator == ","


# Files drawn at random, read by both readers

CELLS = [
    "1",
    "-0",
    "2.5",
    " 3 ",
    "1e3",
    "1e400",
    "1_0",
    "nan",
    "NaN",
    "inf",
    "NA",
    "n/a",
    "",
    "x",
    '"1"',
    '"a,b"',
    "1,5",
    "\t7",
    "é",
    "ж",
    "01",
    "1.0",
    "a-long-label-here",
    "#",
]
LABELS = ["a", "b", " a", "1", "01", "1.0", "2", "", "NA", "é", "a-long-label-here"]


@st.composite
def files(draw):
    width = draw(st.integers(2, 4))
    target = draw(st.integers(0, width - 1))
    plain = st.sampled_from(["0", "1.5", "-2e-3", "7"])
    feature = st.one_of(plain, plain, plain, st.sampled_from(CELLS))
    rows = draw(
        st.lists(
            st.lists(feature, min_size=width, max_size=width).flatmap(
                lambda row: st.sampled_from(LABELS).map(
                    lambda label: [*row[:target], label, *row[target + 1 :]]
                )
            ),
            min_size=1,
            max_size=8,
        )
    )
    if draw(st.booleans()):
        rows.insert(0, [f"c{i}" for i in range(width)])
    separator = draw(st.sampled_from([",", ",", ";", "\t", " "]))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [separator.join(row) for row in rows]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", ","])))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    bom = "\ufeff" if draw(st.booleans()) else ""
    names = draw(st.sampled_from([target, str(target), f"c{target}"]))
    return bom + text, names, separator


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=files(),
    numeric=st.booleans(),
    missing=st.sampled_from([None, ["?"], ["x"]]),
    block=st.sampled_from([2**18, 8, 20]),  # bytes a block of the fault search holds
)
def test_random_files_read_as_the_reference_reader_reads_them(
    tmp_path, case, numeric, missing, block
):
    with mock.patch.object(csv_faults, "_BLOCK_BYTES", block):
        _same_as_the_reference_reader(tmp_path, case, numeric, missing)


def _same_as_the_reference_reader(tmp_path, case, numeric, missing):
    text, target, separator = case
    path = write(tmp_path, text, name="random.csv")
    sep = None if separator == "," else separator
    read = lambda: load_csv(path, target, sep=sep, missing=missing, numeric_labels=numeric)  # noqa: E731
    assert_same(outcome(read), reference(read))
    data = outcome(read)
    if not isinstance(data, tuple):
        classes = data.class_names
        read = lambda: load_features(  # noqa: E731
            path,
            data.feature_names,
            target=data.target_name,
            class_names=classes,
            sep=sep,
            missing=missing,
            numeric_labels=numeric,
        )
        assert_same(outcome(read), reference(read))
