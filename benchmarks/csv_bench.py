"""Reading a CSV file: handgrad's load_csv against numpy.loadtxt, pandas.read_csv (when
installed) and handgrad's reference reader (the cell-by-cell one that the vectorised reader
falls back to), in one run. The reference reader needs 17x the data's memory, so it reads
the first 50,000 rows only and its figures are scaled to the whole file.

The file is generated in a temporary folder: a header, then rows of 19 float64 features
(written with repr, 17 significant digits) and an integer class label, 20 columns in all.
numpy.loadtxt reads all 20 columns as float64; load_csv reads the features and the labels
(as text, compared as written). Timing: CPU time of this process (every reader is single-
threaded; the file is in the page cache), best of interleaved rounds (every reader once per
round, in turn). Peak memory, two ways: tracemalloc's peak during the read (NumPy's arrays
and Python's objects, not pandas' C++ buffers), and the rise of the peak resident set size
of a fresh subprocess that does nothing but import and read (Linux: VmHWM, reset before).
Printed: seconds, MB and the ratios to numpy.loadtxt; last, load_csv on the same file with
a bad cell on its last row (the error, found block by block). Target: load_csv at
most 1.2x loadtxt's time and 1.5x its peak memory on 400,000 rows.

Run: python benchmarks/csv_bench.py [--rows N] [--rounds R] [--quick]   (about two minutes;
--quick: 50,000 rows)
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np

from handgrad.core.errors import DataError
from handgrad.data import load_csv, loading

FEATURES = 19
REFERENCE = "handgrad reference reader"
REFERENCE_ROWS = 50_000  # the reference reader reads this many rows; its figures are scaled

READERS = {
    "numpy.loadtxt": "np.loadtxt(PATH, delimiter=',', skiprows=1)",
    "handgrad load_csv": "load_csv(PATH, 'label')",
    "pandas.read_csv": "pd.read_csv(PATH)",
    "pandas.read_csv (round_trip)": "pd.read_csv(PATH, float_precision='round_trip')",
    "handgrad reference reader": "reference(PATH, 'label')",
}
FAULT = "raises(lambda: load_csv(PATH, 'label'))"
PRELUDE = """
import numpy as np
from unittest import mock
from handgrad.core.errors import DataError
from handgrad.data import load_csv, loading
try:
    import pandas as pd
except ImportError:
    pass

def reference(path, target):
    with mock.patch.object(loading, "_load_csv_fast", return_value=None):
        return load_csv(path, target)
