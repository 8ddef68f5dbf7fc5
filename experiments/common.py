"""Small helpers shared by the experiment scripts: arguments, BLAS threads, result tables.

Scripts run as `python experiments/<script>.py`, so this module is imported as `common`.
Results land in experiments/results/ as CSV + markdown tables and JSON (via files.write_json_atomic).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from implicit_cvx.files import package_versions, write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
_STARTED = time.perf_counter()  # the script's start: provenance() reports the wall time since


def make_parser(description: str, *, seeds: int | None = None) -> argparse.ArgumentParser:
    """Parser with --quick, --out DIR, --json PATH, --blas-threads and (if `seeds`) --seeds N."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small, fast version (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help=f"directory for the result files (default {RESULTS_DIR})")
    parser.add_argument("--json", type=Path, default=None,
                        help="path of the JSON result (default: a file in --out)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (default 1: the machine is shared)")
    if seeds is not None:
        parser.add_argument("--seeds", type=_positive_int, default=seeds,
                            help=f"number of seeds 0..N−1 (default {seeds})")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def limit_blas(threads: int = 1):
    """Limit BLAS/OpenMP threads (stable timings on a shared 2-core machine); returns the limiter."""
    if threads < 1:
        raise ValueError(f"--blas-threads must be ≥ 1, got {threads}")
    return threadpool_limits(limits=threads)


def provenance(argv=None) -> dict:
    """Command line, commit, wall time of the script so far, date, machine and package versions
    of a result (what RESULTS.md quotes for every number)."""
    return {
        "argv": list(sys.argv if argv is None else argv),
        "commit": git_commit(),
        "wall_seconds": time.perf_counter() - _STARTED,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15min": list(os.getloadavg()),  # a shared machine slows every timing
        "versions": package_versions(),
    }


def git_commit() -> str | None:
    """HEAD of the checkout the scripts run from, with "+dirty" when tracked files other than the
    outputs (experiments/results/, experiments/RESULTS.md) differ from it (None outside git)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)experiments/results", ":(exclude)experiments/RESULTS.md").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def mean_std(values, digits: int = 3) -> str:
    """'mean ± std' (sample std, ddof = 1; just the mean for one value; '—' for none)."""
    vals = np.asarray([v for v in values if v is not None], dtype=float)
    if vals.size == 0:
        return "—"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std(ddof=1):.{digits}f}"


def summarize(values) -> dict:
    """{'mean', 'std', 'min', 'max', 'n'} of the non-None values (std with ddof = 1)."""
    vals = np.asarray([v for v in values if v is not None], dtype=float)
    if vals.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n": int(vals.size)}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of `rows` (dicts) restricted to `columns`, in that order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """CSV with a header of `columns` (missing values empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: ("" if row.get(c) is None else row.get(c)) for c in columns} for row in rows)
    return path


def write_markdown(path: Path, title: str, rows: list[dict], columns: list[str], notes: str = "") -> Path:
    """A markdown file: a title, the table, then free-form notes (settings, budgets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {title}\n\n" + markdown_table(rows, columns) + (f"\n{notes.strip()}\n" if notes else "")
    path.write_text(text)
    return path


def write_json(path: Path, obj) -> Path:
    write_json_atomic(path, obj)
    return Path(path)


def mnist_path() -> Path | None:
    """The full MNIST file for this repository's experiments: $IMPLICIT_CVX_DATA, else
    ../shared/data/mnist.npz beside the repository, else None (a user's clone has neither)."""
    if os.environ.get("IMPLICIT_CVX_DATA"):
        return Path(os.environ["IMPLICIT_CVX_DATA"])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
    return shared if shared.is_file() else None
