"""``handgrad gpt train`` and ``handgrad gpt sample`` on tiny settings (seconds): the files
it writes, the baseline it prints, sampling, Ctrl-C and an exact resume, and refusals."""

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from handgrad.app.language_model import load_gpt_run
from handgrad.cli.main import main

TINY = [
    "--steps", "6", "--batch-size", "4", "--block-size", "8", "--n-layer", "1",
    "--n-head", "2", "--n-embd", "8", "--warmup", "1", "--eval-every", "3",
    "--sample-chars", "30", "--quiet",
]  # fmt: skip


@pytest.fixture
def text_file(tmp_path):
    lines = [f"def f{i}(x):\n    return x * {i}\n\n" for i in range(40)]
    path = tmp_path / "code.py"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_train_writes_the_run_the_curve_and_a_sample(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["gpt", "train", "--text", str(text_file), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "unigram baseline (validation):" in printed
    assert "validation loss" in printed and "sample (temperature 0.8)" in printed
    assert {p.name for p in out.iterdir()} == {"gpt.npz", "loss.png", "sample.txt"}
    assert (out / "loss.png").read_bytes()[1:4] == b"PNG"
    sample = (out / "sample.txt").read_text(encoding="utf-8")
    assert len(sample) == 31 and set(sample) <= set(text_file.read_text(encoding="utf-8"))
    loaded = load_gpt_run(out / "gpt.npz")
    assert loaded.run.step == 6 and loaded.run.val_steps == [3, 6]
    assert len(loaded.run.train_loss) == 6

    assert main(["gpt", "sample", "--model", str(out / "gpt.npz"), "--chars", "25"]) == 0
    assert len(capsys.readouterr().out) == 1 + 25 + 1  # the start, the sample, a newline


def test_the_default_corpus_is_pythons_own_source(tmp_path, capsys):
    args = ["gpt", "train", "--max-chars", "3000", "--out", str(tmp_path), *TINY]
    assert main(args) == 0
    assert "text: Python's standard library" in capsys.readouterr().out


def test_ctrl_c_saves_the_run_and_resume_ends_where_an_unbroken_run_does(
    text_file, tmp_path, monkeypatch, capsys
):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(["gpt", "train", "--text", str(text_file), "--out", str(whole), *TINY]) == 0

    import handgrad.app.language_model as language_model

    clip, calls = language_model.clip_grad_norm, []

    def interrupted(*args, **kwargs):  # Ctrl-C during the third step
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return clip(*args, **kwargs)

    monkeypatch.setattr(language_model, "clip_grad_norm", interrupted)
    assert main(["gpt", "train", "--text", str(text_file), "--out", str(broken), *TINY]) == 130
    assert "interrupted after step 3" in capsys.readouterr().err
    assert load_gpt_run(broken / "gpt.npz").run.step == 3
    monkeypatch.setattr(language_model, "clip_grad_norm", clip)
    assert main(["gpt", "train", "--resume", str(broken), "--quiet"]) == 0
    a, b = load_gpt_run(whole / "gpt.npz").run, load_gpt_run(broken / "gpt.npz").run
    assert a.train_loss == b.train_loss and a.val_loss == b.val_loss
    for name, p in a.model.params.items():
        assert np.array_equal(p, b.model.params[name]), name


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["gpt", "train", "--text", "nope.txt"], "no text file at 'nope.txt'"),
        (["gpt", "sample", "--model", "nope.npz"], "GPT run 'nope.npz' does not exist"),
        (["gpt", "train", "--n-embd", "10", "--n-head", "4"], "must be a multiple of n_head"),
        (["gpt", "train", "--steps", "5", "--warmup", "5"], r"warmup \(5\) must be shorter"),
    ],
)
def test_bad_input_exits_with_status_2_and_one_line(args, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("handgrad gpt ")
    assert re.search(match, err[0]), err[0]


def test_the_refused_option_names_its_rule(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["gpt", "train", "--lr", "0"])
    assert exited.value.code == 2
    assert "must be a finite number greater than 0" in capsys.readouterr().err


def test_a_text_too_short_for_the_context_is_refused(tmp_path, capsys):
    path = Path(tmp_path / "short.txt")
    path.write_text("x" * 120, encoding="utf-8")
    args = ["gpt", "train", "--text", str(path), "--out", str(tmp_path / "o"), *TINY]
    args[args.index("--block-size") + 1] = "20"
    assert main(args) == 2
    assert "too few for windows of 20" in capsys.readouterr().err


def test_the_progress_bar_counts_steps_and_prints_evaluations(capsys):
    from handgrad.cli.gpt import _Progress

    class Run:
        step, train_loss, val_loss = 3, [2.0, 1.0], [1.25]

    bar = _Progress(10, 2, enabled=True)
    bar.step(Run, 1.0)
    bar.evaluation(Run)
    bar.close()
    bar.close()  # twice is harmless
    err = capsys.readouterr().err
    assert "3/10" in err and "loss=1.000" in err
    assert "step 3: train loss 1.5000 (last 20 steps), validation loss 1.2500" in err
