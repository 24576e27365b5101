import os
import sys

import numpy as np
import pytest

from handgrad.app.plots import plot_curves

Figure = pytest.importorskip("matplotlib.figure").Figure
imread = pytest.importorskip("matplotlib.image").imread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FULL = {
    "epoch": [1, 2, 3, 4, 5],
    "train_loss": [1.0, 0.7, 0.5, 0.4, 0.35],
    "val_loss": [1.1, 0.8, 0.6, 0.65, 0.7],
    "train_accuracy": [0.5, 0.6, 0.7, 0.8, 0.85],
    "val_accuracy": [0.45, 0.55, 0.65, 0.62, 0.6],
}


@pytest.fixture
def drawn(monkeypatch):
    """Record each figure as it is saved, so that tests can read what was drawn."""
    figures = []
    save = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return figures


def _legend_labels(figure):
    return [[t.get_text() for t in ax.get_legend().get_texts()] for ax in figure.axes]


def test_writes_a_wide_png_with_two_panels(tmp_path, drawn):
    path = tmp_path / "curves.png"
    assert plot_curves(FULL, str(path)) == path
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = imread(path)
    assert image.shape[:2] == (504, 1320)  # 4.2 x 11 inches at 120 dpi
    (figure,) = drawn
    assert [ax.get_title() for ax in figure.axes] == ["Loss per epoch", "Accuracy per epoch"]
    assert [ax.get_xlabel() for ax in figure.axes] == ["epoch", "epoch"]
    assert _legend_labels(figure) == [["train", "validation", "best epoch 3"]] * 2
    best_line = figure.axes[0].get_lines()[2]
    assert list(best_line.get_xdata()) == [3, 3]


def test_best_epoch_skips_nan_and_reads_the_epoch_column(tmp_path, drawn):
    history = {"epoch": [10, 20, 30], "val_loss": [0.5, float("nan"), 0.4]}
    plot_curves(history, tmp_path / "c.png")
    assert _legend_labels(drawn[0]) == [["validation", "best epoch 30"]]


def test_without_validation_or_accuracy(tmp_path, drawn):
    history = {"epoch": np.arange(1, 41), "train_loss": np.linspace(1, 0.1, 40), "val_loss": []}
    path = plot_curves(history, tmp_path / "c.png")
    image = imread(path)
    assert image.shape[:2] == (504, 660)  # one panel
    assert image.shape[1] > image.shape[0]
    assert _legend_labels(drawn[0]) == [["train"]]


def test_train_only_keeps_both_panels(tmp_path, drawn):
    history = {k: v for k, v in FULL.items() if not k.startswith("val_")}
    plot_curves(history, tmp_path / "c.png")
    assert _legend_labels(drawn[0]) == [["train"], ["train"]]


def test_replaces_an_existing_file(tmp_path):
    path = tmp_path / "c.png"
    path.write_bytes(b"old")
    plot_curves(FULL, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert os.listdir(tmp_path) == ["c.png"]


@pytest.mark.parametrize("existing", [b"old contents", None])
def test_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, existing):
    path = tmp_path / "c.png"
    if existing is not None:
        path.write_bytes(existing)

    def failing_savefig(self, f, **kwargs):
        f.write(PNG_SIGNATURE + b"half a picture")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_curves(FULL, path)
    if existing is None:
        assert os.listdir(tmp_path) == []
    else:
        assert path.read_bytes() == existing
        assert os.listdir(tmp_path) == ["c.png"]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({}, "history must be a non-empty mapping"),
        ([1, 2], "history must be a non-empty mapping"),
        ({"train_loss": [1.0]}, "history needs a non-empty 'epoch' list"),
        ({"epoch": [], "train_loss": []}, "history needs a non-empty 'epoch' list"),
        ({"epoch": [1, 2], "lr": [0.1, 0.1]}, "history has nothing to plot"),
        (
            {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.4], "val_accuracy": [0.5, 0.6]},
            r"history\['val_accuracy'\] has 2 values but history\['epoch'\] has 3",
        ),
    ],
)
def test_bad_history_is_refused_before_writing(tmp_path, history, message):
    with pytest.raises(ValueError, match=message):
        plot_curves(history, tmp_path / "c.png")
    assert os.listdir(tmp_path) == []


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist"):
        plot_curves(FULL, tmp_path / "nowhere" / "c.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'handgrad\[plots\]'"):
        plot_curves(FULL, tmp_path / "c.png")


def test_a_single_epoch_gets_a_whole_number_axis(tmp_path, drawn):
    plot_curves({"epoch": [1], "train_loss": [0.9], "val_loss": [1.0]}, tmp_path / "c.png")
    assert drawn[0].axes[0].get_xlim() == (0.0, 2.0)
