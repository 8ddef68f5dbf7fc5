"""ImplicitRegressor defaults against Ridge: R² over the same 5 shuffled folds (KFold, seed 0).

Data: scikit-learn's diabetes (442 × 10, targets std 77), make_friedman1 (400 × 10, noise 1,
seed 0; nonlinear) and the §7.1 function (the 200 training points plus the first 200 of the fixed
test set; 1 input, nonlinear). Rows:
- `Ridge()` on the raw features (the issue's baseline) and on standardized features;
- `ImplicitRegressor()`: inputs and targets standardized, early stopping on a 10% split;
- the same without early stopping (targets standardized only);
- the previous default: inputs standardized, raw targets, no early stopping.
Implicit rows are the mean over random_state 0, 1, 2 (their spread in the std column).

Full run (the committed results):  python experiments/regression_defaults.py
Smoke run (diabetes, 3 folds, one seed, two rows; _quick suffix):
                                   python experiments/regression_defaults.py --quick
Writes experiments/results/regression_defaults{,_quick}.{md,json}.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import limit_blas, make_parser, provenance, write_json, write_markdown
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from implicit_cvx import ImplicitRegressor
from implicit_cvx.data import load_dataset

COLUMNS = ["dataset", "model", "r2_mean", "r2_std_over_seeds", "r2_folds", "seconds"]
QUICK_MODELS = ("Ridge() (raw features)", "ImplicitRegressor() (new defaults)")


def datasets(quick: bool) -> dict:
    sets = {"diabetes": load_diabetes(return_X_y=True)}
    if not quick:
        sets["friedman1"] = make_friedman1(n_samples=400, noise=1.0, random_state=0)
        ds = load_dataset("regression_7_1")
        rows = np.concatenate([ds.train_index, ds.test_index[:200]])
        sets["regression_7_1"] = (ds.X[rows], ds.y[rows])
    return sets


def models(seed: int) -> dict:
    """Each model's factory for one seed (Ridge ignores it)."""
    return {
        "Ridge() (raw features)": Ridge(),
        "Ridge() on standardized features": make_pipeline(StandardScaler(), Ridge()),
        "ImplicitRegressor() (new defaults)": ImplicitRegressor(random_state=seed),
        "ImplicitRegressor(early_stopping=False)": ImplicitRegressor(early_stopping=False,
                                                                     random_state=seed),
        "previous default (raw targets, no early stopping)": make_pipeline(
            StandardScaler(), ImplicitRegressor(standardize=False, early_stopping=False,
                                                random_state=seed)),
    }


def run(name: str, X, y, folds: KFold, seeds, labels) -> list[dict]:
    rows = []
    for label in labels:
        t0 = time.perf_counter()
        per_seed = [cross_val_score(models(s)[label], X, y, cv=folds)
                    for s in ([0] if label.startswith("Ridge") else seeds)]
        means = [float(s.mean()) for s in per_seed]
        rows.append({"dataset": name, "model": label, "r2_mean": float(np.mean(means)),
                     "r2_std_over_seeds": float(np.std(means, ddof=1)) if len(means) > 1 else None,
                     "r2_folds": " ".join(f"{v:.3f}" for v in np.mean(per_seed, axis=0)),
                     "seconds": time.perf_counter() - t0})
        print(f"{name:15s} {label:50s} R² {rows[-1]['r2_mean']:.4f}  ({rows[-1]['seconds']:.1f} s)",
              flush=True)
    return rows


def main(argv=None) -> dict:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    suffix = "_quick" if args.quick else ""
    folds = KFold(3 if args.quick else 5, shuffle=True, random_state=0)
    seeds = [0] if args.quick else [0, 1, 2]
    t0 = time.perf_counter()
    rows = []
    with limit_blas(args.blas_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, (X, y) in datasets(args.quick).items():
            rows += run(name, X, y, folds, seeds, QUICK_MODELS if args.quick else list(models(0)))
    command = "python experiments/regression_defaults.py" + (" --quick" if args.quick else "")
    notes = (f"Command: `{command}`. R² by `cross_val_score` over KFold({folds.n_splits}, "
             f"shuffle=True, random_state=0); implicit rows averaged over random_state {seeds}. "
             "Seconds on a shared 2-core machine (one BLAS thread): indicative only.")
    write_markdown(args.out / f"regression_defaults{suffix}.md", "Regression defaults vs Ridge",
                   rows, COLUMNS, notes)
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "folds": folds.n_splits, "seeds": seeds, "rows": rows}
    write_json(args.json or args.out / f"regression_defaults{suffix}.json", report)
    return report


if __name__ == "__main__":
    main()
