"""MkDocs hook: pages take text from files outside docs/ through marker lines (paths from
the repository root).

``<!-- include benchmarks/README.md -->`` puts in a Markdown file. Its first-level heading
is dropped, since the page has its own, and its links into docs/ (``../docs/page.md``)
become links between pages; any other relative link would break on the site, so it fails
a strict build.

``<!-- cells examples/seed_walkthrough.py -->`` puts in a script of ``# %%`` cells, as
``examples/make_notebook.py`` reads them: Markdown cells as text, code cells as Python
blocks, each followed by what it shows in the stored notebook (the ``.ipynb`` beside the
script, stored as run) where that cell is the script's. The page and the notebook are made
from the same script, so neither drifts.

The walkthrough's script and notebook are copied into the site under ``downloads/``.

Math is written in LaTeX (``$...$``, ``$$...$$``); pymdownx.arithmatex keeps it as text and
this hook turns it into MathML with latex2mathml when the site is built, which browsers
show without any script: the site needs nothing from outside.

The docstrings use Sphinx's roles (``:class:`~handgrad.Sequential```), which
Markdown shows as text; the reference pages turn them into links where the target is
documented (autorefs resolves them), and into code where it is not."""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import posixpath
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.include")

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")
MARKER = re.compile(r"^<!-- (include|cells) (\S+) -->$", flags=re.MULTILINE)
LINK = re.compile(r"\]\((?!https?://|#)([^)\s]+)\)")


def _included(root: Path, relative: str, page: str) -> str:
    text = (root / relative).read_text(encoding="utf-8")
    text = re.sub(r"\A# [^\n]*\n+", "", text)

    def relink(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(relative), match[1]))
        if target.startswith("docs/"):
            start = posixpath.dirname(page) or "."
            return f"]({posixpath.relpath(target.removeprefix('docs/'), start)})"
        log.warning("%s, included in %s, links to %s, not on the site", relative, page, target)
        return match[0]

    return LINK.sub(relink, text)


def _outputs(cell: dict) -> list[str]:
    """A stored code cell's outputs as the page shows them: text as a text block, a
    picture inline (a data URI: nothing is fetched)."""
    shown = []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if output.get("output_type") == "stream":
            text = "".join(output["text"]).rstrip("\n")
            shown.append(f"```text\n{text}\n```")
        elif "image/png" in data:
            png = "".join(data["image/png"]).replace("\n", "")
            shown.append(f'<p><img alt="output" src="data:image/png;base64,{png}"></p>')
        elif "text/plain" in data:
            shown.append(f"```text\n{''.join(data['text/plain'])}\n```")
    return shown


def _cells(root: Path, relative: str) -> str:
    spec = importlib.util.spec_from_file_location(
        "make_notebook", root / "examples/make_notebook.py"
    )
    make_notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_notebook)
    stored = root / Path(relative).with_suffix(".ipynb")
    notebook = json.loads(stored.read_text(encoding="utf-8"))["cells"] if stored.exists() else []
    parts = []
    for i, (kind, source) in enumerate(make_notebook.cells(root / relative)):
        parts.append(source if kind == "markdown" else f"```python\n{source}\n```")
        if i < len(notebook) and "".join(notebook[i]["source"]) == source:
            parts += _outputs(notebook[i])
    return "\n\n".join(parts)


# Files outside docs/ that the site offers for download, under downloads/.
DOWNLOADS = ("examples/seed_walkthrough.py", "examples/seed_walkthrough.ipynb")


def on_files(files, config):
    from mkdocs.structure.files import File, InclusionLevel

    root = Path(config["config_file_path"]).parent
    for relative in DOWNLOADS:
        source = root / relative
        files.append(
            File.generated(
                config,
                f"downloads/{source.name}",
                abs_src_path=str(source),
                inclusion=InclusionLevel.INCLUDED,  # a .py here is not one of docs/*.py
            )
        )
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = Path(config["config_file_path"]).parent

    def expand(match: re.Match) -> str:
        if match[1] == "include":
            return _included(root, match[2], page.file.src_uri)
        return _cells(root, match[2])

    return MARKER.sub(expand, markdown)


MATH = re.compile(r'<(span|div) class="arithmatex">\\[(\[](.*?)\\[)\]]</\1>', flags=re.DOTALL)


ALIGNED = re.compile(r"\\begin\{aligned\}(.*?)\\end\{aligned\}", flags=re.DOTALL)


def _table(latex: str) -> str:
    """An ``aligned`` block as an ``array`` (latex2mathml has no ``aligned``): its columns
    right, left, right, left, ... as ``aligned`` sets them, so that the rows line up at
    their ``=``; a wide space before each further pair of columns."""
    body = ALIGNED.search(latex)[1]
    rows = []
    for row in re.split(r"\\\\(?:\[[^\]]*\])?", body):
        if row.strip():
            cells = row.strip().split("&")
            rows.append(
                " & ".join(
                    (r"\qquad " if k and k % 2 == 0 else "") + cell for k, cell in enumerate(cells)
                )
            )
    columns = max(row.count("&") for row in rows) + 1
    spec = ("rl" * columns)[:columns]
    return rf"\begin{{array}}{{{spec}}} " + r" \\ ".join(rows) + r" \end{array}"


# Braces under and over a term (\underbrace, \overbrace) stretch across it: said outright,
# for browsers whose operator dictionary would leave them a single glyph.
BRACE = re.compile(r"<mo>(&#x23D[EF];)</mo>")


def _mathml(match: re.Match) -> str:
    return BRACE.sub(r'<mo stretchy="true">\1</mo>', _converted(match))


def _converted(match: re.Match) -> str:
    from latex2mathml.converter import convert

    latex = html.unescape(match[2]).strip()
    if match[1] == "div" and ALIGNED.search(latex):
        return convert(_table(latex), display="block").replace(
            "<math ", '<math class="aligned" ', 1
        )
    return convert(latex, display="block" if match[1] == "div" else "inline")


def on_page_content(html_text: str, page, config, files) -> str:
    html_text = MATH.sub(_mathml, html_text)
    module = page.file.src_uri.removeprefix("reference/").removesuffix(".md")

    def link(match: re.Match) -> str:
        target = match[2]
        if "." not in target and page.file.src_uri.startswith("reference/"):
            target = f"handgrad.{module}.{target}"
        shown = (match[2].rsplit(".", 1)[-1] if match[1] else match[2]) + (match[3] or "")
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'

    return ROLE.sub(link, html_text)
