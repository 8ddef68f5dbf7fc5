"""Run the row problems of a fit on a Dask cluster (here a LocalCluster on this machine).

Every convex weight step splits into independent row problems (one per row of (A, B), then of
(C, D)). `backend="dask"` sends chunks of rows to the workers of a dask.distributed scheduler:
give `address` to use a running cluster, or leave it out to start a LocalCluster of `n_jobs`
single-threaded workers for the fit. The rows are the same problems wherever they run, so the
model is the same as the serial one.

    python examples/dask_rows.py            # the page's output
    python examples/dask_rows.py --quick    # a smaller teacher (the tests)
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from dask.distributed import LocalCluster
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from implicit_cvx.data import load_dataset
from implicit_cvx.train.sim import fit_sim


def main(quick: bool) -> None:
    ds = load_dataset("digits", seed=0)
    U, y = ds.split("train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier((16,) if quick else (64, 32), max_iter=200,
                                random_state=0).fit(U, y)
    options = dict(teacher=teacher, task="classification", kappa=0.99, lam=1e-3, seed=0)
    serial = fit_sim(U, y, **options).model
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        print(f"LocalCluster with {len(cluster.workers)} workers")
        result = fit_sim(U, y, backend="dask", address=cluster.scheduler_address, n_jobs=2,
                         **options)
    model = result.model
    print(f"{model.n_states} states: {model.n_states} (A, B) rows and {model.n_outputs} (C, D) rows "
          f"solved on the cluster, max duality gap ≤ 1e-9: {result.summary['max_duality_gap'] <= 1e-9}")
    diff = max(float(np.max(np.abs(getattr(model, k) - getattr(serial, k)))) for k in "ABCD")
    print(f"same weights as the serial fit (max |Δ| ≤ 1e-9): {diff <= 1e-9}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 16-unit teacher")
    parser.add_argument("--out", type=Path, default=None, help="unused (this example draws nothing)")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        main(args.quick)
