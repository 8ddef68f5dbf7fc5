"""Robust training: bound the sensitivity ‖S‖_∞ ≤ s while fitting, and read the clean vs
certified trade-off.

S = |C|(I − |A|)⁻¹|B| + |D| bounds how far the outputs can move per unit input change (paper
Thm 4.3). For fixed (A, B) the bound ‖S‖_∞ ≤ s is a convex constraint on (C, D), so `s_bound`
adds it to the certified (C, D) fit (method `sim` here, every (C, D) step of `adjoint` likewise).
We sweep s and certify each model on the digits test images, with the cheap interval method and
with linear bound propagation (ε as a fraction of the pixel range, balls clipped to the pixel
domain).

    python examples/robust_training.py            # the page's output and figure
    python examples/robust_training.py --quick    # a smaller run (the tests)
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from implicit_cvx.data import load_dataset
from implicit_cvx.robust import certify, s_norm_bound
from implicit_cvx.train.sim import fit_sim

IMG = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "img"


def main(quick: bool, out: Path) -> None:
    ds = load_dataset("digits", seed=0)  # model units: pixels / 16 in [0, 1]
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    m = 100 if quick else len(y_test)
    bounds = [None, 50.0] if quick else [None, 200.0, 100.0, 50.0, 20.0, 10.0]
    columns = [("interval", 0.02), ("linear", 0.02), ("linear", 0.05)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier((64,), max_iter=300, random_state=0).fit(U, y)
    print(f"certified accuracy of SIM models on {m} test images:")
    print("s_bound   ‖S‖_∞    clean" + "".join(f"  {meth} ε={e:g}" for meth, e in columns))
    rows = []
    for s in bounds:
        model = fit_sim(U, y, teacher=teacher, task="classification", kappa=0.99, lam=1e-4,
                        s_bound=s, seed=0).model
        certified = []
        for method, e in columns:
            res = certify(model, U_test[:m], y_test[:m], [e], method=method, domain=(0.0, 1.0))
            certified.append(res.certified_accuracy[e])
        rows.append((s, res.clean_accuracy, certified))
        print(f"{str(s):>7}  {s_norm_bound(model):6.1f}  {res.clean_accuracy:7.3f}"
              + "".join(f"  {a:{len(f'{meth} ε={e:g}')}.3f}"
                        for a, (meth, e) in zip(certified, columns, strict=True)))

    fig, ax = plt.subplots(figsize=(6, 4))
    constrained = [r for r in rows if r[0] is not None]
    xs = [r[0] for r in constrained]
    ax.plot(xs, [r[1] for r in constrained], "ko-", label="clean")
    for k, (method, e) in enumerate(columns):
        ax.plot(xs, [r[2][k] for r in constrained], "o-", label=f"certified ({method}), ε = {e:g}")
        ax.axhline(rows[0][2][k], ls=":", color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set(xlabel="s_bound (‖S‖_∞ ≤ s); dotted: unconstrained", ylabel="accuracy",
           title="SIM on digits: clean vs certified accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "robust_training.png", dpi=90)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two bounds, 100 images")
    parser.add_argument("--out", type=Path, default=IMG, help="where the figure goes")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        main(args.quick, args.out)
