"""Benchmark of the SIM row fits (DESIGN §6.1, §6.3): the peers' way vs the Gram paths vs the floor.

Methods, on the same states, λ and κ:
  (a) raw-SCS / raw-Clarabel: a fresh cvxpy problem per row on the raw m-sample data (torchidl's way)
  (b) dpp-gram: the parametrized cvxpy Gram problem (SCS, certified, escalated to Clarabel)
  (c) native: gram_stats + solve_rows (certified active-set solver)
  (d) floor: forming G plus one unconstrained least-squares solve of all rows
Times of (a) on a subset of rows are extrapolated to all rows (stated in the table).

Full run (saves the results file):
    python experiments/bench_sim.py --json experiments/results/bench_sim.json
Quick check:
    python experiments/bench_sim.py --quick
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from implicit_cvx.convex.cvx import solve_row_raw
from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import RowSpec, solve_rows
from implicit_cvx.convex.solvers import RowProblem, solve_certified

LAM, KAPPA = 1e-3, 0.99
OBJ_FLOOR = 1e-9  # e.g. a dead unit's row: optimum 0, both solvers return ±1e-16
DPP_TOL = 1e-7  # Clarabel on the Gram form does not always certify 1e-9 on the ill-conditioned digits states


def digits_states():
    """Teacher states of an sklearn MLP (64, 32) on digits, rescaled so that ‖A‖_∞ ≤ 0.9 < κ."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    U = data.data / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), random_state=0, max_iter=300).fit(U, data.target)
    (W1, W2), (b1, b2) = clf.coefs_[:2], clf.intercepts_[:2]
    s = np.abs(W2).sum(0).max() / 0.9  # ReLU homogeneity: x1 → s·x1 and W2 → W2/s
    Z1 = s * (U @ W1 + b1)
    X1 = np.maximum(Z1, 0)
    Z2 = X1 @ (W2 / s) + b2
    return U, np.hstack([np.maximum(Z2, 0), X1]), np.hstack([Z2, Z1])  # implicit order [x2, x1]


