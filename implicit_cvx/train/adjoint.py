"""Method `adjoint` (DESIGN §6.2 a): alternating certified convex steps with adjoint state targets.

Per outer iteration, at the equilibrium X of (A, B):
 1. (C, D, b_y) ← certified convex fit of the loss on [X, U] (proximal anchor at the current value);
 2. V ← the implicit adjoint ∂L/∂Z (§5), Z = XAᵀ + UBᵀ + b_x;
 3. (A, B, b_x) ← the SIM row problem (§6.1) with targets Z − η·m·V on regressors [X, U, 1], rows of
    A in the ℓ1 ball of radius κ, proximal anchor μ‖W − W_k‖², penalties scaled by 2η (a proximal-
    gradient step in the metric G + μI, so η → 0 returns W_k);
 4. accept iff the TRUE objective (equilibrium loss + penalties) decreased, else shrink η and retry.

With `batch_size`, each outer iteration runs steps 1–4 on a fresh random subset of the training
rows (the data-subset variant of §6.2 a): every step is still certified and decreases the true
objective *of that subset*, the history records the full-data true objective beside it, and the
final (C, D) refit uses all rows. On digits it generalizes better than the full-batch reference
(experiments/results/training_digits.md), much as stochastic gradients do.
"""

from __future__ import annotations

import time

import numpy as np

from ..convex.gram import GramStats, gram_stats
from ..convex.losses import fit_output_layer
from ..convex.rows import RowSpec, solve_rows
from ..gradients import implicit_adjoint
from ..robust.training import (
    check_s_bound,
    check_s_value,
    fit_output_layer_s_bounded,
    s_bound_weights,
)
from ..wellposed import BALL_RTOL, check_kappa, inf_norm, project_inf_ball
from .init import as_generator, init_model
from .objective import (
    FitResult,
    evaluate,
    loss_grad,
    loss_value,
    penalty_value,
    prepare_data,
)
from .runlog import EarlyStopping, progress_bar, restore_rng, rng_state

ETA_GROW = 2.0  # η after an accepted step
ETA_SHRINK = 0.25  # η after a rejected trial
MAX_TRIALS = 10  # trials of one (A, B) step before "no progress"
EQ_TOL = 1e-12  # equilibrium tolerance of every true-objective evaluation


def _gram_scale(G: np.ndarray) -> float:
    """Mean diagonal of a Gram matrix: the unit in which the anchor μ is given."""
    return float(max(np.trace(G) / G.shape[0], 1e-12))


def _features(X, U, include_D: bool) -> np.ndarray:
    return np.column_stack([X, U]) if include_D else X


def output_step(model, X, U, Y, loss, *, include_D, lam_l1, lam_l2, anchor_mu, tol, n_jobs, backend,
                s_bound=None):
    """(C, D, b_y) ← certified fit on [X, U] anchored at the current value: the objective never rises.
    With s_bound, subject to ‖S‖_∞ ≤ s_bound for the current (A, B) (robust/training.py)."""
    F = _features(X, U, include_D)
    W0 = np.column_stack([model.C, model.D]) if include_D else np.asarray(model.C)
    Ft = np.column_stack([F, np.ones(len(F))])
    mu = anchor_mu * _gram_scale(Ft.T @ Ft / len(F))
    kw = dict(lam_l1=lam_l1, lam_l2=lam_l2, anchor=(W0, model.b_y, mu), tol=tol,
              warm_start=(W0, model.b_y), n_jobs=n_jobs, backend=backend)
    if s_bound is None:
        W, b, info = fit_output_layer(F, Y, loss, **kw)
    else:
        weights = s_bound_weights(model, include_D)
        W, b, info = fit_output_layer_s_bounded(F, Y, loss, weights, s_bound, **kw)
    n = model.n_states
    D = W[:, n:] if include_D else np.zeros_like(np.asarray(model.D, dtype=float))
    return model.with_weights(C=W[:, :n], D=D, b_y=b), info


