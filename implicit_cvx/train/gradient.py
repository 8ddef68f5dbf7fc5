"""Method `gradient`: the paper's baseline (DESIGN §5, App. G) — projected Adam with implicit gradients.

Each step solves the equilibrium of the batch, back-propagates through it by the implicit adjoint
(gradients.loss_gradients), takes an Adam (or plain SGD) step on A, B, C, D, b_x, b_y and then
projects A exactly onto ‖A‖_∞ ≤ κ (row-wise ℓ1-ball projection, not a rescaling).
"""

from __future__ import annotations

import time

import numpy as np

from ..gradients import loss_gradients
from ..wellposed import check_kappa, inf_norm, project_inf_ball
from .init import as_generator, init_model
from .objective import (
    FitResult,
    evaluate,
    loss_grad,
    prepare_data,
)
from .runlog import EarlyStopping, progress_bar, restore_rng, rng_state

WEIGHTS = ("A", "B", "C", "D")


def implicit_gradients(model, U, Y, loss, lam_l2=0.0, *, X0=None, tol=1e-10):
    """(∂/∂θ of mean loss + λ2 Σ‖W‖², the batch equilibrium X): the §5 implicit gradient."""
    X = model.equilibrium(U, X0=X0, tol=tol)
    grads = loss_gradients(model, U, X, loss_grad(loss, model.output(X, U), Y))
    if lam_l2:
        for k in WEIGHTS:
            grads[k] = grads[k] + 2.0 * lam_l2 * getattr(model, k)
    return grads, X


class _Optimizer:
    """Adam (Kingma & Ba) or plain SGD over named parameter arrays; state as numeric arrays."""

    def __init__(self, names, shapes, kind, lr, betas=(0.9, 0.999), eps=1e-8):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {kind!r}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate lr={lr!r} must be a positive number")
        self.names, self.kind, self.lr, self.betas, self.eps = tuple(names), kind, lr, betas, eps
        self.t = 0
        self.m = {k: np.zeros(s) for k, s in zip(self.names, shapes, strict=True)}
        self.v = {k: np.zeros(s) for k, s in zip(self.names, shapes, strict=True)}

    def step(self, params: dict, grads: dict) -> dict:
        self.t += 1
        if self.kind == "sgd":
            return {k: params[k] - self.lr * grads[k] for k in self.names}
        b1, b2 = self.betas
        out = {}
        for k in self.names:
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            mhat, vhat = self.m[k] / (1 - b1**self.t), self.v[k] / (1 - b2**self.t)
            out[k] = params[k] - self.lr * mhat / (np.sqrt(vhat) + self.eps)
        return out

    def arrays(self) -> dict:
        return {**{f"m_{k}": v for k, v in self.m.items()}, **{f"v_{k}": v for k, v in self.v.items()}}

    def load(self, arrays: dict, t: int) -> None:
        self.t = int(t)
        for k in self.names:
            self.m[k], self.v[k] = arrays[f"m_{k}"].copy(), arrays[f"v_{k}"].copy()