"""


def reference(path, target):
    """load_csv with the vectorised reader switched off: the cell-by-cell reader."""
    with mock.patch.object(loading, "_load_csv_fast", return_value=None):
        return load_csv(path, target)


def write_file(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    header = ",".join([f"x{i}" for i in range(FEATURES)] + ["label"])
    with open(path, "w") as file:
        file.write(header + "\n")
        for start in range(0, rows, 50_000):
            X = rng.standard_normal((min(50_000, rows - start), FEATURES))
            y = rng.integers(0, 3, len(X))
            lines = (
                ",".join(map(repr, r)) + f",{c}"
                for r, c in zip(X.tolist(), y.tolist(), strict=True)
            )
            file.write("\n".join(lines) + "\n")


def raises(read) -> str:
    """The message of the DataError that ``read()`` raises."""
    try:
        read()
    except DataError as err:
        return str(err)
    raise AssertionError("the bad cell was not found")


def timed(code: str, path: Path) -> tuple[float, float]:
    """CPU seconds and tracemalloc's peak (bytes) of one read in this process."""
    scope = {"np": np, "load_csv": load_csv, "reference": reference, "raises": raises}
    scope["PATH"] = str(path)
    if importlib.util.find_spec("pandas"):
        import pandas as pd

        scope["pd"] = pd
    tracemalloc.start()
    started = time.process_time()
    eval(code, scope)
    seconds = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def rss_rise(code: str, path: Path) -> float:
    """The rise of a fresh subprocess's peak resident set size (bytes) during one read: the
    peak (VmHWM, reset first through /proc/self/clear_refs) less the resident size before."""
    script = (
        PRELUDE
        + "def status(key):\n"
        + "    for line in open('/proc/self/status'):\n"
        + "        if line.startswith(key):\n"
        + "            return int(line.split()[1]) * 1024\n"
        + "with open('/proc/self/clear_refs', 'w') as f:\n"
        + "    f.write('5')\n"
        + "before = status('VmRSS')\n"
        + code.replace("PATH", repr(str(path)))
        + "\nprint(status('VmHWM') - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 3 rounds")
    args = parser.parse_args()
    rows, rounds = (50_000, 3) if args.quick else (args.rows, args.rounds)
    readers = dict(READERS)
    if not importlib.util.find_spec("pandas"):
        readers = {k: v for k, v in readers.items() if not k.startswith("pandas")}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        write_file(path, rows)
        print(f"{rows:,} rows x {FEATURES + 1} columns, {path.stat().st_size / 1e6:.0f} MB")
        ours = load_csv(path, "label")
        exact = np.loadtxt(path, delimiter=",", skiprows=1)
        assert np.array_equal(ours.X, exact[:, :FEATURES]), "load_csv read other numbers"
        assert ours.class_names == ("0", "1", "2")
        assert np.array_equal(ours.y, exact[:, FEATURES].astype(np.int64))
        small = Path(folder) / "small.csv"  # the reference reader's share: 17x the data
        write_file(small, min(rows, REFERENCE_ROWS))
        scale = rows / min(rows, REFERENCE_ROWS)
        files = {name: small if name == REFERENCE else path for name in readers}
        best = {name: (np.inf, 0.0) for name in readers}
        for _ in range(rounds):
            for name, code in readers.items():
                if name == REFERENCE and best[name][0] < np.inf:
                    continue  # slow: once is enough
                seconds, peak = timed(code, files[name])
                best[name] = (min(best[name][0], seconds), max(best[name][1], peak))
        rss = {name: rss_rise(code, files[name]) for name, code in readers.items()}
        with open(path, "a") as file:  # now the last row holds a bad cell
            file.write(",".join(["1.5"] * (FEATURES - 1) + ["oops", "1"]) + "\n")
        fault = (np.inf, 0.0)
        for _ in range(min(rounds, 2)):
            seconds, peak = timed(FAULT, path)
            fault = (min(fault[0], seconds), max(fault[1], peak))
        best[REFERENCE] = (best[REFERENCE][0] * scale, best[REFERENCE][1] * scale)
        rss[REFERENCE] *= scale
    base_t, base_m = best["numpy.loadtxt"]
    base_r = rss["numpy.loadtxt"]
    print(
        f"{'reader':30s} {'CPU s':>8s} {'x time':>7s} {'peak MB':>8s} {'x peak':>7s}"
        f" {'RSS MB':>7s} {'x RSS':>6s}"
    )
    for name in readers:
        seconds, peak = best[name]
        print(
            f"{name:30s} {seconds:8.3f} {seconds / base_t:7.2f} {peak / 1e6:8.0f} "
            f"{peak / base_m:7.2f} {rss[name] / 1e6:7.0f} {rss[name] / base_r:6.2f}"
        )
    print(
        f"{'load_csv, bad cell on last row':30s} {fault[0]:8.3f} {fault[0] / base_t:7.2f} "
        f"{fault[1] / 1e6:8.0f} {fault[1] / base_m:7.2f}   (the error, found block by block)"
    )
    print("(x: ratio to numpy.loadtxt; peak: tracemalloc; RSS: rise of a subprocess's peak)")
    if scale != 1:
        print(f"(the reference reader read {REFERENCE_ROWS:,} rows; its figures x {scale:g})")


if __name__ == "__main__":
    main()
