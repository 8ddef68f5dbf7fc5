"""Convert a scikit-learn MLP (with its scaler) into an implicit model and certify it.

The Pipeline's MinMaxScaler is folded into the implicit model's weights, so the model takes raw
pixels in [0, 16]. We check it predicts exactly as the Pipeline does, then compute certified
accuracy in ℓ∞ balls of radius ε (as a fraction of the pixel range, i.e. ε·16 raw pixel units)
with three methods of increasing tightness, and look at the bound that holds for every input.

    python examples/convert_certify_mlp.py            # the page's output and figure
    python examples/convert_certify_mlp.py --quick    # a smaller run (the tests)
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

import implicit_cvx as ic
from implicit_cvx.robust import certify, lipschitz_bound

IMG = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "img"


def main(quick: bool, out: Path) -> None:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0,
                                                        stratify=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = make_pipeline(MinMaxScaler(), MLPClassifier((64, 32), max_iter=300, random_state=0))
        pipe.fit(X_train, y_train)
    model = ic.from_sklearn(pipe)  # the scaler is folded in: the model takes raw pixels
    print(model)
    print("well-posed because:", ic.wellposedness_report(model.A)["reason"])
    same = np.array_equal(model.predict(X_test).argmax(axis=1), pipe.predict(X_test))
    print(f"same predictions as the Pipeline on {len(X_test)} test images: {same}")
    print(f"Lipschitz bound (ℓ∞ → ℓ∞, raw pixels): {lipschitz_bound(model).value:.3g}")

    m = 60 if quick else len(X_test)
    eps = [0.01, 0.02, 0.05] if quick else [0.005, 0.01, 0.02, 0.03, 0.05, 0.08]
    methods = ["interval", "linear"] if quick else ["interval", "linear", "lp"]
    scale = np.full(X.shape[1], 16.0)  # ε as a fraction of each pixel's range [0, 16]
    print(f"certified accuracy on {m} test images (ε as a fraction of the pixel range):")
    print("method    " + "".join(f"{e:>8g}" for e in eps))
    curves = {}
    for method in methods:
        res = certify(model, X_test[:m], y_test[:m], eps, method=method, domain=(0.0, 16.0),
                      eps_scale=scale)
        curves[method] = (res.clean_accuracy, [res.certified_accuracy[e] for e in eps])
        print(f"{method:<10}" + "".join(f"{a:8.3f}" for a in curves[method][1]))
    print(f"clean accuracy {res.clean_accuracy:.3f}")

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, (clean, acc) in curves.items():
        ax.plot([0.0, *eps], [clean, *acc], "o-", label=method)
    ax.set(xlabel="ε (fraction of the pixel range)", ylabel="certified accuracy",
           title=f"converted MLP 64-64-32-10, {m} digits test images", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "convert_certify_mlp.png", dpi=90)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, radii and methods")
    parser.add_argument("--out", type=Path, default=IMG, help="where the figure goes")
    args = parser.parse_args()
    with threadpool_limits(limits=1):
        main(args.quick, args.out)
