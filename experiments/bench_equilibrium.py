"""Benchmark of the equilibrium solvers: time and iterations of picard / anderson / structured.

Full run (its output is experiments/results/bench_equilibrium.json):
    python experiments/bench_equilibrium.py --blas-threads 1 \
        --json experiments/results/bench_equilibrium.json
Quick check (about a minute):
    python experiments/bench_equilibrium.py --quick

Random implicit ReLU models with A ≥ 0 entrywise and every row's ℓ1 norm equal to κ, so
λ_pf(|A|) = κ: the worst case for Picard, whose rate is then κ itself. Dense A and sparse A
(density 5%, CSR). Tolerance 1e-10 on the max abs residual. A feed-forward 784-256-256-10 MLP
compares the structured sweep with a plain numpy forward pass of the same network.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

from implicit_cvx.equilibrium import equilibrium_residual, solve_equilibrium
from implicit_cvx.model import ImplicitModel

SOLVERS = ("picard", "anderson", "structured")
TOL = 1e-10
MAX_ITER = 5000


def random_model(rng, n, p, kappa, density):
    A = np.abs(rng.standard_normal((n, n)))
    if density < 1.0:
        A *= rng.random((n, n)) < density
        A[np.arange(n), rng.integers(0, n, n)] += 1e-3  # no empty row: λ_pf(|A|) stays κ
    A *= kappa / A.sum(axis=1, keepdims=True)
    A = sp.csr_matrix(A) if density < 1.0 else A
    return ImplicitModel(A, rng.standard_normal((n, p)) / np.sqrt(p), np.ones((1, n)),
                         np.zeros((1, p)), 0.1 * rng.standard_normal(n))


def run_solver(model, U, method):
    start = time.perf_counter()
    X, info = solve_equilibrium(model, U, method, tol=TOL, max_iter=MAX_ITER,
                                raise_on_failure=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "iterations": info.iterations,
        "converged": info.converged,
        "residual": equilibrium_residual(model, U, X),
        "solver": info.solver,
    }


def bench_random(sizes, kappas, seed=0):
    rows = []
    for n, m in sizes:
        for density in (1.0, 0.05):
            for kappa in kappas:
                rng = np.random.default_rng(seed)
                model = random_model(rng, n, 20, kappa, density)
                U = rng.standard_normal((m, 20))
                for method in SOLVERS:
                    row = {"n": n, "m": m, "kappa": kappa,
                           "A": "dense" if density == 1.0 else "sparse 5%", "method": method}
                    row.update(run_solver(model, U, method))
                    rows.append(row)
                    print(
                        f"{n:5d} {m:6d} {row['A']:>9s} {kappa:5.2f} {method:>10s} "
                        f"{row['iterations']:6d} {row['seconds']:9.3f}s "
                        f"res {row['residual']:.1e}{'' if row['converged'] else '  NOT CONVERGED'}",
                        flush=True,
                    )
    return rows


def mlp(rng, sizes=(784, 256, 256, 10)):
    """The MLP's weights and its implicit model, states x = (x_2, x_1) (DESIGN §4)."""
    W = [rng.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(3)]
    b = [0.1 * rng.standard_normal(s) for s in sizes[1:]]
    h1, h2 = sizes[1], sizes[2]
    A = np.zeros((h1 + h2, h1 + h2))
    A[:h2, h2:] = W[1]
    B = np.zeros((h1 + h2, sizes[0]))
    B[h2:] = W[0]
    C = np.zeros((sizes[3], h1 + h2))
    C[:, :h2] = W[2]
    model = ImplicitModel(A, B, C, np.zeros((sizes[3], sizes[0])), np.concatenate([b[1], b[0]]),
                          b[2])
    return W, b, model


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_feed_forward(m, repeats, seed=0):
    rng = np.random.default_rng(seed)
    W, b, model = mlp(rng)
    U = rng.standard_normal((m, W[0].shape[1]))

    def hidden(U):
        h = np.maximum(U @ W[0].T + b[0], 0.0)
        return np.maximum(h @ W[1].T + b[1], 0.0)

    def states():
        return solve_equilibrium(model, U, "structured")

    states()  # builds and caches the sweep plan, as any repeated use would
    t_numpy = best_of(lambda: hidden(U), repeats)
    t_struct = best_of(states, repeats)
    t_numpy_out = best_of(lambda: hidden(U) @ W[2].T + b[2], repeats)
    t_predict = best_of(lambda: model.predict(U, method="structured"), repeats)
    X, info = states()
    err = float(np.abs(model.output(X, U) - (hidden(U) @ W[2].T + b[2])).max())
    out = {
        "layers": [784, 256, 256, 10], "m": m, "numpy_hidden_seconds": t_numpy,
        "structured_seconds": t_struct, "ratio_structured_to_numpy": t_struct / t_numpy,
        "numpy_forward_seconds": t_numpy_out, "predict_seconds": t_predict,
        "ratio_predict_to_numpy": t_predict / t_numpy_out, "max_abs_output_error": err,
        "iterations": info.iterations,
    }
    print(
        f"feed-forward 784-256-256-10, m={m}: numpy {t_numpy:.4f}s, structured {t_struct:.4f}s, "
        f"ratio {out['ratio_structured_to_numpy']:.2f} (target ≤ 1.5); predict/forward "
        f"{out['ratio_predict_to_numpy']:.2f}; max |Ŷ − forward| = {err:.1e}",
        flush=True,
    )
    return out