class StateStep:
    """The (A, B, b_x) row problems of one outer iteration, for any step size η.

    Regressors R = [X, U, 1]; since Z = R W_kᵀ, the targets Z − η m V give H(η) = G W_kᵀ − η m RᵀV/m,
    so the Gram statistics are formed once per outer iteration.
    """

    def __init__(self, model, X, U, V, *, kappa, lam_l1, lam_l2, anchor_mu):
        n, p = model.n_states, model.n_inputs
        m = X.shape[0]
        self.R = np.column_stack([X, U, np.ones(m)])
        stats = gram_stats(self.R, V)
        self.G, self.HV, self.m = stats.G, stats.H, m
        self.Wk = np.column_stack([model.A, model.B, model.b_x])
        self.Z = self.R @ self.Wk.T
        self.V = V
        self.mu = anchor_mu * _gram_scale(self.G)
        self.mask = np.append(np.ones(n + p), 0.0)  # the bias column is never penalized
        self.kappa, self.lam_l1, self.lam_l2, self.n = kappa, lam_l1, lam_l2, n

    def solve(self, eta: float, *, tol, n_jobs, backend):
        """Rows of the new [A B b_x] for step η (certified), as a RowSolution."""
        scale = 2.0 * eta  # penalties enter as a proximal-gradient step of length η
        Zt = self.Z - (eta * self.m) * self.V
        H = self.G @ self.Wk.T - (eta * self.m) * self.HV
        G = self.G + (scale * self.lam_l2) * np.diag(self.mask) if self.lam_l2 else self.G
        stats = GramStats(G, H, np.einsum("ij,ij->j", Zt, Zt) / self.m, self.m)
        spec = RowSpec(
            penalty=(scale * self.lam_l1) * self.mask,
            free=[len(self.mask) - 1],
            balls=[(np.arange(self.n), self.kappa)],
            anchor=self.Wk,
            mu=self.mu,
        )
        return solve_rows(stats, spec, tol=tol, warm_start=self.Wk, n_jobs=n_jobs, backend=backend)

    def model(self, model, W: np.ndarray):
        n = self.n
        A = W[:, :n]
        if inf_norm(A) > self.kappa * (1 + BALL_RTOL):
            A = project_inf_ball(A, self.kappa)
        return model.with_weights(A=A, B=W[:, n:-1], b_x=W[:, -1])


def _objective(model, X, U, Y, loss, penalties) -> float:
    return loss_value(loss, model.output(X, U), Y) + penalty_value(model, *penalties)


def _state_step(model, X, U, Y, loss, penalties, obj, eta, kw, solve_kw):
    """Backtracking (A, B) step; returns (model, X, objective, η, accepted, trials, gap, status)."""
    V = implicit_adjoint(model, U, X, loss_grad(loss, model.output(X, U), Y))
    step = StateStep(model, X, U, V, **kw)
    gaps, statuses = [], []
    for trial in range(1, MAX_TRIALS + 1):
        sol = step.solve(eta, **solve_kw)
        gaps.append(sol.max_gap)
        statuses.append("optimal" if all(s == "optimal" for s in sol.status) else "inaccurate")
        cand = step.model(model, sol.W)
        X_new = cand.equilibrium(U, X0=X, tol=EQ_TOL)
        obj_new = _objective(cand, X_new, U, Y, loss, penalties)
        if obj_new < obj:
            return cand, X_new, obj_new, eta, True, trial, max(gaps), _worst(statuses)
        eta *= ETA_SHRINK
    return model, X, obj, eta, False, MAX_TRIALS, max(gaps), _worst(statuses)


def _worst(statuses) -> str:
    return "optimal" if all(s == "optimal" for s in statuses) else "inaccurate"


