"""Cost of the certificates (box, interval, linear, linear_alpha, lp) relative to one equilibrium
solve of the same batch, and their certified accuracy.

Two digits-sized models: an MLP 64-64-32-10 trained on scikit-learn's digits (pixels scaled to
[0, 1]) and converted to implicit form, and a random well-posed ReLU model (n = 64, p = 64,
q = 10, ‖A‖_∞ = 0.9). Reported: interval at three radii against one radius (the boxes of all
radii are computed in one batch); lp milliseconds per sample for all margins, over the
tightened boxes (the default) and over the interval boxes (the formulation used before linear
bounds existed, for the same certified accuracy as then); CPU seconds next to wall seconds (the
machine is shared). Full results: python experiments/bench_certify.py --json
experiments/results/bench_certify.json. Usage: [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from implicit_cvx.files import package_versions, write_json_atomic
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import certify, margin_lower_bounds, margin_rows
from implicit_cvx.robust.certify import _boxes, _lp_margins, _objective_bounds, _with_skip

EPS_DIGITS = (0.005, 0.01, 0.02, 0.05)
EPS_RANDOM = (0.001, 0.003, 0.01)


def digits_model(seed: int):
    """(model, U_test, y_test): an sklearn MLP on digits/16, converted with from_sklearn."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from implicit_cvx.convert import from_sklearn

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((64, 32), max_iter=300, random_state=seed).fit(X_tr, y_tr)
    model = from_sklearn(mlp)
    model.metadata["preprocessing"] = {"kind": "scale", "offset": 0.0, "scale": 1 / 16}
    return model, X_te, y_te


