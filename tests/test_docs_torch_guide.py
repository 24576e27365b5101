"""The PyTorch checking guide prints what it shows: each report quoted after a snippet is
what the snippet prints (seeds fixed), and each slip is caught by the check it names."""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "torch-check.md"


@pytest.fixture
def guide_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_functions", None)


def test_the_torch_guide_prints_what_it_shows(guide_folder):
    pytest.importorskip("torch")
    from tests.test_docs import _blocks

    blocks = _blocks(PAGE)
    source = next(body for _, title, body in blocks if title == "my_functions.py")
    (guide_folder / "my_functions.py").write_text(source, encoding="utf-8")
    namespace: dict = {"__name__": "__docs__"}
    shown = []
    for (language, title, body), after in itertools.pairwise(blocks):
        if language != "python" or title or after[0] != "text":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, "torch-check.md", "exec"), namespace)
        assert out.getvalue() == after[2]
        shown.append(out.getvalue())
    assert len(shown) == 3
    assert shown[0].startswith("True\n") and shown[0].splitlines()[3].endswith("FAIL")
    assert shown[1].startswith("True\nbackward check failed for 'inputs[0]' with grad_output")
    assert shown[2].startswith("True\n") and "grad_outputs[0]" in shown[2]
