"""Clean vs certified accuracy on digits as the sensitivity bound ‖S‖_∞ ≤ s tightens (paper §4).

s_bound constrains the (C, D) step (robust/training.py): for SIM (fit_sim, formulation l1,
λ = 1e-4, κ = 0.99, teacher sklearn MLPClassifier 64-64-10) in its (C, D) refit, and for the
adjoint method (fit_adjoint, n = 64, D = 0, cross-entropy, anchor_mu = 1e-2, lam_l2 = 1e-2,
κ = 0.95, MAX_OUTER iterations) in every (C, D) step. s = None is the unconstrained reference.
Robust training on both steps ("AB+CD" rows): the same, with ‖b_i‖_1 ≤ β = BETA[method] on
the rows of B in the (A, B) step as well (SIM formulation robust with beta; adjoint option beta),
so each state's ℓ∞ gain from u is ≤ β/(1 − κ) whatever the (C, D) step does.
Certified accuracy by the interval method on the test split at EPS (pixels /16, i.e. ε in [0, 1]
pixel units, balls clipped to [0, 1]). Also draws the input importance (rows and column sums of S)
of the plain and of one robust SIM model.

Full run (the committed results):  python experiments/robust_tradeoff.py
Smoke run (< 1 min; _quick suffix): python experiments/robust_tradeoff.py --quick
Writes experiments/results/robust_tradeoff{,_quick}.{csv,png,json} and
robust_importance_{plain,s<s>}{,_quick}.png.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import limit_blas, make_parser, provenance, write_csv, write_json
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from implicit_cvx.data import load_dataset
from implicit_cvx.robust import (
    certify,
    lipschitz_bound,
    plot_importance,
    s_norm_bound,
    sensitivity_matrix,
)
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.sim import fit_sim

EPS = (0.005, 0.01, 0.02, 0.05)
S_SIM = (None, 400.0, 200.0, 100.0, 50.0, 30.0, 20.0, 10.0, 5.0)
S_ADJOINT = (None, 100.0, 50.0, 20.0, 10.0)
BETA = {"sim": 2.0, "adjoint": 2.0}  # the (A, B) ball of the two-step rows (plain ‖B‖_∞: 16, 12)
STEPS = ("CD", "AB+CD")  # the (C, D) step only; both steps
MAX_OUTER = 15
ROBUST_EXAMPLE = 50.0  # the robust SIM model whose importance images are drawn
QUICK = {"s_sim": (None, 50.0, 10.0), "s_adjoint": (None, 20.0), "max_outer": 3, "test": 100}
COLUMNS = ["method", "steps", "s_bound", "beta", "clean_accuracy", *(f"certified_{e:g}" for e in EPS),
           "sensitivity_inf_norm", "lipschitz_bound", "inf_norm_B", "seconds_fit", "outer_iterations"]


def evaluate(method, steps, s, model, U, y, seconds, extra) -> dict:
    res = certify(model, U, y, EPS, "interval", domain=(0.0, 1.0))
    return {"method": method, "steps": steps, "s_bound": s,
            "beta": BETA[method] if steps != STEPS[0] else None,
            "inf_norm_B": float(np.abs(model.B).sum(axis=1).max()), "clean_accuracy": res.clean_accuracy,
            **{f"certified_{e:g}": res.certified_accuracy[e] for e in res.eps},
            "sensitivity_inf_norm": s_norm_bound(model),
            "lipschitz_bound": lipschitz_bound(model).value, "seconds_fit": seconds, **extra}


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, len(methods), figsize=(5.8 * len(methods), 4.3), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        ref = next(r for r in rows if r["method"] == method and r["s_bound"] is None and r["steps"] == STEPS[0])
        for steps, style in zip(STEPS, ("o-", "s--"), strict=True):
            pts = sorted((r for r in rows if r["method"] == method and r["steps"] == steps
                          and r["s_bound"] is not None), key=lambda r: r["s_bound"])
            x = [r["s_bound"] for r in pts]
            tag = "" if steps == STEPS[0] else f", + ‖b_i‖₁ ≤ {BETA[method]:g}"
            ax.plot(x, [100 * r["clean_accuracy"] for r in pts], "k" + style, label="clean" + tag)
            for e, color in zip(EPS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True):
                key = f"certified_{e:g}"
                ax.plot(x, [100 * r[key] for r in pts], style, color=color,
                        label=f"certified ε = {e:g}{tag}" if e in (EPS[0], EPS[-1]) or not tag else None)
                if steps == STEPS[0]:
                    ax.axhline(100 * ref[key], color=color, ls=":", lw=0.8)
        ax.axhline(100 * ref["clean_accuracy"], color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("s_bound (‖S‖_∞ ≤ s); dotted: unconstrained, "
                      f"‖S‖_∞ = {ref['sensitivity_inf_norm']:.3g}")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits, {method}: solid (C, D) only, dashed both steps")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    quick = args.quick
    suffix = "_quick" if quick else ""
    t0 = time.perf_counter()
    ds = load_dataset("digits", seed=0)
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    if quick:
        keep = np.sort(np.random.default_rng(1).permutation(len(y_test))[:QUICK["test"]])
        U_test, y_test = U_test[keep], y_test[keep]
    s_sim = QUICK["s_sim"] if quick else S_SIM
    s_adj = QUICK["s_adjoint"] if quick else S_ADJOINT
    max_outer = QUICK["max_outer"] if quick else MAX_OUTER
    rows, sim_models = [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    with limit_blas(args.blas_threads):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            teacher = MLPClassifier((64,), random_state=0, max_iter=80 if quick else 300).fit(U, y)
        for steps in STEPS:
            two = steps != STEPS[0]
            for s in s_sim:
                t = time.perf_counter()
                kw = dict(formulation="robust", beta=BETA["sim"]) if two else {}
                model = fit_sim(U, y, teacher=teacher, task="classification", kappa=0.99, lam=1e-4,
                                s_bound=s, **kw).model
                if not two:
                    sim_models[s] = model
                rows.append(evaluate("sim", steps, s, model, U_test, y_test, time.perf_counter() - t, {}))
                _print(rows[-1])
            for s in s_adj:
                t = time.perf_counter()
                res = fit_adjoint(U, y, task="classification", loss="cross_entropy", n_states=64,
                                  include_D=False, anchor_mu=1e-2, lam_l2=1e-2, kappa=0.95,
                                  max_outer=max_outer, seed=0, s_bound=s,
                                  beta=BETA["adjoint"] if two else None)
                rows.append(evaluate("adjoint", steps, s, res.model, U_test, y_test,
                                     time.perf_counter() - t,
                                     {"outer_iterations": res.summary["outer_iterations"]}))
                _print(rows[-1])
        for s in (None, ROBUST_EXAMPLE):
            name = "plain" if s is None else f"s{s:g}"
            label = ("unconstrained" if s is None else f"s_bound = {s:g}")
            S = sensitivity_matrix(sim_models[s])
            plot_importance(S, (8, 8), args.out / f"robust_importance_{name}{suffix}.png",
                            title=f"digits SIM model, {label}: input importance from S "
                                  f"(‖S‖_∞ = {S.sum(axis=1).max():.3g})")
    write_csv(args.out / f"robust_tradeoff{suffix}.csv", rows, COLUMNS)
    plot(rows, args.out / f"robust_tradeoff{suffix}.png")
    command = "python experiments/robust_tradeoff.py" + (" --quick" if quick else "")
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "dataset": "digits", "eps_units": ds.units, "eps": list(EPS), "certify_method":
              "interval", "domain": [0.0, 1.0], "test_samples": int(len(y_test)),
              "teacher_test_accuracy": float(teacher.score(U_test, y_test)), "beta": BETA,
              "rows": rows}
    write_json(args.out / f"robust_tradeoff{suffix}.json", report)
    print(f"done in {report['seconds']:.1f} s")
    return report


def _print(r: dict) -> None:
    print(f"{r['method']:8s} {r['steps']:10s} s = {str(r['s_bound']):>6s}: clean {100 * r['clean_accuracy']:.1f}%  "
          + "  ".join(f"ε={e:g}: {100 * r[f'certified_{e:g}']:.1f}%" for e in EPS)
          + f"  ‖S‖_∞ ≤ {r['sensitivity_inf_norm']:.4g}  ({r['seconds_fit']:.1f} s)")


if __name__ == "__main__":
    main()
