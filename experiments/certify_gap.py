"""How far certificates are from attacks: per model and ε, the share of test samples certified by
each method, falsified by PGD and by exact verification, the unknown band, and time per sample.

Models (digits, the configs' split: seed 0, test_size 0.2, 360 test samples):
  adjoint  the README's model, fitted here with `implicit-cvx fit configs/adjoint_digits.yaml`;
  sim      `implicit-cvx fit configs/sim_digits.yaml`;
  mlp      a scikit-learn MLPClassifier (64, 32) on pixels/16, converted with `from_sklearn`.
ε ∈ {0.01, 0.02, 0.05} in pixel units of [0, 1] (pixels/16), inputs clipped to [0, 1] pixels;
`model_units` converts to each model's input units (fitted models take raw pixels).
Methods: interval, lp, linear, linear_alpha, exact (certified / falsified / unknown). Attacks:
PGD with `--restarts` random starts × `--steps` steps, alternating margin and cross-entropy
losses. Every share is of ALL test samples; clean errors count as falsified (the clean input is
a counterexample), so exact's certified + falsified + unknown = 1. Soundness is checked: no
sample certified by any method may be falsified by PGD (reported as `violations`).

Full run (about an hour on the shared 2-core machine):
    python experiments/certify_gap.py
writes experiments/results/certify_gap.{json,csv,md,png}. Smoke run: --quick (small models,
20 samples, two radii).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import limit_blas, make_parser, provenance, write_csv, write_json, write_markdown

from implicit_cvx.config import load_yaml
from implicit_cvx.data import load_dataset
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import certify, pgd_attack

ROOT = Path(__file__).resolve().parents[1]
EPS = (0.01, 0.02, 0.05)
METHODS = ("interval", "lp", "linear", "linear_alpha", "exact")
PIXEL_MAX = 16.0  # digits pixels are integers 0..16


def model_units(model, X_raw: np.ndarray, eps_pixels01: float):
    """(inputs, radius, domain) in the model's input units for ε in pixel units of [0, 1].

    Fitted models carry their input transform (pixels/16, metadata "input") and take raw pixels
    0..16: inputs X, radius 16·ε, domain [0, 16]. The converted MLP was trained on pixels/16 and
    takes them: inputs X/16, radius ε, domain [0, 1]. Either way the ball is the same set of images.
    """
    if (model.metadata.get("input") or {}).get("transform") is not None:
        return X_raw, PIXEL_MAX * eps_pixels01, (0.0, PIXEL_MAX)
    return X_raw / PIXEL_MAX, eps_pixels01, (0.0, 1.0)


# ---- models --------------------------------------------------------------------------------------
def fit_config(name: str, changes: dict, out: Path) -> ImplicitModel:
    """`implicit-cvx fit` on configs/<name>.yaml with nested `changes` applied; the saved model."""
    cfg = load_yaml(ROOT / "configs" / f"{name}.yaml")
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values) if isinstance(values, dict) else cfg.update({section: values})
    path = out / f"{name}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-m", "implicit_cvx.cli", "fit", str(path), "--out", str(out / name),
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True, text=True)
    return ImplicitModel.load(out / name / "model.npz")


def _mlp(ds, hidden, max_iter: int) -> ImplicitModel:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from implicit_cvx.convert import from_sklearn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden, max_iter=max_iter, random_state=0)
        mlp.fit(ds.X[ds.train_index] / PIXEL_MAX, ds.encoded_targets()[ds.train_index])
    model = from_sklearn(mlp)
    model.metadata["preprocessing"] = {"kind": "scale", "offset": 0.0, "scale": 1 / PIXEL_MAX}
    return model


def build_models(quick: bool, out: Path, ds) -> dict:
    """The three models (small equivalents with --quick)."""
    if quick:
        small = {"max_train": 300}
        return {
            "adjoint": fit_config("adjoint_digits", {"dataset": small, "model": {"n_states": 16},
                                                       "adjoint": {"max_outer": 3, "batch_size": 128}}, out),
            "sim": fit_config("sim_digits", {"dataset": small, "sim": {"teacher_hidden": [16]}}, out),
            "mlp": _mlp(ds, (16,), 200),
        }
    return {"adjoint": fit_config("adjoint_digits", {}, out), "sim": fit_config("sim_digits", {}, out),
            "mlp": _mlp(ds, (64, 32), 300)}


# ---- measurements --------------------------------------------------------------------------------
def _pgd_falsified(model, U, y, radius, domain, restarts: int, steps: int) -> np.ndarray:
    """Samples whose label some PGD run changes (clean errors included)."""
    broken = np.zeros(len(y), dtype=bool)
    for r in range(restarts):
        res = pgd_attack(model, U, y, radius, steps=steps, domain=domain, rng=r,
                         loss="margin" if r % 2 == 0 else "ce", random_start=r > 0)
        broken |= ~res.correct | res.changed
    return broken


def measure(model, U, y, radius, domain, args) -> dict:
    """Shares and seconds per sample of every method and of PGD at one radius."""
    m = len(y)
    row, certified = {}, {}
    for method in METHODS:
        t0, c0 = time.perf_counter(), time.process_time()
        res = certify(model, U, y, [radius], method, domain, time_limit=args.time_limit)
        row[f"{method}_seconds_per_sample"] = (time.perf_counter() - t0) / m
        row[f"{method}_cpu_seconds_per_sample"] = (time.process_time() - c0) / m
        row[method] = res.certified_accuracy[radius]
        certified[method] = res.certified[:, 0]
        if method == "exact":
            row["exact_falsified"], row["exact_unknown"] = res.falsified[radius], res.unknown[radius]
            correct = res.correct.sum()
            row["exact_certified_of_correct"] = float(res.certified[:, 0].sum() / correct)
            row["exact_falsified_of_correct"] = float(((res.status[:, 0] == "falsified") & res.correct).sum() / correct)
        row["clean_accuracy"] = res.clean_accuracy
    t0 = time.perf_counter()
    broken = _pgd_falsified(model, U, y, radius, domain, args.restarts, args.steps)
    row["pgd_seconds_per_sample"] = (time.perf_counter() - t0) / m
    row["pgd_falsified"] = float(broken.mean())
    row["violations"] = int(sum((certified[k] & broken).sum() for k in METHODS))
    row["unknown_after_linear_and_pgd"] = float((~certified["linear"] & ~broken).mean())
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rs = [r for r in rows if r["model"] == name]
        eps = [r["eps"] for r in rs]
        for method, style in zip(METHODS, ("s:", "^--", "o-", "d-", "k*-"), strict=True):
            ax.plot(eps, [r[method] for r in rs], style, label=f"certified: {method}")
        ax.plot(eps, [1 - r["pgd_falsified"] for r in rs], "rv--", label="1 − falsified (PGD)")
        ax.plot(eps, [1 - r["exact_falsified"] for r in rs], "r-", lw=2, label="1 − falsified (exact)")
        ax.fill_between(eps, [r["linear"] for r in rs], [1 - r["pgd_falsified"] for r in rs], color="0.85",
                        label="unknown after linear + PGD")
        ax.set_title(f"{name} (clean {rs[0]['clean_accuracy']:.3f})")
        ax.set_xlabel("ε (pixels/16)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of test samples")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS = ["model", "eps", "clean_accuracy", "interval", "lp", "linear", "linear_alpha", "exact",
           "exact_falsified", "exact_unknown", "pgd_falsified", "unknown_after_linear_and_pgd", "violations",
           "exact_certified_of_correct", "exact_falsified_of_correct", "interval_seconds_per_sample",
           "lp_seconds_per_sample", "linear_seconds_per_sample", "linear_alpha_seconds_per_sample",
           "exact_seconds_per_sample", "pgd_seconds_per_sample", "linear_cpu_seconds_per_sample"]


def main(argv=None) -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="test samples (default all 360; 20 with --quick)")
    parser.add_argument("--restarts", type=int, default=None, help="PGD runs (default 10; 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps per run (default 100; 20 with --quick)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="exact: seconds per sample and ε")
    args = parser.parse_args(argv)
    quick = args.quick
    args.samples = args.samples or (20 if quick else None)
    args.restarts = args.restarts or (2 if quick else 10)
    args.steps = args.steps or (20 if quick else 100)
    eps_list = (0.02, 0.05) if quick else EPS
    limit_blas(args.blas_threads)
    start = time.perf_counter()
    ds = load_dataset("digits", seed=0, test_size=0.2)
    X, y = ds.X[ds.test_index][: args.samples], ds.encoded_targets()[ds.test_index][: args.samples]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(quick, Path(tmp), ds)
        for name, model in models.items():
            for e in eps_list:
                U, radius, domain = model_units(model, X, e)
                row = {"model": name, "eps": e, "eps_units": "pixels/16 (inputs in [0, 1])",
                       "radius_model_units": radius, "samples": len(y), "n_states": model.n_states}
                row.update(measure(model, U, y, radius, domain, args))
                rows.append(row)
                print(f"{name} ε={e}: " + ", ".join(f"{k} {row[k]:.3f}" for k in
                      ("clean_accuracy", "interval", "lp", "linear", "linear_alpha", "exact", "exact_falsified",
                       "exact_unknown", "pgd_falsified")) + f"; violations {row['violations']}", flush=True)
    stem = "certify_gap_quick" if quick else "certify_gap"
    out = args.out
    write_csv(out / f"{stem}.csv", rows, COLUMNS)
    write_markdown(out / f"{stem}.md", "Certified vs falsified shares (all test samples)", rows, COLUMNS,
                   notes=__doc__)
    plot(rows, out / f"{stem}.png")
    write_json(args.json or out / f"{stem}.json",
               {"experiment": "certify_gap", "quick": quick, "rows": rows, "provenance": provenance(argv),
                "settings": {"restarts": args.restarts, "steps": args.steps, "time_limit": args.time_limit,
                             "samples": len(y), "eps": list(eps_list)},
                "seconds": time.perf_counter() - start})
    print(f"wrote {out / stem}.{{csv,md,png,json}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
