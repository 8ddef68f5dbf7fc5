"""Method `gradient`: the paper's baseline (App. G) — projected Adam with implicit gradients.

Each step solves the equilibrium of the batch, back-propagates through it by the implicit adjoint
(gradients.loss_gradients), takes an Adam (or plain SGD) step on A, B, C, D, b_x, b_y and then
projects A exactly onto ‖A‖_∞ ≤ κ (row-wise ℓ1-ball projection, not a rescaling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import option
from ..gradients import loss_gradients
from ..model import ImplicitModel
from ..numerics import inf_norm
from ..wellposed import project_inf_ball
from .driver import FitMethod, FitResult, Step, fit_function
from .init import init_model
from .objective import evaluate, loss_grad
from .options import LoopOptions, StateModelOptions

WEIGHTS = ("A", "B", "C", "D")


def implicit_gradients(model, U, Y, loss, lam_l2=0.0, *, X0=None, tol=1e-10):
    """(∂/∂θ of mean loss + λ2 Σ‖W‖², the batch equilibrium X): the §5 implicit gradient."""
    X = model.equilibrium(U, method="reproducible", X0=X0, tol=tol)
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

    def flatten(self) -> np.ndarray:
        """The moment estimates (m, then v, of every parameter) as one vector."""
        return np.concatenate([self.m[k].ravel() for k in self.names]
                              + [self.v[k].ravel() for k in self.names])

    def unflatten(self, moments: np.ndarray, t: int) -> None:
        """Restore the moment estimates written by `flatten` after `t` steps."""
        self.t, pos = int(t), 0
        for store in (self.m, self.v):
            for k in self.names:
                size = store[k].size
                store[k] = moments[pos : pos + size].reshape(store[k].shape).copy()
                pos += size


@dataclass
class GradientOptions(StateModelOptions, LoopOptions):
    lr: float = option(3e-3, low=0, open_low=True, help="learning rate")
    epochs: int = option(200, low=1, estimator="max_iter", help="passes over the training data")
    batch_size: int | None = option(None, kind="int", low=1, help="mini-batch size (null: full batch)")
    lam_l2: float = option(0.0, low=0, estimator="lam_l2", help="squared ℓ2 penalty on A, B, C, D")
    optimizer: str = option("adam", choices=("adam", "sgd"), help="adam | sgd")
    tol: float = option(1e-10, low=0, open_low=True, help="equilibrium tolerance of each batch")
    time_budget: float | None = option(None, kind="float", low=0, open_low=True,
                                       help="stop after this many seconds (null: no limit)")


@dataclass
class GradientState:
    model: ImplicitModel
    rng: np.random.Generator
    X_cache: np.ndarray  # warm starts of the batch equilibria
    moments: np.ndarray  # the optimizer's moment estimates, flattened
    t: int  # optimizer steps taken
    seconds: float  # time spent in steps so far (for time_budget; survives a resume)


class GradientMethod(FitMethod):
    """Fit an implicit model by projected Adam/SGD with implicit gradients (paper App. G).

    All parameters are trained; A ← Π_κ(A) after every step (the exact row-wise ℓ1-ball
    projection, not a rescaling).
    """

    name = "gradient"
    Options = GradientOptions
    State = GradientState

    @property
    def max_steps(self) -> int:
        return self.opts.epochs

    def _names(self) -> tuple:
        return ("A", "B", "C") + (("D",) if self.opts.include_D else ()) + ("b_x", "b_y")

    def _optimizer(self, model, state=None) -> _Optimizer:
        names = self._names()
        opt = _Optimizer(names, [getattr(model, k).shape for k in names], self.opts.optimizer,
                         self.opts.lr)
        if state is not None:
            opt.unflatten(state.moments, state.t)
        return opt

    def start(self, rng) -> GradientState:
        o, d = self.opts, self.data
        model = init_model(o.init, n_inputs=d.U.shape[1], n_outputs=d.n_outputs,
                           n_states=o.n_states, kappa=o.kappa, seed=rng, activation=o.activation,
                           include_D=o.include_D, U=d.U)
        opt = self._optimizer(model)
        return GradientState(model, rng, np.zeros((d.U.shape[0], model.n_states)), opt.flatten(),
                             0, 0.0)

    def step(self, state: GradientState) -> Step:
        t0 = time.perf_counter()
        o, d = self.opts, self.data
        m = d.U.shape[0]
        model, X_cache, opt = state.model, state.X_cache.copy(), self._optimizer(state.model, state)
        batches = [np.arange(m)] if o.batch_size is None or o.batch_size >= m else np.array_split(
            state.rng.permutation(m), int(np.ceil(m / o.batch_size)))
        for idx in batches:
            grads, X_b = implicit_gradients(model, d.U[idx], d.Y[idx], d.loss, o.lam_l2,
                                            X0=X_cache[idx], tol=o.tol)
            X_cache[idx] = X_b
            new = opt.step({k: getattr(model, k) for k in opt.names}, grads)
            new["A"] = project_inf_ball(new["A"], o.kappa)
            model = model.with_weights(**new)
        rec, X_cache = evaluate(model, d.U, d.Y, d.task, d.loss, (0.0, o.lam_l2), X0=X_cache, tol=o.tol)
        rec.update(inf_norm_A=inf_norm(model.A), lr=o.lr)
        seconds = state.seconds + time.perf_counter() - t0
        out_of_time = o.time_budget is not None and seconds >= o.time_budget
        new_state = GradientState(model, state.rng, X_cache, opt.flatten(), opt.t, seconds)
        return Step(new_state, rec, out_of_time)

    def finish(self, state: GradientState, model) -> FitResult:
        o, d = self.opts, self.data
        rec, _ = evaluate(model, d.U, d.Y, d.task, d.loss, (0.0, o.lam_l2), tol=min(o.tol, 1e-10))
        model.metadata.update(method="gradient", kappa=o.kappa)
        if d.task == "classification" and model.metadata.get("classes") is None:
            model.metadata["classes"] = list(range(max(2, model.n_outputs)))
        summary = {**rec, "max_duality_gap": None,  # no convex subproblems in this method
                   "equilibrium_residual": rec["train_residual"], "inf_norm_A": inf_norm(model.A),
                   "kappa": o.kappa}
        return FitResult(model, [], summary)


fit_gradient = fit_function(GradientMethod)