def fit_gradient(
    U,
    Y,
    *,
    task: str,
    loss: str | None = None,
    n_states: int | None = 64,
    kappa: float = 0.95,
    include_D: bool = True,
    lam_l2: float = 0.0,
    lr: float = 3e-3,
    epochs: int = 200,
    batch_size: int | None = None,
    init=None,
    seed=0,
    U_val=None,
    Y_val=None,
    early_stopping: bool = False,
    patience: int = 10,
    run=None,
    progress: bool = False,
    time_budget: float | None = None,
    activation="relu",
    optimizer: str = "adam",
    tol: float = 1e-10,
) -> FitResult:
    """Projected Adam/SGD on all parameters with implicit gradients (DESIGN §5); A ← Π_κ(A).

    One history record per epoch: the full-batch TRUE objective of the current model, metrics,
    validation metrics, equilibrium residual, ‖A‖_∞, seconds. With validation data the model
    with the best validation loss is returned (early stopping after `patience` bad epochs when
    early_stopping=True); otherwise the last one. `run` (a RunLog) adds history, checkpoints and
    resume; all randomness comes from one Generator whose state is checkpointed.
    """
    t_start = time.perf_counter()
    kappa = check_kappa(kappa)
    U, Y, loss, q, U_val, Y_val = prepare_data(U, Y, task, loss, U_val, Y_val)
    m = U.shape[0]
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer or None (full batch)")
    if lam_l2 < 0:
        raise ValueError(f"lam_l2={lam_l2!r} must be ≥ 0")
    rng = as_generator(seed)
    model = init_model(init, n_inputs=U.shape[1], n_outputs=q, n_states=n_states, kappa=kappa,
                       seed=rng, activation=activation, include_D=include_D, U=U)
    names = ("A", "B", "C") + (("D",) if include_D else ()) + ("b_x", "b_y")
    opt = _Optimizer(names, [getattr(model, k).shape for k in names], optimizer, lr)
    X_cache = np.zeros((m, model.n_states))
    stopper = EarlyStopping(patience) if U_val is not None else None
    best, start, elapsed0 = None, 0, 0.0
    if run is not None and run.resumed is not None:
        ck = run.resumed
        model, start, rng = ck.model, ck.iteration + 1, restore_rng(ck.state["rng"])
        opt.load(ck.arrays, ck.state["t"])
        X_cache, elapsed0 = ck.arrays["X_cache"].copy(), ck.state["seconds"]
        best = ck.models.get("best")
        if stopper is not None:
            stopper.load_state(ck.state["early_stopping"])
    penalties = (0.0, lam_l2)
    history = run.history() if run is not None else []
    bar = progress_bar(epochs, progress, "gradient", initial=start)
    epoch = start - 1
    for epoch in range(start, epochs):
        batches = [np.arange(m)] if batch_size is None or batch_size >= m else np.array_split(
            rng.permutation(m), int(np.ceil(m / batch_size)))
        for idx in batches:
            grads, X_b = implicit_gradients(model, U[idx], Y[idx], loss, lam_l2, X0=X_cache[idx], tol=tol)
            X_cache[idx] = X_b
            new = opt.step({k: getattr(model, k) for k in names}, grads)
            new["A"] = project_inf_ball(new["A"], kappa)
            model = model.with_weights(**new)
        rec, X_cache = evaluate(model, U, Y, task, loss, penalties, X0=X_cache, tol=tol)
        rec = {"iteration": epoch, "epoch": epoch, **rec, "inf_norm_A": inf_norm(model.A), "lr": lr}
        if U_val is not None:
            val, _ = evaluate(model, U_val, Y_val, task, loss, penalties, tol=tol, prefix="val")
            rec.update(val)
            if stopper.update(val["val_loss"], epoch):
                best = model
        rec["seconds"] = elapsed0 + time.perf_counter() - t_start
        history.append(rec)
        bar.update()
        bar.set_postfix(loss=f"{rec['train_loss']:.4g}")
        out_of_time = time_budget is not None and time.perf_counter() - t_start >= time_budget
        stop = (early_stopping and stopper is not None and stopper.should_stop) or out_of_time
        if run is not None:
            run.log(rec)
            if run.due(epoch, final=stop or epoch == epochs - 1):
                state = {"rng": rng_state(rng), "t": opt.t, "seconds": rec["seconds"],
                         "early_stopping": stopper.state() if stopper is not None else None}
                run.checkpoint(epoch, model, state, {**opt.arrays(), "X_cache": X_cache},
                               {"best": best} if best is not None else None)
        if stop:
            break
    bar.close()
    final = best if best is not None else model
    rec, X = evaluate(final, U, Y, task, loss, penalties, tol=min(tol, 1e-10))
    summary = {
        **rec,
        "train_loss": rec["train_loss"],
        "outer_iterations": epoch + 1,
        "max_duality_gap": None,  # no convex subproblems in this method
        "equilibrium_residual": rec["train_residual"],
        "inf_norm_A": inf_norm(final.A),
        "kappa": kappa,
        "seconds": time.perf_counter() - t_start + elapsed0,
    }
    final.metadata.update(method="gradient", kappa=kappa)
    return FitResult(final, history, summary)
