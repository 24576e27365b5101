"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    pytest.importorskip("torch")
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip()
    if "class Square" in BLOCKS[index]:
        assert "gradient check failed for 'x'" in out
    elif "cross_val_score" in BLOCKS[index]:
        assert float(out) > 0.9
    else:
        assert "(20, 30)" in out and "4 of 4 checks passed" in out and "agree" in out
