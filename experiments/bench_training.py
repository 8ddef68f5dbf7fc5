"""Training benchmark: wall time for adjoint, fenchel and gradient to reach the same training loss.

Full run (writes experiments/results/bench_training.json and bench_training.png; 11 minutes
measured on 2 cores shared with other jobs):
    python experiments/bench_training.py
Smoke run: python experiments/bench_training.py --quick --out /tmp/bench --json /tmp/bench/b.json

Problems: §7.1 regression (seed 0, n = 75, κ = 0.5, D free, squared loss) and digits (seed-0
split, n = 64, D = 0, cross-entropy). No penalties anywhere, so every method minimizes the same
training loss of the TRUE equilibrium model. The gradient baseline (projected Adam on implicit
gradients, paper App. G) is tuned over learning rates {1e-3, 3e-3, 1e-2} with a fixed epoch
budget (full batch on §7.1, batches of 100 on digits); the target is the best learning rate's
final training loss. Each method's curve is its per-iteration history (seconds since the start of its fit, the equilibrium
training loss) plus its final model (after the methods' final (C, D) refits); time-to-target is
the first point at or below the target. One BLAS thread, one process, methods run one after
another: timings are comparable with each other, not across machines.
"""

from __future__ import annotations

import time

import numpy as np
from common import limit_blas, make_parser, provenance, write_json

from implicit_cvx.data import load_dataset
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.fenchel import fit_fenchel
from implicit_cvx.train.gradient import fit_gradient

LEARNING_RATES = (1e-3, 3e-3, 1e-2)
FITS = {"adjoint": fit_adjoint, "fenchel": fit_fenchel, "gradient": fit_gradient}

PROBLEMS = {
    "regression_7_1": {
        "common": dict(task="regression", loss="squared", n_states=75, kappa=0.5, include_D=True),
        "adjoint": dict(anchor_mu=1e-2, max_outer=60),
        "fenchel": dict(max_outer=30),
        "gradient": dict(epochs=2000, batch_size=None),
        "quick": {"common": dict(n_states=20), "adjoint": dict(max_outer=4),
                  "fenchel": dict(max_outer=2), "gradient": dict(epochs=40)},
    },
    "digits": {
        "common": dict(task="classification", loss="cross_entropy", n_states=64, kappa=0.95,
                       include_D=False),
        "adjoint": dict(anchor_mu=1e-2, max_outer=30),
        "fenchel": dict(max_outer=10),
        "gradient": dict(epochs=30, batch_size=100),
        "quick": {"common": dict(n_states=16), "adjoint": dict(max_outer=2),
                  "fenchel": dict(max_outer=1), "gradient": dict(epochs=2)},
    },
}
QUICK_SAMPLES = 100  # --quick: training rows used on digits


def settings(problem: dict, method: str, quick: bool) -> dict:
    """Keyword arguments of one method's fit on one problem (budgets included)."""
    kw = {**problem["common"], **problem[method]}
    if quick:
        kw.update(problem["quick"]["common"])
        kw.update(problem["quick"].get(method, {}))
    return kw


def curve(result) -> dict:
    """(seconds, training loss) per outer iteration / epoch, then the final returned model."""
    seconds = [float(h["seconds"]) for h in result.history] + [float(result.summary["seconds"])]
    loss = [float(h["train_loss"]) for h in result.history] + [float(result.summary["train_loss"])]
    return {"seconds": seconds, "train_loss": loss}


def time_to_target(cur: dict, target: float):
    """Seconds at the first curve point with loss ≤ target (None if never reached)."""
    for s, v in zip(cur["seconds"], cur["train_loss"], strict=True):
        if v <= target:
            return s
    return None


def run(method, U, y, kw, seed=0) -> dict:
    start = time.perf_counter()
    res = FITS[method](U, y, seed=seed, **kw)
    return {"settings": kw, "curve": curve(res), "final_train_loss": float(res.summary["train_loss"]),
            "wall_seconds": time.perf_counter() - start,
            "outer_iterations": int(res.summary["outer_iterations"])}