def fit_adjoint(
    U,
    Y,
    *,
    task: str,
    loss: str | None = None,
    n_states: int | None = 64,
    kappa: float = 0.95,
    include_D: bool = True,
    lam_l1: float = 0.0,
    lam_l2: float = 0.0,
    anchor_mu: float = 1e-2,
    eta: float = 1.0,
    max_outer: int = 50,
    batch_size: int | None = None,
    min_rel_decrease: float = 1e-7,
    tol: float = 1e-9,
    output_tol: float = 1e-8,
    init=None,
    seed=0,
    U_val=None,
    Y_val=None,
    early_stopping: bool = False,
    patience: int = 10,
    run=None,
    progress: bool = False,
    n_jobs: int = 1,
    backend: str = "serial",
    activation="relu",
    s_bound: float | None = None,
) -> FitResult:
    """Fit an implicit model to (U, Y) by the adjoint-target method (DESIGN §6.2 a).

    `tol` is the relative duality-gap tolerance of the (A, B) row problems, `output_tol` that of
    the (C, D) fit; `anchor_mu` is μ relative to the mean Gram diagonal; η is adapted (×2 after an
    accepted step, ×¼ per rejected trial). Stops after `max_outer` iterations, when a step cannot
    decrease the true objective, or when the relative decrease falls below `min_rel_decrease`.
    batch_size: None (or ≥ m) is the exact full-batch reference; an integer b runs each outer
    iteration on b rows drawn at random (the two stopping rules above then do not apply: one
    subset at its optimum says nothing of the next), and every iteration starts from the given η.
    With early_stopping and validation data, returns the model of least validation loss.
    s_bound: every (C, D) step is constrained to ‖S‖_∞ ≤ s_bound (DESIGN §7; ridge and anchor of
    that step then act in the ball's metric, see robust/training.py); the final model satisfies it.
    """
    t_start = time.perf_counter()
    kappa = check_kappa(kappa)
    for name, v in (("anchor_mu", anchor_mu), ("eta", eta)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}={v!r} must be a positive number")
    if lam_l1 < 0 or lam_l2 < 0:
        raise ValueError(f"penalties must be ≥ 0, got lam_l1={lam_l1}, lam_l2={lam_l2}")
    if s_bound is not None:
        s_bound = check_s_value(s_bound)
    if int(max_outer) < 1:
        raise ValueError(f"max_outer={max_outer!r} must be a positive integer")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 2):
        raise ValueError(f"batch_size={batch_size!r} must be an integer ≥ 2 or None (full batch)")
    U, Y, loss, q, U_val, Y_val = prepare_data(U, Y, task, loss, U_val, Y_val)
    m = U.shape[0]
    batched = batch_size is not None and batch_size < m
    penalties = (lam_l1, lam_l2)
    rng = as_generator(seed)
    model = init_model(init, n_inputs=U.shape[1], n_outputs=q, n_states=n_states, kappa=kappa,
                       seed=rng, activation=activation, include_D=include_D, U=U)
    history, start_it, elapsed0, best, state = [], 0, 0.0, None, {}
    if run is not None and run.resumed is not None:
        ck = run.resumed
        model = init_model(ck.model, n_inputs=U.shape[1], n_outputs=q, n_states=n_states,
                           kappa=kappa, include_D=include_D)
        state, start_it, best = ck.state, ck.iteration + 1, ck.models.get("best")
        history, eta, elapsed0 = run.history(), state["eta"], state["seconds"]
        rng = restore_rng(state["rng"]) if "rng" in state else rng  # older checkpoints: no subsets
    stopper = EarlyStopping(patience) if early_stopping and U_val is not None else None
    if stopper is not None and state.get("early_stopping"):
        stopper.load_state(state["early_stopping"])
    cfg = dict(kappa=kappa, lam_l1=lam_l1, lam_l2=lam_l2, anchor_mu=anchor_mu)
    solve_kw = dict(tol=tol, n_jobs=n_jobs, backend=backend)
    out_kw = dict(include_D=include_D, lam_l1=lam_l1, lam_l2=lam_l2, anchor_mu=anchor_mu,
                  tol=output_tol, n_jobs=n_jobs, backend=backend, s_bound=s_bound)
    X = model.equilibrium(U, tol=EQ_TOL)
    obj = _objective(model, X, U, Y, loss, penalties)
    bar = progress_bar(max_outer, progress, desc="adjoint", initial=start_it)
    it = start_it - 1
    for it in range(start_it, max_outer):
        t_it = time.perf_counter()
        rows = np.sort(rng.choice(m, batch_size, replace=False)) if batched else slice(None)
        Ub, Yb, Xb = U[rows], Y[rows], X[rows]  # X holds the exact equilibrium of every row
        obj_before = _objective(model, Xb, Ub, Yb, loss, penalties) if batched else obj
        model, cd = output_step(model, Xb, Ub, Yb, loss, **out_kw)
        step_obj = _objective(model, Xb, Ub, Yb, loss, penalties)
        if s_bound is not None:  # that step restores ‖S‖_∞ ≤ s after (A, B) moved: it may rise
            obj_before = step_obj
        model, Xb, step_obj, eta_used, accepted, trials, gap_ab, status_ab = _state_step(
            model, Xb, Ub, Yb, loss, penalties, step_obj, eta, cfg, solve_kw)
        if not batched:  # a subset's step length says little about the next subset's: keep η
            eta = eta_used * ETA_GROW if accepted else eta_used
        X[rows] = Xb  # warm start of the full-data evaluation
        rec, X = evaluate(model, U, Y, task, loss, penalties, X0=X, tol=EQ_TOL)
        obj = rec.pop("train_objective")
        rec = {"iteration": it, "objective": obj, **rec,
               "equilibrium_residual": rec["train_residual"], "eta": eta_used,
               "accepted": accepted, "trials": trials, "max_gap_AB": gap_ab, "status_AB": status_ab,
               "max_gap_CD": cd.gap, "status_CD": cd.status, "inf_norm_A": inf_norm(model.A)}
        if batched:
            rec.update(batch_size=int(batch_size), batch_objective_before=obj_before,
                       batch_objective=step_obj)
        if U_val is not None:
            val, _ = evaluate(model, U_val, Y_val, task, loss, penalties, tol=EQ_TOL, prefix="val")
            rec.update(val)
            if stopper is not None and stopper.update(val["val_loss"], it):
                best = model
        rec["seconds"] = elapsed0 + time.perf_counter() - t_start
        rec["iteration_seconds"] = time.perf_counter() - t_it
        history.append(rec)
        bar.update()
        bar.set_postfix(objective=f"{obj:.5g}", eta=f"{eta_used:.2g}")
        rel = (obj_before - step_obj) / max(abs(obj_before), 1e-300)
        stop = ((not batched and (not accepted or rel < min_rel_decrease))
                or (stopper is not None and stopper.should_stop) or it == max_outer - 1)
        if run is not None:
            run.log(rec)
            if run.due(it, final=stop):
                ck_state = {"eta": eta, "seconds": rec["seconds"], "rng": rng_state(rng),
                            "early_stopping": stopper.state() if stopper is not None else None}
                run.checkpoint(it, model, ck_state, {"X": X}, {"best": best} if best is not None else None)
        if stop:
            break
    bar.close()
    return _finish(best if best is not None else model, U, Y, task, loss, penalties, history,
                   it + 1, kappa, out_kw, t_start, elapsed0)


