"""Architecture optimization with certificates (paper §5): test accuracy vs states kept, inputs
kept and rank of A, on digits and on the 5,000-sample MNIST subset.

Teachers as in sim_sparsity.py: sklearn MLPClassifier 64-32 (digits, pixels /16) and 64-32-16
(MNIST, pixels /255), seeded 80/20 splits; SIM with κ = 0.99, λ = 1e-3.
- states kept: formulation group_lasso (column norms of (A; C)) along GROUP_LAMS;
- inputs kept: formulation input_selection (column norms of (B; D)) along GROUP_LAMS;
  both one coupled problem each, certified by our duality gap (reported: max_duality_gap);
- rank: (a) the l1 SIM model with A replaced by its rank-r truncated SVD, rows scaled into the
  κ-ball (robust.low_rank_truncation); (b) formulation low_rank (A = L Rᵀ refitted). For both,
  the model-error bound of Thm 5.1 against the full l1 model (max over the test set of the
  componentwise bound on |x − x̃| and |ŷ − ŷ̃|) next to the measured errors, and a check that the
  bound holds on every test sample.

Full run (the committed results):  python experiments/architecture.py
Smoke run (digits only, fewer points; _quick suffix): python experiments/architecture.py --quick
Writes experiments/results/architecture{,_quick}.{csv,json,md,png}.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import limit_blas, make_parser, provenance, write_csv, write_json, write_markdown
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from implicit_cvx.data import load_dataset
from implicit_cvx.robust import low_rank_truncation, model_error_bound
from implicit_cvx.train.sim import fit_sim

HIDDEN = {"digits": (64, 32), "mnist_5k": (64, 32, 16)}
KAPPA, LAM = 0.99, 1e-3
GROUP_LAMS = {"digits": (1e-3, 1e-2, 3e-2, 1e-1), "mnist_5k": (1e-3, 1e-2, 3e-2)}
RANKS = {"digits": (1, 2, 4, 8, 16, 32), "mnist_5k": (1, 2, 4, 8, 16, 32)}
QUICK = {"datasets": ("digits",), "group_lams": (1e-2,), "ranks": (2, 8), "train": 400, "test": 150}
COLUMNS = ["dataset", "kind", "param", "states", "inputs", "rank", "test_accuracy",
           "teacher_accuracy", "max_duality_gap", "state_bound", "state_error", "output_bound",
           "output_error", "bound_holds", "seconds"]


def _data(name: str, quick: bool):
    ds = load_dataset(name, seed=0)
    (U, y), (U_test, y_test) = ds.split("train"), ds.split("test")
    if quick:
        U, y, U_test, y_test = U[:QUICK["train"]], y[:QUICK["train"]], U_test[:QUICK["test"]], y_test[:QUICK["test"]]
    return U, y, U_test, y_test


def _sim(U, y, U_test, y_test, teacher, **kw):
    t = time.perf_counter()
    res = fit_sim(U, y, teacher=teacher, task="classification", kappa=KAPPA, lam=LAM,
                  U_test=U_test, Y_test=y_test, **kw)
    return res, time.perf_counter() - t


def _row(name, kind, param, model, summary, seconds, teacher_acc, U_test, y_test, ref=None):
    row = {"dataset": name, "kind": kind, "param": param, "states": model.n_states,
           "inputs": summary.get("n_inputs_kept", model.n_inputs) if summary else model.n_inputs,
           "rank": int(np.linalg.matrix_rank(model.A, tol=1e-10)),
           "test_accuracy": float(np.mean(model.predict(U_test).argmax(axis=1) == y_test)),
           "teacher_accuracy": teacher_acc, "seconds": seconds,
           "max_duality_gap": summary.get("max_duality_gap") if summary else None}
    if ref is not None:  # Thm 5.1: the full model `ref` vs the approximation `model`
        bound = model_error_bound(ref, model, U_test)
        X, Xa = ref.equilibrium(U_test, tol=1e-12), model.equilibrium(U_test, tol=1e-12)
        dx, dy = np.abs(X - Xa), np.abs(ref.output(X, U_test) - model.output(Xa, U_test))
        row.update(state_bound=float(bound.state.max()), state_error=float(dx.max()),
                   output_bound=float(bound.output.max()), output_error=float(dy.max()),
                   bound_holds=bool(np.all(dx <= bound.state) and np.all(dy <= bound.output)))
    return row


def run_dataset(name: str, quick: bool) -> list[dict]:
    U, y, U_test, y_test = _data(name, quick)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier(HIDDEN[name], random_state=0, max_iter=100 if quick else 300).fit(U, y)
    teacher_acc = float(teacher.score(U_test, y_test))
    base, sec = _sim(U, y, U_test, y_test, teacher)
    rows = [_row(name, "full (l1)", None, base.model, base.summary, sec, teacher_acc, U_test, y_test)]
    _print(rows[-1])
    lams = QUICK["group_lams"] if quick else GROUP_LAMS[name]
    for kind, form in (("states kept", "group_lasso"), ("inputs kept", "input_selection")):
        for g in lams:
            res, sec = _sim(U, y, U_test, y_test, teacher, formulation=form, group_lam=g)
            rows.append(_row(name, kind, g, res.model, res.summary, sec, teacher_acc, U_test, y_test))
            _print(rows[-1])
    for r in QUICK["ranks"] if quick else RANKS[name]:
        t = time.perf_counter()
        approx, _ = low_rank_truncation(base.model, min(r, base.model.n_states), KAPPA)
        rows.append(_row(name, "rank (truncated SVD)", r, approx, None, time.perf_counter() - t,
                         teacher_acc, U_test, y_test, ref=base.model))
        _print(rows[-1])
        res, sec = _sim(U, y, U_test, y_test, teacher, formulation="low_rank", rank=r)
        rows.append(_row(name, "rank (low_rank refit)", r, res.model, res.summary, sec, teacher_acc,
                         U_test, y_test, ref=base.model))
        _print(rows[-1])
    return rows


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in rows})
    panels = (("states kept", "states"), ("inputs kept", "inputs"), ("rank", "rank"))
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 4.2 * len(names)), squeeze=False)
    for ax_row, name in zip(axes, names, strict=True):
        pts = [r for r in rows if r["dataset"] == name]
        full = next(r for r in pts if r["kind"] == "full (l1)")
        for ax, (kind, key) in zip(ax_row, panels, strict=True):
            for k in sorted({r["kind"] for r in pts if r["kind"].startswith(kind)}):
                sel = sorted((r for r in pts if r["kind"] == k), key=lambda r: r[key])
                ax.plot([r[key] for r in sel], [100 * r["test_accuracy"] for r in sel], "o-", label=k)
            ax.axhline(100 * full["test_accuracy"], color="k", ls=":", lw=0.8, label="full SIM (l1)")
            ax.axhline(100 * full["teacher_accuracy"], color="gray", ls="--", lw=0.8, label="teacher MLP")
            ax.set_xlabel(key + (" of A" if key == "rank" else " kept"))
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{name}: accuracy vs {key}")
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    suffix = "_quick" if args.quick else ""
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with limit_blas(args.blas_threads):
        for name in QUICK["datasets"] if args.quick else ("digits", "mnist_5k"):
            rows += run_dataset(name, args.quick)
    write_csv(args.out / f"architecture{suffix}.csv", rows, COLUMNS)
    command = "python experiments/architecture.py" + (" --quick" if args.quick else "")
    write_markdown(args.out / f"architecture{suffix}.md", "Architecture optimization with certificates",
                   rows, COLUMNS, notes=f"Command: `{command}`. Thm 5.1 bounds are against the full "
                   "l1 SIM model, max over the test set; bound_holds checks every sample and entry.")
    plot(rows, args.out / f"architecture{suffix}.png")
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "kappa": KAPPA, "lam": LAM, "hidden": {k: list(v) for k, v in HIDDEN.items()}, "rows": rows}
    write_json(args.out / f"architecture{suffix}.json", report)
    print(f"done in {report['seconds']:.1f} s")
    return report


def _print(r: dict) -> None:
    extra = "" if r.get("state_bound") is None else (
        f"  Thm 5.1: |x − x̃| ≤ {r['state_bound']:.3g} (measured {r['state_error']:.3g}), "
        f"|ŷ − ŷ̃| ≤ {r['output_bound']:.3g} (measured {r['output_error']:.3g}), holds: {r['bound_holds']}")
    print(f"{r['dataset']:6s} {r['kind']:22s} {str(r['param']):>6s}: acc {100 * r['test_accuracy']:.1f}%  "
          f"states {r['states']}, inputs {r['inputs']}, rank {r['rank']}  ({r['seconds']:.1f} s){extra}")


if __name__ == "__main__":
    main()
