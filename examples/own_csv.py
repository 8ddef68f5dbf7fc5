"""Your own CSV: fit, predict and score through the command line and through the estimators.

A CSV with a header row and one label column is all a config needs (`dataset.name` is the file's
path, `dataset.label` the label column when it is not called label, y, target or class). Class
labels may be strings. We write scikit-learn's wine data as such a file, fit it with
`implicit-cvx fit`, predict with `implicit-cvx predict`, and do the same with
`ImplicitClassifier`.

    python examples/own_csv.py            # the page's output
    python examples/own_csv.py --quick    # fewer iterations (the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shlex
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine
from threadpoolctl import threadpool_limits

import implicit_cvx as ic
from implicit_cvx.cli import main as main_cli

CONFIG = """\
method: adjoint
seed: 0
dataset: {{name: wine.csv, label: cultivar, test_size: 0.25}}
model: {{n_states: 16, kappa: 0.9}}
adjoint: {{max_outer: {iterations}}}
"""


def write_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = load_wine()
    names = np.array(data.target_names)[data.target]  # string labels: class_0, class_1, class_2
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*data.feature_names, "cultivar"])
        writer.writerows([*row, name] for row, name in zip(data.data.tolist(), names, strict=True))
    return data.data, names


def cli(command: str) -> str:
    """Run an `implicit-cvx ...` command line in this process (the console script's entry point)
    and return what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main_cli(shlex.split(command)[1:])
    if code != 0:
        raise RuntimeError(f"{command!r} exited with {code}")
    return printed.getvalue()


def main(quick: bool, work: Path) -> None:
    iterations = 5 if quick else 30
    X, labels = write_csv(work / "wine.csv")
    (work / "wine.yaml").write_text(CONFIG.format(iterations=iterations))
    print(f"wine.csv: {X.shape[0]} rows, {X.shape[1]} features, label column 'cultivar'")

    # 1. the command line: fit, then predict on the whole file (raw inputs, as in the CSV)
    os.chdir(work)
    cli("implicit-cvx fit wine.yaml --out run --no-progress")
    report = json.loads((work / "run" / "report.json").read_text())
    print(f"implicit-cvx fit: test accuracy {report['test_accuracy']:.4f}, "
          f"{report['outer_iterations']} outer iterations, ‖A‖_∞ = {report['inf_norm_A']:.2f}, "
          f"max duality gap ≤ 1e-8: {report['max_duality_gap'] <= 1e-8}")
    print("implicit-cvx predict:",
          cli("implicit-cvx predict run --data wine.csv --label cultivar --quiet").strip())
    model = ic.ImplicitModel.load(work / "run" / "model.npz")
    print("classes stored in the model:", model.metadata["classes"])

    # 2. the estimators: the same file read with the csv module
    rng = np.random.default_rng(0)
    test = rng.permutation(len(X))[: len(X) // 4]
    train = np.setdiff1d(np.arange(len(X)), test)
    clf = ic.ImplicitClassifier(n_states=16, kappa=0.9, max_iter=iterations, random_state=0)
    clf.fit(X[train], labels[train])
    print(f"ImplicitClassifier: test accuracy {clf.score(X[test], labels[test]):.4f}; "
          f"predicts {clf.predict(X[test][:3]).tolist()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 outer iterations instead of 30")
    parser.add_argument("--out", type=Path, default=None, help="unused (this example draws nothing)")
    args = parser.parse_args()
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as tmp:
        main(args.quick, Path(tmp))
