"""Write seed_walkthrough.ipynb from seed_walkthrough.py, so that the two never drift.

The script's cells start at ``# %%`` lines; a ``# %% [markdown]`` cell is a comment block
whose lines lose their leading ``# ``. Run from anywhere: python examples/make_notebook.py
runs the notebook and stores it with its outputs, so that a reader sees them unrun
(``--check`` exits with status 1, writing nothing, when the notebook's cells are out of
date). Outputs are stored without what changes from run to run: execution times and the
temporary folder's name.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "seed_walkthrough.py"
NOTEBOOK = HERE / "seed_walkthrough.ipynb"


def cells(script: Path = SCRIPT) -> list[tuple[str, str]]:
    """The script's cells as ``(kind, source)`` pairs, kind "code" or "markdown"."""
    found: list[tuple[str, list[str]]] = []
    for line in script.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            found.append(("markdown" if "[markdown]" in line else "code", []))
        elif not found:
            raise ValueError(f"{script} must start with a '# %%' cell marker, got {line!r}")
        elif found[-1][0] == "markdown":
            if line and not line.startswith("#"):
                raise ValueError(f"markdown cell line is not a comment: {line!r}")
            found[-1][1].append(line[2:] if line.startswith("# ") else line[1:])
        else:
            found[-1][1].append(line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in found]


def notebook(script: Path = SCRIPT) -> Any:
    """The notebook of the script's cells, without outputs, with stable cell ids."""
    import nbformat

    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
    )
    nb.cells = [
        make[kind](source, id=f"cell-{i}") for i, (kind, source) in enumerate(cells(script))
    ]
    return nb


TEMPORARY = re.compile(re.escape(tempfile.gettempdir()) + r"/[^/\s]+")


def stable(text: str) -> str:
    """An output's text without the temporary folder's random name."""
    return TEMPORARY.sub("<temporary folder>", text)


def executed(nb: Any) -> Any:
    """``nb`` run cell by cell in a fresh folder, its outputs made stable."""
    import nbclient

    with tempfile.TemporaryDirectory() as folder:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}}
        )
        client.execute()
    nb.metadata = notebook().metadata  # not the kernel's version details
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                output.text = stable(output.text)
    return nb


def without_outputs(nb: Any) -> Any:
    """A copy of ``nb`` with every code cell's outputs and count cleared."""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def main(argv: list[str]) -> int:
    import nbformat

    if "--check" in argv:
        stored = nbformat.read(NOTEBOOK, as_version=4) if NOTEBOOK.exists() else None
        current = stored is not None and nbformat.writes(without_outputs(stored)) == (
            nbformat.writes(notebook())
        )
        if not current:
            print(f"{NOTEBOOK} is out of date: run python examples/make_notebook.py")
            return 1
        return 0
    NOTEBOOK.write_text(nbformat.writes(executed(notebook())) + "\n", encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
