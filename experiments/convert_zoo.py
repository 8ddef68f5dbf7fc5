"""Converter zoo: every converter on a small real network — do the outputs agree to 1e-10, which
well-posedness condition holds, how big is the implicit model, and how does one equilibrium solve
compare in time with the original network's forward pass.

Networks, on digits (8×8 images, pixels /16, the seeded 80/20 split of `load_dataset`), trained
briefly with Adam (float32), then compared in float64 on the test set:
- mlp_sklearn   MLPClassifier(64, 32)                                        from_sklearn
- mlp_torch     Linear-ReLU-Linear-Tanh-Linear                               from_torch
- cnn_torch     Conv-BN-ReLU-MaxPool-Conv-ReLU-MaxPool-Flatten-Linear        from_torch
- resnet_torch  Conv-BN-ReLU, 3 residual blocks (Conv-BN-ReLU-Conv-BN + x), MaxPool, Linear
                                                                             from_torch
- rnn_torch     nn.RNN(tanh) over the 8 image rows + Linear head             from_rnn
- lstm_torch    nn.LSTM over the 8 image rows + Linear head                  from_lstm
- cascade       the CNN split after its features: cascade(features, head)    cascade
- sum_parallel  mlp_sklearn + mlp_torch logits summed                        stack_parallel
- gated         σ(mlp_sklearn logits) ∘ mlp_torch logits                     gated
- feedback      mlp_torch's hidden map in closed loop with a small linear feedback
                (direct reference: the loop iterated to convergence)        feedback

Outputs are compared at an equilibrium solved to 1e-13 (feed-forward models are exact in one
sweep anyway). Times are the best of several repeats of `predict` (default tolerance 1e-10) on
the test set with one BLAS / torch thread on a shared 2-core machine; the ratio is equilibrium
time / original forward time measured in the same run.

Full run (the committed results):  python experiments/convert_zoo.py
Smoke run (1 epoch, results with a _quick suffix):  python experiments/convert_zoo.py --quick
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from common import limit_blas, make_parser, markdown_table, provenance, write_csv, write_json
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from torch import nn

from implicit_cvx.compose import feedback, gated
from implicit_cvx.convert import cascade, from_sklearn, stack_parallel
from implicit_cvx.data import load_dataset
from implicit_cvx.equilibrium import equilibrium_residual
from implicit_cvx.model import ImplicitModel
from implicit_cvx.recurrent import from_lstm, from_rnn
from implicit_cvx.torch_interop import Residual, from_torch
from implicit_cvx.wellposed import wellposedness_report

COLUMNS = ["network", "converter", "n_states", "nnz", "n_params", "condition", "max_abs_diff",
           "agrees_1e-10", "accuracy_original", "accuracy_implicit", "ms_original",
           "ms_equilibrium", "time_ratio", "solver", "residual"]


# ---- networks -----------------------------------------------------------------------------------
def _train(net: nn.Module, U: np.ndarray, y: np.ndarray, epochs: int, shape, seed: int = 0):
    """A few epochs of Adam on cross-entropy (float32, batches of 64), then float64 eval mode."""
    torch.manual_seed(seed)
    X = torch.tensor(U, dtype=torch.float32).reshape(-1, *shape)
    Y = torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), Y[idx]).backward()
            opt.step()
    return net.double().eval()


class _RowsModel(nn.Module):
    """A recurrent layer over the 8 image rows, then a linear head on the last hidden state."""

    def __init__(self, cell: nn.Module, hidden: int):
        super().__init__()
        self.cell, self.head = cell, nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.cell(x.reshape(len(x), 8, 8))
        return self.head(out[:, -1])


def _residual_block(c: int) -> Residual:
    return Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)))


def torch_networks(U, y, epochs: int) -> dict:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64, 10))
    resnet = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           *(_residual_block(8) for _ in range(3)), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(128, 10))
    rnn = _RowsModel(nn.RNN(8, 32, batch_first=True), 32)
    lstm = _RowsModel(nn.LSTM(8, 24, batch_first=True), 24)
    nets = {"mlp_torch": (mlp, (64,)), "cnn_torch": (cnn, (1, 8, 8)),
            "resnet_torch": (resnet, (1, 8, 8)), "rnn_torch": (rnn, (64,)), "lstm_torch": (lstm, (64,))}
    return {name: _train(net, U, y, epochs, shape) for name, (net, shape) in nets.items()}


def _recurrent(net: _RowsModel, convert) -> ImplicitModel:
    params = {k: v.detach().numpy() for k, v in net.cell.named_parameters()}
    head = (net.head.weight.detach().numpy(), net.head.bias.detach().numpy())
    return convert(params["weight_ih_l0"], params["weight_hh_l0"], params["bias_ih_l0"],
                   params["bias_hh_l0"], steps=8, head=head)


def _torch_forward(net, shape):
    def forward(U):
        with torch.no_grad():
            return net(torch.from_numpy(U).reshape(-1, *shape)).numpy()
    return forward


def _feedback_pair(mlp_model: ImplicitModel, rng):
    """mlp_torch's first two layers as an implicit map 64 → 32 with outputs its last hidden
    states, closed through a small linear map 32 → 64 (loop gain well below 1)."""
    hidden = mlp_model.with_weights(C=np.hstack([np.zeros((32, 64)), np.eye(32)]),
                                    D=np.zeros((32, 64)), b_y=np.zeros(32))
    K = rng.normal(size=(64, 32)) * 0.002
    back = ImplicitModel(np.zeros((0, 0)), np.zeros((0, 32)), np.zeros((64, 0)), K)
    return hidden, back


def _loop_reference(hidden: ImplicitModel, back: ImplicitModel):
    """The closed loop u₁ = u + K ŷ₁ iterated to a fixed point of its outputs (a direct
    implementation, independent of the closed-loop matrices)."""
    def forward(U):
        y = np.zeros((len(U), hidden.n_outputs))
        for _ in range(200):
            new = hidden.predict(U + y @ back.D.T, tol=1e-14)
            if np.abs(new - y).max() <= 1e-15:
                break
            y = new
        return new
    return forward


def cases(data, epochs: int, quick: bool) -> list:
    """(network, converter, implicit model, original forward) for every converter."""
    U_tr, y_tr = data.split("train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = MLPClassifier((64, 32), max_iter=30 if quick else 300, random_state=0).fit(U_tr, y_tr)
    nets = torch_networks(U_tr, y_tr, epochs)
    shapes = {"mlp_torch": (64,), "cnn_torch": (1, 8, 8), "resnet_torch": (1, 8, 8)}
    models = {name: from_torch(nets[name], shapes[name]) for name in shapes}
    models["mlp_sklearn"] = from_sklearn(sk)
    models["rnn_torch"] = _recurrent(nets["rnn_torch"], from_rnn)
    models["lstm_torch"] = _recurrent(nets["lstm_torch"], from_lstm)

    def sk_logits(U):
        H = U
        for W, b in zip(sk.coefs_[:-1], sk.intercepts_[:-1], strict=True):
            H = np.maximum(H @ W + b, 0.0)
        return H @ sk.coefs_[-1] + sk.intercepts_[-1]

    forward = {name: _torch_forward(nets[name], shapes.get(name, (64,))) for name in nets}
    forward["mlp_sklearn"] = sk_logits
    rows = [(name, conv, models[name], forward[name]) for name, conv in (
        ("mlp_sklearn", "from_sklearn"), ("mlp_torch", "from_torch"), ("cnn_torch", "from_torch"),
        ("resnet_torch", "from_torch"), ("rnn_torch", "from_rnn"), ("lstm_torch", "from_lstm"))]
    cnn = nets["cnn_torch"]
    features, head = from_torch(cnn[:8], (1, 8, 8)), from_torch(cnn[8:], 64)
    rows.append(("cnn_torch", "cascade", cascade(features, head), forward["cnn_torch"]))
    rows.append(("mlp_sklearn+mlp_torch", "stack_parallel",
                 stack_parallel(models["mlp_sklearn"], models["mlp_torch"], combine="sum"),
                 lambda U: sk_logits(U) + forward["mlp_torch"](U)))
    rows.append(("σ(mlp_sklearn)∘mlp_torch", "gated",
                 gated(models["mlp_sklearn"], models["mlp_torch"], "sigmoid"),
                 lambda U: 1 / (1 + np.exp(-sk_logits(U))) * forward["mlp_torch"](U)))
    hidden, back = _feedback_pair(models["mlp_torch"], np.random.default_rng(0))
    rows.append(("mlp_torch hidden ⟲ linear", "feedback", feedback(hidden, back),
                 _loop_reference(hidden, back)))
    return rows


# ---- measurements -------------------------------------------------------------------------------
def _best_time(fn, U, repeats: int) -> tuple[float, np.ndarray]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(U)
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(network, converter, model, original, U, y, repeats: int) -> dict:
    t_orig, ref = _best_time(original, U, repeats)
    t_eq, _ = _best_time(lambda V: model.predict(V), U, repeats)  # default tolerance 1e-10
    X, info = model.equilibrium(U, return_info=True, tol=1e-13)  # exactness: a tight solve
    got = model.output(X, U)
    report = wellposedness_report(model.A, activation=model.activation)
    diff = float(np.abs(got - ref).max())
    classify = ref.shape[1] == 10
    return {
        "network": network, "converter": converter, "n_states": model.n_states,
        "nnz": model.nnz, "n_params": model.n_params,
        "condition": report["conditions"][0] if report["conditions"] else "none",
        "conditions": report["conditions"], "reason": report["reason"],
        "max_abs_diff": diff, "agrees_1e-10": diff <= 1e-10 * max(1.0, float(np.abs(ref).max())),
        "accuracy_original": float((ref.argmax(1) == y).mean()) if classify else None,
        "accuracy_implicit": float((got.argmax(1) == y).mean()) if classify else None,
        "ms_original": 1e3 * t_orig, "ms_equilibrium": 1e3 * t_eq, "time_ratio": t_eq / t_orig,
        "solver": info.solver, "residual": equilibrium_residual(model, U, X),
    }


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    stem = "convert_zoo_quick" if args.quick else "convert_zoo"
    start = time.perf_counter()
    torch.set_num_threads(args.blas_threads)
    with limit_blas(args.blas_threads):
        data = load_dataset("digits", seed=0)
        U_te, y_te = data.split("test")
        if args.quick:
            U_te, y_te = U_te[:100], y_te[:100]
        rows = [measure(*case, U_te, y_te, 2 if args.quick else 7)
                for case in cases(data, 1 if args.quick else 15, args.quick)]
    for row in rows:
        print(f"{row['network']:<28} {row['converter']:<15} n={row['n_states']:<5} "
              f"|Δ|={row['max_abs_diff']:.1e} {row['condition']:<11} "
              f"{row['ms_equilibrium']:.2f} ms vs {row['ms_original']:.2f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{stem}.csv", rows, COLUMNS)
    command = "python experiments/convert_zoo.py" + (" --quick" if args.quick else "")
    notes = (f"Command: `{command}`. Digits test split ({len(y_te)} rows), float64. "
             "condition: the first sufficient condition `wellposedness_report` finds (with the "
             "model's activations). Times: best of repeats, one BLAS/torch thread, shared "
             "2-core machine; time_ratio = equilibrium / original forward, same run.\n")
    (args.out / f"{stem}.md").write_text(
        "# Converter zoo\n\n" + markdown_table(rows, COLUMNS) + "\n" + notes)
    result = {"command": command, "seconds": time.perf_counter() - start,
              "all_agree_1e-10": all(r["agrees_1e-10"] for r in rows),
              "provenance": provenance(argv), "rows": rows}
    write_json(args.json or args.out / f"{stem}.json", result)
    print("all outputs agree to 1e-10:", result["all_agree_1e-10"])
    return result


if __name__ == "__main__":
    main()