def bench_problem(name: str, quick: bool, log=print) -> dict:
    """Tune the gradient baseline, set the target, time every method to it."""
    problem = PROBLEMS[name]
    U, y = load_dataset(name, seed=0).split("train")
    if quick and len(y) > QUICK_SAMPLES:
        rows = np.sort(np.random.default_rng(0).choice(len(y), QUICK_SAMPLES, replace=False))
        U, y = U[rows], y[rows]
    tuning = {}
    for lr in LEARNING_RATES:
        tuning[lr] = run("gradient", U, y, {**settings(problem, "gradient", quick), "lr": lr})
        log(f"{name:15s} gradient lr={lr:g}: final loss {tuning[lr]['final_train_loss']:.5g} "
            f"in {tuning[lr]['wall_seconds']:.1f}s", flush=True)
    best_lr = min(tuning, key=lambda lr: tuning[lr]["final_train_loss"])
    target = tuning[best_lr]["final_train_loss"]
    methods = {"gradient": tuning[best_lr]}
    for method in ("adjoint", "fenchel"):
        methods[method] = run(method, U, y, settings(problem, method, quick))
        log(f"{name:15s} {method}: final loss {methods[method]['final_train_loss']:.5g} "
            f"in {methods[method]['wall_seconds']:.1f}s", flush=True)
    for rec in methods.values():
        rec["seconds_to_target"] = time_to_target(rec["curve"], target)
    t_grad = methods["gradient"]["seconds_to_target"]
    speedup = {m: (t_grad / methods[m]["seconds_to_target"]
                   if methods[m]["seconds_to_target"] else None) for m in ("adjoint", "fenchel")}
    return {
        "m_train": int(len(y)),
        "baseline": {"optimizer": "adam (projected, implicit gradients)",
                     "learning_rates": list(LEARNING_RATES), "best_lr": best_lr,
                     "epochs": methods["gradient"]["settings"]["epochs"],
                     "batch_size": methods["gradient"]["settings"]["batch_size"],
                     "final_loss_by_lr": {str(lr): r["final_train_loss"] for lr, r in tuning.items()},
                     "curves_by_lr": {str(lr): r["curve"] for lr, r in tuning.items()}},
        "target_train_loss": target,
        "methods": methods,
        "speedup_vs_gradient": speedup,
    }


def plot(results: dict, path) -> None:
    """Loss-vs-time curves, one panel per problem, the target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    colors = {"adjoint": "C0", "fenchel": "C2", "gradient": "C3"}
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        best = res["baseline"]["best_lr"]
        for lr, cur in res["baseline"]["curves_by_lr"].items():
            if float(lr) != best:
                ax.plot(cur["seconds"], cur["train_loss"], color="C3", alpha=0.3, lw=1,
                        label=f"gradient lr={float(lr):g}")
        for method, rec in res["methods"].items():
            label = method + (f" (lr={best:g}, tuned)" if method == "gradient" else "")
            ax.plot(rec["curve"]["seconds"], rec["curve"]["train_loss"], color=colors[method],
                    marker="." if method != "gradient" else None, lw=1.5, label=label)
        ax.axhline(res["target_train_loss"], color="k", ls="--", lw=1, label="target")
        ax.set_yscale("log")
        ax.set_xlabel("wall time since the start of the fit (s)")
        ax.set_ylabel("training loss (equilibrium model)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = make_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    limit_blas(args.blas_threads)
    json_path = args.json or args.out / "bench_training.json"
    start = time.perf_counter()
    results = {name: bench_problem(name, args.quick) for name in PROBLEMS}
    ratio = results["regression_7_1"]["speedup_vs_gradient"]["adjoint"]
    out = {
        "quick": args.quick,
        "seconds": time.perf_counter() - start,
        "acceptance": {"check": "§7.1: adjoint reaches the tuned gradient baseline's final training "
                                "loss ≥ 3× sooner (wall time)",
                       "speedup": ratio, "passed": ratio is not None and ratio >= 3.0},
        "problems": results,
        "provenance": provenance(),
    }
    write_json(json_path, out)
    plot(results, json_path.with_suffix(".png"))
    for name, res in results.items():
        times = {m: r["seconds_to_target"] for m, r in res["methods"].items()}
        print(f"{name}: target {res['target_train_loss']:.5g} (Adam lr={res['baseline']['best_lr']:g}); "
              f"seconds to target {times}; speed-up vs gradient {res['speedup_vs_gradient']}")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}; acceptance {out['acceptance']}")
    return out


if __name__ == "__main__":
    main()
