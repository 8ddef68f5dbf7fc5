"""Fit an implicit model to a teacher's states with SIM and read how sparse it is.

State-driven implicit modeling (SIM): run a trained MLP (the teacher) on the training images,
record its states, and fit (A, B) and (C, D) row by row by certified convex programs with an ℓ1
weight λ and ‖A‖_∞ ≤ κ. Larger λ gives sparser models; we trace test accuracy against the share
of the teacher's parameters the implicit model keeps, and draw A's nonzero pattern.

    python examples/sim_sparsity.py            # the page's output and figure
    python examples/sim_sparsity.py --quick    # a smaller run (the tests)
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from implicit_cvx.data import load_dataset
from implicit_cvx.train.sim import sim_path

IMG = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "img"


def main(quick: bool, out: Path) -> None:
    ds = load_dataset("digits", seed=0)  # pixels / 16, the fixed seeded 80/20 split
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    hidden = (32,) if quick else (64, 32)
    lambdas = [1e-1, 1e-2, 1e-3] if quick else [1e-1, 5e-2, 3e-2, 1e-2, 1e-3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier(hidden, max_iter=300, random_state=0).fit(U, y)
    results = sim_path(U, y, teacher=teacher, task="classification", lambdas=lambdas, kappa=0.99,
                       U_test=U_test, Y_test=y_test, seed=0)
    first = results[0].summary
    print(f"teacher 64-{'-'.join(map(str, hidden))}-10: test accuracy "
          f"{first['teacher_accuracy']:.3f}, {first['teacher_params']} parameters")
    print("     λ  test acc  nnz  of teacher  ‖A‖_∞  max gap ≤ 1e-9")
    for lam, r in zip(lambdas, results, strict=True):
        s = r.summary
        print(f"{lam:6g}  {s['test_accuracy']:8.3f}  {s['nnz']:4d}  {s['params_fraction_of_teacher']:9.1%}"
              f"  {s['inf_norm_A']:5.3f}  {s['max_duality_gap'] <= 1e-9}")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    frac = [r.summary["params_fraction_of_teacher"] for r in results]
    ax.plot(frac, [r.summary["test_accuracy"] for r in results], "o-", label="SIM")
    for f, lam, r in zip(frac, lambdas, results, strict=True):
        ax.annotate(f"λ={lam:g}", (f, r.summary["test_accuracy"]), fontsize=8,
                    textcoords="offset points", xytext=(4, -10))
    ax.axhline(first["teacher_accuracy"], color="gray", ls="--", label="teacher")
    ax.set(xlabel="nonzeros / teacher's parameters", ylabel="test accuracy",
           title="SIM on digits: accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend()
    pick = len(results) // 2
    A = results[pick].model.A
    ax2.spy(A, markersize=1.5)
    ax2.set_title(f"A at λ = {lambdas[pick]:g}: {np.count_nonzero(A)} nonzeros")
    fig.tight_layout()
    fig.savefig(out / "sim_sparsity.png", dpi=90)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller teacher, three λ")
    parser.add_argument("--out", type=Path, default=IMG, help="where the figure goes")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        main(args.quick, args.out)