def anderson_vs_picard(rows):
    """Picard iterations / Anderson iterations for every configuration."""
    key = ("n", "m", "A", "kappa")
    by = {}
    for row in rows:
        by.setdefault(tuple(row[k] for k in key), {})[row["method"]] = row
    out = []
    for k, d in by.items():
        out.append({**dict(zip(key, k, strict=True)),
                    "picard_iterations": d["picard"]["iterations"],
                    "anderson_iterations": d["anderson"]["iterations"],
                    "picard_converged": d["picard"]["converged"],
                    "iteration_ratio": d["picard"]["iterations"] / d["anderson"]["iterations"],
                    "time_ratio": d["picard"]["seconds"] / d["anderson"]["seconds"]})
    print("\nAnderson vs Picard (iterations picard/anderson, time picard/anderson):")
    for r in out:
        print(f"  n={r['n']:5d} m={r['m']:6d} {r['A']:>9s} κ={r['kappa']:.2f}: "
              f"{r['picard_iterations']:5d}/{r['anderson_iterations']:4d} = "
              f"{r['iteration_ratio']:6.1f}x iterations, {r['time_ratio']:6.1f}x time")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit BLAS threads (1 gives stable timings on a shared machine)")
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)
    if args.quick:
        sizes, ff_m, repeats = [(100, 1000), (300, 1000)], 2000, 3
    else:
        sizes = [(100, 1000), (100, 10000), (300, 1000), (300, 10000), (1000, 1000)]
        ff_m, repeats = 10000, 5
    kappas = (0.5, 0.9, 0.99)
    start = time.perf_counter()
    print(f"{'n':>5s} {'m':>6s} {'A':>9s} {'κ':>5s} {'method':>10s} {'iters':>6s} {'time':>10s}")
    rows = bench_random(sizes, kappas)
    ratios = anderson_vs_picard(rows)
    ff = bench_feed_forward(ff_m, repeats)
    result = {
        "command": "python experiments/bench_equilibrium.py" + (" --quick" if args.quick else "")
        + (f" --blas-threads {args.blas_threads}" if args.blas_threads is not None else ""),
        "blas_threads": args.blas_threads,
        "tolerance": TOL, "max_iter": MAX_ITER,
        "models": "ReLU, A ≥ 0 with row ℓ1 norms = κ (λ_pf(|A|) = κ), p = 20",
        "rows": rows, "anderson_vs_picard": ratios, "feed_forward": ff,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "scipy": scipy.__version__},
        "seconds": time.perf_counter() - start,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
