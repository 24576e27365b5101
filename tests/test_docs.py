"""The documentation: the site builds, every snippet on it runs, the quoted source lines are
still in the source, and the seed walkthrough runs as a script and as a notebook."""

import contextlib
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "seed_walkthrough.py"
NOTEBOOK = EXAMPLES / "seed_walkthrough.ipynb"

FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", flags=re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')
PAGES = sorted(p for p in DOCS.rglob("*.md") if "reference" not in p.parts)
# Commands on the site that the tests run elsewhere or that need what a test has not:
# the install, the walkthrough (test_walkthrough_script_runs), the picture's script
# (test_eps_figure_script_runs), a notebook server.
NOT_RUN_HERE = ("python -m pip install", "python examples/", "jupyter ", "python docs/")


def _blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """The fenced blocks of a page, in order: (language, title or None, body)."""
    blocks = []
    for language, options, body in FENCE.findall(page.read_text(encoding="utf-8")):
        title = TITLE.search(options)
        blocks.append((language, title[1] if title else None, body))
    return blocks


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


# Quoted source: every line of a block titled "src/..." is a line of that file.


QUOTES = [
    (page, title, body)
    for page in PAGES
    for language, title, body in _blocks(page)
    if title and title.startswith("src/")
]


def test_the_derivations_quote_the_source():
    quoting = {page.name for page, _, _ in QUOTES}
    for name in ("linear", "sigmoid", "tanh", "relu", "softmax", "log-softmax"):
        assert f"{name}.md" in quoting
    for name in ("conv", "max-pool", "avg-pool", "batch-norm", "layer-norm", "group-norm"):
        assert f"{name}.md" in quoting
    for name in ("dropout", "flatten", "leaky-relu", "elu", "gelu", "silu", "softplus"):
        assert f"{name}.md" in quoting
    for name in ("cross-entropy", "nll", "mse", "seed-network"):
        assert f"{name}.md" in quoting
    for name in ("embedding", "attention", "recurrent", "sequence-cross-entropy", "huber", "gpt"):
        assert f"{name}.md" in quoting


@pytest.mark.parametrize(
    ("page", "title", "body"), QUOTES, ids=[f"{_id(p)}:{t}" for p, t, _ in QUOTES]
)
def test_quoted_source_lines_are_in_the_source(page, title, body):
    source = {line.strip() for line in (ROOT / title).read_text(encoding="utf-8").splitlines()}
    for line in body.splitlines():
        if line.strip():
            assert line.strip() in source, f"{_id(page)} quotes a line not in {title}: {line!r}"


# Every Python snippet and every command on the site runs. A page's blocks run in order in a
# fresh folder, sharing one namespace; a Python block titled with a file name is that file.