def _finish(model, U, Y, task, loss, penalties, history, outer, kappa, out_kw, t_start, elapsed0):
    """Final (C, D) refit on the final states, checks (ball, residual ≤ 1e-8) and the summary."""
    X = model.equilibrium(U, tol=EQ_TOL)
    model, cd = output_step(model, X, U, Y, loss, **out_kw)
    rec, X = evaluate(model, U, Y, task, loss, penalties, X0=X, tol=EQ_TOL)
    norm = inf_norm(model.A)
    if norm > kappa * (1 + BALL_RTOL):
        raise RuntimeError(f"adjoint fit left ‖A‖_∞ = {norm!r} > κ = {kappa}; this is a bug")
    if rec["train_residual"] > 1e-8:
        raise RuntimeError(f"final equilibrium residual {rec['train_residual']:.3g} > 1e-8")
    s_bound = out_kw.get("s_bound")
    s_norm = None if s_bound is None else check_s_bound(model, s_bound)
    gaps = [cd.gap] + [max(h["max_gap_AB"], h["max_gap_CD"]) for h in history]
    model.metadata.update(method="adjoint", kappa=kappa)
    if task == "classification" and model.metadata.get("classes") is None:
        model.metadata["classes"] = list(range(model.n_outputs))
    summary = {
        **rec,
        "train_loss": rec["train_loss"],
        "outer_iterations": outer,
        "max_duality_gap": float(max(gaps)),
        "equilibrium_residual": rec["train_residual"],
        "inf_norm_A": norm,
        "kappa": kappa,
        "final_output_fit": cd.to_dict(),
        "s_bound": s_bound,
        "sensitivity_inf_norm": s_norm,
        "seconds": elapsed0 + time.perf_counter() - t_start,
    }
    return FitResult(model, history, summary)
