"""Certified accuracy vs ε (paper §4 certificates) for box / interval / lp on two digits models:

- sim: fit_sim (formulation l1, λ = 1e-4, κ = 0.99) on the states of an sklearn MLPClassifier
  64-64-10 teacher;
- adjoint: fit_adjoint from scratch (n = 64, D = 0, cross-entropy, anchor_mu = 1e-2,
  lam_l2 = 1e-2, κ = 0.95, MAX_OUTER outer iterations).

Digits pixels /16, so ε is in [0, 1] pixel units; balls are clipped to the domain [0, 1]. box and
interval run on the whole test split (360 samples); lp (which solves LPs only where interval does
not certify) on a seeded random subsample of at most LP_SAMPLES test samples, stated in the
outputs. On the lp subsample, ℓ∞ PGD (40 steps, CE and margin losses) runs at every ε, and the
script asserts that no sample certified by any method is broken.

Full run (the committed results):  python experiments/certified_curves.py
Smoke run (< 1 min; _quick suffix; 100 test samples, 3 ε, lp and PGD (10 steps) on 10 samples,
3 adjoint iterations, shorter teacher training):  python experiments/certified_curves.py --quick
Writes experiments/results/certified_curves{,_quick}.{csv,png,json}.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import limit_blas, make_parser, provenance, write_csv, write_json
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from implicit_cvx.data import load_dataset
from implicit_cvx.robust import certify, pgd_attack
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.sim import fit_sim

EPS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05)
QUICK = {"eps": (0.0, 0.005, 0.02), "test": 100, "lp": 10, "pgd_steps": 10}
METHODS = ("box", "interval", "lp")
LP_SAMPLES = 200
MAX_OUTER = 15
COLUMNS = ["model", "method", "eps", "certified_accuracy", "clean_accuracy", "samples",
           "pgd_error_pct", "seconds"]


def train_models(U, y, quick: bool) -> dict:
    """{name: (model, seconds)} for the SIM and the adjoint model."""
    out = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier((64,), random_state=0, max_iter=80 if quick else 300).fit(U, y)
    res = fit_sim(U, y, teacher=teacher, task="classification", kappa=0.99, lam=1e-4)
    out["sim"] = (res.model, time.perf_counter() - t0)
    t0 = time.perf_counter()
    res = fit_adjoint(U, y, task="classification", loss="cross_entropy", n_states=64,
                      include_D=False, anchor_mu=1e-2, lam_l2=1e-2, kappa=0.95,
                      max_outer=3 if quick else MAX_OUTER, seed=0)
    out["adjoint"] = (res.model, time.perf_counter() - t0)
    return out


def curves(name, model, U, y, lp_index, eps_list, pgd_steps: int) -> list[dict]:
    """Certified accuracy rows for every method and ε, with the PGD soundness check on lp's subset
    (pgd_error_pct: share of that subset misclassified at the worst PGD point, clean errors included)."""
    rows, certified_any = [], np.zeros((lp_index.size, len(eps_list)), dtype=bool)
    for method in METHODS:
        idx = lp_index if method == "lp" else np.arange(len(y))
        t0 = time.perf_counter()
        res = certify(model, U[idx], y[idx], eps_list, method, domain=(0.0, 1.0))
        seconds = time.perf_counter() - t0
        pos = np.searchsorted(idx, lp_index)  # lp's subsample inside this run
        certified_any |= res.certified[pos]
        for eps in res.eps:
            rows.append({"model": name, "method": method, "eps": eps,
                         "certified_accuracy": res.certified_accuracy[eps],
                         "clean_accuracy": res.clean_accuracy, "samples": int(idx.size),
                         "seconds": seconds})
        print(f"  {name:8s} {method:9s} ({idx.size} samples, {seconds:6.1f} s): " + "  ".join(
            f"{e:g}:{100 * res.certified_accuracy[e]:.1f}" for e in res.eps))
    Ul, yl = U[lp_index], y[lp_index]
    for k, eps in enumerate(eps_list):
        broken = np.zeros(len(yl), dtype=bool)
        for loss in ("ce", "margin"):
            a = pgd_attack(model, Ul, yl, eps, steps=pgd_steps, domain=(0.0, 1.0), rng=0, loss=loss)
            broken |= a.adversarial_margins <= 0
        bad = np.flatnonzero(broken & certified_any[:, k])
        assert bad.size == 0, f"{name}: PGD broke samples {bad.tolist()} certified at ε = {eps}"
        for r in rows:
            if r["eps"] == eps and r["method"] == "lp":
                r["pgd_error_pct"] = 100 * float(broken.mean())
    return rows


def plot(rows, lp_samples: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        for method, style in zip(METHODS, ("s--", "o-", "^-"), strict=True):
            pts = [r for r in rows if r["model"] == name and r["method"] == method]
            label = method + (f" ({lp_samples} samples)" if method == "lp" else "")
            ax.plot([r["eps"] for r in pts], [100 * r["certified_accuracy"] for r in pts], style,
                    label=label)
        pgd = [r for r in rows if r["model"] == name and r["method"] == "lp"]
        ax.plot([r["eps"] for r in pgd], [100 - r["pgd_error_pct"] for r in pgd], "k:",
                label=f"accuracy under PGD ({lp_samples} samples)")
        ax.set_xlabel("ε (ℓ∞, pixels scaled to [0, 1])")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"digits, {name} model (clean {100 * pts[0]['clean_accuracy']:.1f}%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    stem = "certified_curves_quick" if args.quick else "certified_curves"
    t0 = time.perf_counter()
    ds = load_dataset("digits", seed=0)
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    eps_list = QUICK["eps"] if args.quick else EPS
    if args.quick:  # a seeded random test subset
        keep = np.sort(np.random.default_rng(1).permutation(len(y_test))[:QUICK["test"]])
        U_test, y_test = U_test[keep], y_test[keep]
    n_lp = QUICK["lp"] if args.quick else LP_SAMPLES
    pgd_steps = QUICK["pgd_steps"] if args.quick else 40
    lp_index = np.sort(np.random.default_rng(0).permutation(len(y_test))[:n_lp])
    rows, meta = [], {}
    with limit_blas(args.blas_threads):
        models = train_models(U, y, args.quick)
        for name, (model, seconds) in models.items():
            print(f"{name}: trained in {seconds:.1f} s")
            meta[name] = {"seconds_train": seconds, "n_states": model.n_states, "nnz": model.nnz}
            rows += curves(name, model, U_test, y_test, lp_index, eps_list, pgd_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{stem}.csv", rows, COLUMNS)
    plot(rows, n_lp, args.out / f"{stem}.png")
    command = "python experiments/certified_curves.py" + (" --quick" if args.quick else "")
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "dataset": "digits", "eps_units": ds.units, "domain": [0.0, 1.0], "eps": list(eps_list),
              "lp_samples": n_lp, "lp_subsample_seed": 0, "test_samples": int(len(y_test)),
              "pgd": f"{pgd_steps} steps, CE and margin losses, seed 0, on the lp subsample; no "
                     "certified sample broken (asserted)", "models": meta, "rows": rows}
    write_json(args.out / f"{stem}.json", report)
    print(f"done in {report['seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