def _run_command(line: str, cwd: Path) -> None:
    expected = 0
    status = re.search(r"#.*exits with status (\d+)", line)
    if status:
        expected = int(status[1])
    words = shlex.split(line, comments=True)
    if words[0] == "handgrad":
        from handgrad import cli

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main(words[1:])
        assert code == expected, f"{line!r} exited with {code}:\n{out.getvalue()}"
    elif words[:3] == ["python", "-m", "pytest"]:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[3:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == expected, done.stdout + done.stderr
    else:
        raise AssertionError(f"the tests do not know how to run {line!r}; add it to them")


RUNNABLE = [
    page
    for page in PAGES
    if any(
        language in ("python", "bash") and not (title or "").startswith("src/")
        for language, title, _ in _blocks(page)
    )
]


@pytest.fixture
def page_folder(tmp_path, monkeypatch):
    """A fresh working folder on sys.path; modules imported from it are forgotten after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(tmp_path) in str(getattr(module, "__file__", None) or ""):
            del sys.modules[name]


@pytest.mark.parametrize("page", RUNNABLE, ids=[_id(p) for p in RUNNABLE])
def test_the_pages_snippets_run(page, page_folder):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    if "import jax" in page.read_text(encoding="utf-8"):
        pytest.importorskip("jax")
    namespace: dict = {"__name__": "__docs__"}
    for language, title, body in _blocks(page):
        if title and title.startswith("src/"):
            continue
        if language == "python" and title:
            (page_folder / title).write_text(body, encoding="utf-8")
        elif language == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(body, f"{_id(page)} block", "exec"), namespace)
        elif language == "bash":
            for line in body.splitlines():
                if line.strip() and not line.startswith(NOT_RUN_HERE):
                    _run_command(line, page_folder)


def test_the_eps_guide_prints_what_it_shows(page_folder):
    pytest.importorskip("torch")
    blocks = _blocks(DOCS / "guides" / "eps.md")
    code = next(i for i, (language, _, _) in enumerate(blocks) if language == "python")
    assert blocks[code + 1][0] == "text"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[code][2], "eps.md", "exec"), {"__name__": "__docs__"})
    assert out.getvalue() == blocks[code + 1][2]


def test_the_own_layer_guide_prints_what_it_shows(page_folder):
    """The reports quoted after the two checks are what the checks print (rng is fixed)."""
    pytest.importorskip("torch")
    blocks = _blocks(DOCS / "guides" / "own-layer.md")
    layer_file = next(body for _, title, body in blocks if title == "my_layers.py")
    (page_folder / "my_layers.py").write_text(layer_file, encoding="utf-8")
    namespace: dict = {"__name__": "__docs__"}
    shown = 0
    for (language, title, body), after in itertools.pairwise(blocks):
        if language != "python" or title or after[0] != "text":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, "own-layer.md", "exec"), namespace)
        assert out.getvalue() == after[2]
        shown += 1
    assert shown == 2


def test_the_jax_guide_prints_what_it_shows(page_folder):
    """The reports quoted after the JAX checks are what they print (rng is fixed)."""
    pytest.importorskip("jax")
    namespace: dict = {"__name__": "__docs__"}
    shown = 0
    for (language, _, body), after in itertools.pairwise(_blocks(DOCS / "guides" / "check-jax.md")):
        if language != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, "check-jax.md", "exec"), namespace)
        if after[0] == "text":
            assert out.getvalue() == after[2]
            shown += 1
    assert shown == 2


def test_the_own_layer_guide_shows_the_failure_it_describes(tmp_path, monkeypatch):
    """The failure printed on the page is what the slipped layer gives."""
    page = DOCS / "guides" / "own-layer.md"
    layer_file = next(body for _, title, body in _blocks(page) if title == "my_layers.py")
    (tmp_path / "my_layers.py").write_text(layer_file, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import numpy as np

    import handgrad as hg

    my_layers = _load(tmp_path / "my_layers.py", "my_layers_for_test")
    x = np.random.default_rng(1).standard_normal((8, 10))
    with pytest.raises(hg.GradientCheckError) as caught:
        hg.check_layer(my_layers.ScaleShiftSlip(), x)
    message = str(caught.value)
    assert message.startswith("gradient check failed for 'gamma' (shape (10,)): 10 of 10")
    assert message.split(";")[0] in page.read_text(encoding="utf-8")
    failure = caught.value.failure
    assert failure.numeric / failure.analytic == pytest.approx(8)  # the batch, as it says


INTERNAL = re.compile(r"\bissue \d+|\bissue's|\bthis task\b|\bthe session\b", re.IGNORECASE)


@pytest.mark.parametrize(
    "page",
    [*PAGES, ROOT / "benchmarks" / "README.md"],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_reader_pages_speak_to_readers(page):
    """No project bookkeeping on a page a reader sees: no issue numbers, no "this task"."""
    found = INTERNAL.findall(page.read_text(encoding="utf-8"))
    assert not found, f"{page.name} says {found}"


def test_the_home_page_states_the_version_and_license():
    import handgrad

    home = (DOCS / "index.md").read_text(encoding="utf-8")
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f"**Version**: {handgrad.__version__}" in home
    assert f'version = "{handgrad.__version__}"' in project
    license_name = re.search(r'license = \{ text = "(\w+)" \}', project)[1]
    assert f"**License**: {license_name}." in home
    assert f"## {handgrad.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


VISIBLE = (
    "check_layer",
    "check_gradients",
    "numerical_gradient",
    "relative_difference",
    "compare_with_autograd",
    "mlp",
)


@pytest.mark.parametrize("name", VISIBLE)
def test_the_most_used_functions_document_every_parameter_and_the_return(name):
    import inspect

    import handgrad

    function = getattr(handgrad, name)
    doc = inspect.getdoc(function)
    entries = set()
    for line in re.findall(r"^(\w[\w, ]*) :", doc, flags=re.MULTILINE):
        entries |= set(line.split(", "))
    for parameter in inspect.signature(function).parameters:
        assert parameter in entries, f"{name}'s docstring has no entry for {parameter}"
    assert re.search(r"^Returns\n-------$", doc, flags=re.MULTILINE), name


# The seed walkthrough: the script runs, the notebook runs, and they hold the same cells.


def test_walkthrough_script_runs():
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "autograd equals 2x + 2: True",
        "central differences agree to 1e-8: True",
        "autograd equals (p - label) h^T: True",
        "dJ/dlogits = p - label: True",
        "Shapes are correct.",
        "same gradients: True",
        "Gradient check for parameter w_1 is passed.",
        "Gradient check for parameter w_2 is passed.",
        "right backward: True",
        "with the slip: gradient check failed for 'w_1' (shape (4, 4)): 16 of 16 elements off",
        "dw_1 matches autograd: True",
        "dw_2 matches autograd: True",
        "handgrad vs PyTorch autograd: agree",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    losses = re.search(r"loss over 10 steps: (.*)", out)[1].split()
    assert float(losses[-1]) < float(losses[0])  # the SGD steps descend
    for name in ("seed network test accuracy", "test accuracy"):
        accuracy = float(re.findall(rf"{name}: ([\d.]+)", out)[-1])
        assert accuracy > 0.93
    curves = Path(re.search(r"training curves: (\S+)", out)[1])
    assert curves.stat().st_size > 0
    shutil.rmtree(curves.parent)


def test_the_notebook_has_the_scripts_cells():
    make_notebook = _load(EXAMPLES / "make_notebook.py", "make_notebook")
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    cells = [(c["cell_type"], "".join(c["source"])) for c in notebook["cells"]]
    assert cells == make_notebook.cells(), "run python examples/make_notebook.py"
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert sum(bool(c["outputs"]) for c in code) >= len(code) // 2  # stored as run
    assert [kind for kind, _ in cells].count("markdown") >= 9
    if importlib.util.find_spec("nbformat") is not None:  # byte for byte, as written
        assert make_notebook.main(["--check"]) == 0, "run python examples/make_notebook.py"


def _shown(notebook) -> list:
    """What each code cell shows: its text outputs, and the kinds of its pictures.

    Consecutive writes to one stream are joined: how the kernel splits printed text into
    chunks depends on timing, what it prints does not."""
    shown = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for o in cell.outputs:
            if o.output_type == "stream" and outputs and outputs[-1][:2] == ("stream", o.name):
                outputs[-1] = ("stream", o.name, outputs[-1][2] + o.text, None, [])
                continue
            outputs.append(
                (
                    o.output_type,
                    o.get("name"),
                    o.get("text"),
                    o.get("data", {}).get("text/plain"),
                    sorted(o.get("data", {})),
                )
            )
        shown.append(outputs)
    return shown


def test_the_notebook_runs_and_shows_what_it_stores():
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    if importlib.util.find_spec("ipykernel") is None:
        pytest.skip("executing the notebook needs ipykernel (pip install ipykernel)")
    make_notebook = _load(EXAMPLES / "make_notebook.py", "make_notebook")
    ran = make_notebook.executed(make_notebook.notebook())  # raises if a cell fails
    outputs = [o for c in ran.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the curve is not shown"
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert _shown(ran) == _shown(stored), "run python examples/make_notebook.py"


# The picture on the eps page, and the site itself.


def test_eps_figure_script_runs(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    figure = _load(DOCS / "make_eps_figure.py", "make_eps_figure")
    monkeypatch.setattr(figure, "OUT", tmp_path / "eps_error.png")
    assert figure.main().stat().st_size > 10_000
    assert (DOCS / "images" / "eps_error.png").is_file()
    eps = figure.np.array([1e-9, 1e-6, 1e-2])
    central = figure.errors(eps, "central")
    assert central[1] < central[0] and central[1] < central[2]  # the V: low in the middle


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    pytest.importorskip("latex2mathml")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    page = (site / "derivations" / "seed-network" / "index.html").read_text(encoding="utf-8")
    # the LaTeX became MathML when the site was built: no script typesets it in the browser
    assert page.count("<math") > 10 and 'class="arithmatex"' not in page
    assert page.count('<math class="aligned"') == 2 and page.count("<mtable") == 2  # lined up
    eps = (site / "guides" / "eps" / "index.html").read_text(encoding="utf-8")
    assert eps.count('<mo stretchy="true">&#x23DF;</mo>') == 2  # \underbrace spans its term
    for html in site.rglob("*.html"):  # nothing is fetched from elsewhere
        text = html.read_text(encoding="utf-8")
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', text), html
    assert _broken_links(site) == []


def _broken_links(site: Path) -> list[str]:
    """Internal links of the built site whose file or anchor does not exist."""
    ids: dict[Path, set[str]] = {}

    def anchors(page: Path) -> set[str]:
        if page not in ids:
            text = page.read_text(encoding="utf-8")
            ids[page] = set(re.findall(r'\bid="([^"]+)"', text))
        return ids[page]

    broken, checked = [], 0
    for html in site.rglob("*.html"):
        if html.name == "404.html":  # served from any path: its links are from the root
            continue
        text = html.read_text(encoding="utf-8")
        for href in re.findall(r'<a [^>]*href="([^"]+)"', text):
            if re.match(r"[a-z]+:", href) or href.startswith("//"):
                continue  # another site, mail, data
            path, _, anchor = href.partition("#")
            target = (html.parent / path).resolve() if path else html
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{html.relative_to(site)}: {href}")
            elif anchor and target.suffix == ".html" and anchor not in anchors(target):
                broken.append(f"{html.relative_to(site)}: {href} (no such anchor)")
    assert checked > 1000  # the check saw the site's links
    return broken
    reference = (site / "reference" / "gradcheck.check" / "index.html").read_text(encoding="utf-8")
    assert "raise_on_failure" in reference and "Examples" in reference
    for download in ("seed_walkthrough.py", "seed_walkthrough.ipynb"):  # the walkthrough's
        assert (site / "downloads" / download).read_bytes() == (EXAMPLES / download).read_bytes()
    walkthrough = (site / "walkthrough" / "index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in walkthrough  # the stored outputs, the curve included
    # signatures are formatted over several lines (ruff in the docs extra), none too wide
    signature = re.search(
        r'check_layer</span><span class="p">\(</span>(.*?)</code>', reference, re.S
    )
    lines = re.sub(r"<[^>]+>", "", signature[1]).splitlines()
    assert len(lines) > 5 and max(map(len, lines)) <= 80
    styles = (site / "stylesheets" / "blocks.css").read_text(encoding="utf-8")
    assert "code[data-md-copying] .gp" in styles  # the copy button leaves out the prompts
    assert "STIX Two Math" in (site / "stylesheets" / "math.css").read_text(encoding="utf-8")
    # no entry that only echoes a parameter (alpha = alpha): the Parameters section has it
    perceptron = (site / "reference" / "app.perceptron" / "index.html").read_text(encoding="utf-8")
    assert "hidden_layer_sizes" in perceptron
    assert 'id="handgrad.app.perceptron.MultilayerPerceptron.alpha"' not in perceptron


def test_the_layout_check_finds_what_is_cut_off(tmp_path):
    """docs/check_layout.py (run by hand on the built site, with Chromium) reports a block
    that is wider than its box and does not scroll, and not one that scrolls."""
    import shutil

    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import check_layout
    finally:
        sys.path.pop(0)
    wide = "x" * 400
    page = tmp_path / "index.html"
    page.write_text(
        '<html><body><div class="md-content">'
        f'<pre style="overflow: visible; width: 200px">{wide}</pre>'
        f'<div style="overflow-x: auto; width: 200px"><pre>{wide}</pre></div>'
        "</div></body></html>",
        encoding="utf-8",
    )
    result = check_layout.check_page(check_layout._chromium(), page, 390, None)
    assert result["sideways"] is True
    assert len(result["cut"]) == 1 and result["cut"][0].startswith("pre: xxx")