def synthetic_states(m, n=96, p=64, seed=0):
    """States of a random well-posed ReLU implicit model (‖A‖_∞ = 0.5) on m uniform inputs."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.1)
    A *= 0.5 / np.abs(A).sum(1, keepdims=True).clip(1e-12)
    B = rng.normal(size=(n, p)) / np.sqrt(p)
    b = 0.1 * rng.normal(size=n)
    U = rng.random((m, p))
    X = np.zeros((m, n))
    for _ in range(200):  # Picard, contraction 0.5: 2^-200
        X_new = np.maximum(X @ A.T + U @ B.T + b, 0)
        if np.abs(X_new - X).max() < 1e-14:
            break
        X = X_new
    return U, X, X @ A.T + U @ B.T + b


def problem(U, X, Z):
    n = X.shape[1]
    R = np.hstack([X, U, np.ones((len(X), 1))])
    spec = RowSpec(penalty=LAM, free=[R.shape[1] - 1], balls=[(np.arange(n), KAPPA)])
    return R, Z, spec


def rel_diff(a, ref):
    """|a − ref| / max(|ref|, OBJ_FLOOR): rows whose optimum is 0 up to rounding compare absolutely."""
    return np.abs(a - ref) / np.maximum(np.abs(ref), OBJ_FLOOR)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench(name, U, X, Z, raw_rows, dpp_rows):
    R, T, spec = problem(U, X, Z)
    k = T.shape[1]
    native, t_native = timed(lambda: solve_rows(gram_stats(R, T), spec))

    def floor():
        st = gram_stats(R, T)
        return np.linalg.lstsq(st.G, st.H, rcond=None)[0]

    _, t_floor = timed(floor)
    rows = {"native (c)": dict(seconds=t_native, rows_run=k)}
    clarabel_obj = {}
    for solver in ("SCS", "CLARABEL"):
        objs, secs = [], []
        for i in raw_rows:
            (_, obj), sec = timed(lambda i=i, solver=solver: solve_row_raw(R, T[:, i], spec, solver, row=i, k=k))
            objs.append(obj)
            secs.append(sec)
            if solver == "CLARABEL":
                clarabel_obj[i] = obj
        rel = rel_diff(native.objective[raw_rows], np.array(objs))
        rows[f"raw-{solver} (a)"] = dict(seconds=float(np.mean(secs)) * k, rows_run=len(raw_rows),
                                         max_rel_obj_diff_native_vs_this=float(rel.max()))
    st = gram_stats(R, T)
    dpp, t_dpp = timed(lambda: solve_certified(RowProblem(st, spec), chain=("scs", "clarabel"),
                                               tol=DPP_TOL, rows=dpp_rows))
    rows[f"dpp-gram SCS→Clarabel (b) tol {DPP_TOL:g}"] = dict(seconds=t_dpp / len(dpp_rows) * k, rows_run=len(dpp_rows),
                                             rows_escalated=int(dpp.escalated.sum()))
    rows["floor lstsq (d)"] = dict(seconds=t_floor, rows_run=k)
    ref = np.array([clarabel_obj[i] for i in raw_rows])
    max_rel = float(np.max(rel_diff(native.objective[raw_rows], ref)))
    for r in rows.values():
        r["ratio_vs_native"] = r["seconds"] / t_native
    return dict(dataset=name, m=int(R.shape[0]), d=int(R.shape[1]), k=int(k), lam=LAM, kappa=KAPPA,
                native=native.to_dict(), native_max_rel_obj_diff_vs_clarabel=max_rel,
                clarabel_rows_compared=len(raw_rows), methods=rows,
                per_row=dict(rows=raw_rows.tolist(), native=native.objective[raw_rows].tolist(),
                             clarabel=ref.tolist()))


def print_table(res):
    print(f"\n== {res['dataset']}: m={res['m']}, d={res['d']}, k={res['k']} rows, λ={LAM}, κ={KAPPA}")
    print(f"{'method':38s} {'seconds (all rows)':>19s} {'rows run':>9s} {'× native':>9s}")
    for name, r in res["methods"].items():
        print(f"{name:38s} {r['seconds']:19.3f} {r['rows_run']:9d} {r['ratio_vs_native']:9.2f}")
    print(f"native: max certified gap {res['native']['max_duality_gap']:.2e}, max rel. objective diff vs "
          f"Clarabel {res['native_max_rel_obj_diff_vs_clarabel']:.2e} (floor {OBJ_FLOOR:g}) over {res['clarabel_rows_compared']} rows")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rows for (a)/(b), m = 2·10⁴ synthetic")
    ap.add_argument("--json", help="write the results to this path")
    args = ap.parse_args(argv)
    U, X, Z = digits_states()
    k = Z.shape[1]
    digits_rows = np.arange(0, k, 12) if args.quick else np.arange(k)
    d = bench("digits teacher states", U, X, Z, digits_rows, digits_rows[: 4 if args.quick else 16])
    m = 20_000 if args.quick else 100_000
    s = bench("synthetic states", *synthetic_states(m), np.array([0]), np.array([0]))
    targets = {
        "native >= 50x faster than raw-SCS on digits": d["methods"]["raw-SCS (a)"]["ratio_vs_native"] >= 50,
        "every compared digits row within 1e-6 rel. of Clarabel": d["native_max_rel_obj_diff_vs_clarabel"] <= 1e-6,
        f"native within 5x of the floor at m={m}": 1 / s["methods"]["floor lstsq (d)"]["ratio_vs_native"] <= 5,
    }
    for res in (d, s):
        print_table(res)
    print()
    for t, ok in targets.items():
        print(f"[{'met' if ok else 'NOT met'}] {t}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(quick=args.quick, results=[d, s], targets=targets), fh, indent=2)


if __name__ == "__main__":
    main()