def random_model(seed: int, n: int = 64, p: int = 64, q: int = 10, kappa: float = 0.9):
    """A random dense ReLU model with ‖A‖_∞ = κ; labels are its own predictions."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    model = ImplicitModel(A, rng.normal(size=(n, p)) / np.sqrt(p), rng.normal(size=(q, n)) / np.sqrt(n),
                          np.zeros((q, p)), 0.1 * rng.normal(size=n), np.zeros(q))
    U = rng.uniform(0, 1, size=(400, p))
    return model, U, model.predict(U).argmax(axis=1)


def _seconds(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _accuracy(res) -> dict:
    return {str(e): a for e, a in res.certified_accuracy.items()}


def _lp_over_interval_boxes(model, U, y, eps):
    """Margin bounds of the LP relaxation over the interval boxes (no linear tightening)."""
    boxes = _boxes(model, U, eps, "interval", (0, 1))
    rows = margin_rows(model, y)
    lower = _with_skip(_objective_bounds(*rows[:3], boxes)[0], rows[3])
    return _lp_margins(model, rows, boxes, lower, early_stop=False)


def bench(name: str, model, U, y, eps_list, m: int, m_lp: int) -> dict:
    U, y = U[:m], y[:m]
    eps = eps_list[1]
    t_eq = _seconds(lambda: model.equilibrium(U, tol=1e-12, raise_on_failure=False))
    row = {"model": name, "n_states": model.n_states, "n_inputs": model.n_inputs,
           "n_outputs": model.n_outputs, "samples": m, "eps_for_timing": eps,
           "equilibrium_seconds": t_eq, "methods": {}}
    for method in ("box", "interval", "linear", "linear_alpha"):
        t = _seconds(lambda method=method: margin_lower_bounds(model, U, y, eps, method, (0, 1)),
                     repeat=3 if method in ("box", "interval") else 1)
        res, wall, cpu = _timed(lambda method=method: certify(model, U, y, eps_list, method, domain=(0, 1)))
        row["methods"][method] = {
            "seconds": t, "relative_to_equilibrium": t / t_eq,
            "certify_ms_per_sample": 1e3 * wall / m, "certify_cpu_ms_per_sample": 1e3 * cpu / m,
            "clean_accuracy": res.clean_accuracy, "certified_accuracy": _accuracy(res),
        }
    three = list(eps_list[:3])
    one = _seconds(lambda: certify(model, U, y, [eps], "interval", domain=(0, 1)))
    all3 = _seconds(lambda: certify(model, U, y, three, "interval", domain=(0, 1)))
    row["methods"]["interval"].update(certify_one_eps_seconds=one, certify_three_eps_seconds=all3,
                                      three_eps_over_one_eps=all3 / one, three_eps=three)
    U_lp, y_lp = U[:m_lp], y[:m_lp]
    t_eq_lp = _seconds(lambda: model.equilibrium(U_lp, tol=1e-12, raise_on_failure=False))
    lower, t_lp, c_lp = _timed(lambda: margin_lower_bounds(model, U_lp, y_lp, eps, "lp", (0, 1)))
    old, t_old, c_old = _timed(lambda: _lp_over_interval_boxes(model, U_lp, y_lp, eps))
    interval = margin_lower_bounds(model, U_lp, y_lp, eps, "interval", (0, 1))
    linear = margin_lower_bounds(model, U_lp, y_lp, eps, "linear", (0, 1))
    res, t_cert, _ = _timed(lambda: certify(model, U_lp, y_lp, eps_list, "lp", domain=(0, 1)))
    res_old = {str(e): float((_lp_over_interval_boxes(model, U_lp, y_lp, e).min(axis=1) > 0).mean())
               for e in eps_list}
    finite = np.isfinite(lower)
    row["methods"]["lp"] = {
        "samples": m_lp,
        "ms_per_sample_all_margins": 1e3 * t_lp / m_lp, "cpu_ms_per_sample_all_margins": 1e3 * c_lp / m_lp,
        "relative_to_equilibrium_all_margins": t_lp / t_eq_lp,
        "interval_boxes_ms_per_sample_all_margins": 1e3 * t_old / m_lp,
        "interval_boxes_cpu_ms_per_sample_all_margins": 1e3 * c_old / m_lp,
        "certify_ms_per_sample": 1e3 * t_cert / m_lp,
        "mean_margin_gain_over_interval": float((lower[finite] - interval[finite]).mean()),
        "never_looser_than_linear": bool(np.all(lower[finite] >= linear[finite])),
        "clean_accuracy": res.clean_accuracy,
        "certified_accuracy": _accuracy(res),
        "interval_boxes_certified_accuracy": res_old,
        "interval_certified_accuracy_same_samples": _accuracy(
            certify(model, U_lp, y_lp, eps_list, "interval", domain=(0, 1))),
    }
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few samples (a smoke run)")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    m, m_lp = (50, 3) if args.quick else (400, 50)
    threadpool_limits(1)  # stable timings on a shared machine
    t0 = time.perf_counter()
    rows = []
    for name, (model, U, y), eps in (
        ("mlp_digits_64-64-32-10", digits_model(args.seed), EPS_DIGITS),
        ("random_n64_p64_q10", random_model(args.seed), EPS_RANDOM),
    ):
        row = bench(name, model, U, y, eps, min(m, len(U)), m_lp)
        rows.append(row)
        print(f"{name}: equilibrium of {row['samples']} samples {row['equilibrium_seconds'] * 1e3:.2f} ms")
        for method, r in row["methods"].items():
            cost = (f"{r['relative_to_equilibrium']:.1f}× equilibrium, certify {r['certify_ms_per_sample']:.2f} "
                    f"ms/sample" if "seconds" in r else
                    f"{r['ms_per_sample_all_margins']:.1f} ms/sample all margins (interval boxes: "
                    f"{r['interval_boxes_ms_per_sample_all_margins']:.1f}), certify {r['certify_ms_per_sample']:.1f}")
            print(f"  {method:<12} {cost}; clean {r['clean_accuracy']:.3f}, certified {r['certified_accuracy']}")
        print(f"  interval: 3 radii cost {row['methods']['interval']['three_eps_over_one_eps']:.2f}× one radius")
    out = {"benchmark": "bench_certify", "quick": args.quick, "seed": args.seed,
           "eps_units": "pixels scaled to [0, 1] (digits); raw units (random)",
           "domain": [0, 1], "rows": rows, "versions": package_versions(),
           "seconds": time.perf_counter() - t0}
    if args.json:
        write_json_atomic(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
