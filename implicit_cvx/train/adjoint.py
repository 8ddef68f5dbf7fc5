"""Method `adjoint`: alternating certified convex steps with adjoint state targets.

Per outer iteration, at the equilibrium X of (A, B):
 1. (C, D, b_y) ← certified convex fit of the loss on [X, U] (proximal anchor at the current value);
 2. V ← the implicit adjoint ∂L/∂Z (paper App. G), Z = XAᵀ + UBᵀ + b_x;
 3. (A, B, b_x) ← the state-matching row problem with targets Z − η·m·V on regressors [X, U, 1],
    rows of A in the ℓ1 ball of radius κ, proximal anchor μ‖W − W_k‖², penalties scaled by 2η (a
    proximal-gradient step in the metric G + μI, so η → 0 returns W_k);
 4. accept iff the TRUE objective (equilibrium loss + penalties) decreased, else shrink η and retry.
Without penalties step 3 moves W by −ηV[X; U]ᵀ([X; U][X; U]ᵀ + μI)⁻¹: a preconditioned descent
direction, so a small enough η decreases the loss, and every step is a convex program.

With `batch_size`, each outer iteration runs steps 1–4 on a fresh random subset of the training
rows: every step is still certified and decreases the true objective *of that subset*, the history
records the full-data true objective beside it, and the final (C, D) refit uses all rows. On digits
it generalizes better than the full-batch reference (experiments/results/training_digits.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import option
from ..convex.gram import GramStats, gram_stats
from ..convex.rows import RowSpec
from ..convex.solvers import RowProblem, solve_certified, uncertified_record
from ..gradients import implicit_adjoint
from ..model import ImplicitModel
from ..numerics import in_ball, inf_norm, project_l1_ball_rows
from ..robust.training import check_s_bound
from .driver import FitMethod, FitResult, Step, fit_function
from .init import init_model
from .objective import evaluate, evaluate_at, loss_grad, loss_value, penalty_value
from .options import CertifiedStepOptions, LoopOptions, RowParallelOptions, StateModelOptions
from .steps import features, output_step, relative_anchor

ETA_GROW = 2.0  # η after an accepted step
ETA_SHRINK = 0.25  # η after a rejected trial
MAX_TRIALS = 10  # trials of one (A, B) step before "no progress"
EQ_TOL = 1e-12  # equilibrium tolerance of every true-objective evaluation


@dataclass
class AdjointOptions(StateModelOptions, RowParallelOptions, CertifiedStepOptions, LoopOptions):
    max_outer: int = option(50, low=1, estimator="max_iter", help="outer iterations")
    batch_size: int | None = option(None, kind="int", low=2,
                                    help="rows per outer iteration (null: full batch)")
    eta: float = option(1.0, low=0, open_low=True,
                        help="step η of the state targets Z − η·m·V (adapted: ×2 after an "
                             "accepted full-batch step, ×¼ per rejected trial)")
    anchor_mu: float = option(1e-2, low=0, open_low=True,
                              help="proximal anchor μ, relative to the mean Gram diagonal")
    lam_l1: float = option(0.0, low=0, estimator="lam_l1", help="ℓ1 penalty on A, B, C, D")
    lam_l2: float = option(0.0, low=0, estimator="lam_l2", help="squared ℓ2 penalty on A, B, C, D")
    s_bound: float | None = option(None, kind="float", low=0, open_low=True,
                                   help="every (C, D) step keeps ‖S‖_∞ ≤ s_bound (Thm 4.3)")
    beta: float | None = option(None, kind="float", low=0, open_low=True,
                                help="every (A, B) step keeps ‖b_i‖_1 ≤ β on the rows of B (the "
                                     "initial B is projected there): with ‖A‖_∞ ≤ κ each state's "
                                     "ℓ∞ gain from u is ≤ β/(1 − κ)")
    tol: float = option(1e-9, low=0, open_low=True,
                        help="relative duality-gap tolerance of the (A, B) row problems")
    output_tol: float = option(1e-8, low=0, open_low=True,
                               help="relative duality-gap tolerance of the (C, D) fit")
    min_rel_decrease: float = option(1e-7, low=0,
                                     help="full batch: stop when the relative decrease falls below")


@dataclass
class AdjointState:
    model: ImplicitModel
    rng: np.random.Generator
    X: np.ndarray  # the exact equilibrium of every training row
    objective: float
    eta: float


class StateStep:
    """The (A, B, b_x) row problems of one outer iteration, for any step size η.

    Regressors R = [X, U, 1]; since Z = R W_kᵀ, the targets Z − η m V give H(η) = G W_kᵀ − η m RᵀV/m,
    so the Gram statistics are formed once per outer iteration.
    """

    def __init__(self, model, X, U, V, *, kappa, lam_l1, lam_l2, anchor_mu, beta=None):
        n, p = model.n_states, model.n_inputs
        m = X.shape[0]
        self.R = np.column_stack([X, U, np.ones(m)])
        stats = gram_stats(self.R, V)
        self.G, self.HV, self.m = stats.G, stats.H, m
        self.Wk = np.column_stack([model.A, model.B, model.b_x])
        self.Z = self.R @ self.Wk.T
        self.V = V
        self.mu = anchor_mu * float(max(np.trace(self.G) / self.G.shape[0], 1e-12))
        self.mask = np.append(np.ones(n + p), 0.0)  # the bias column is never penalized
        self.kappa, self.lam_l1, self.lam_l2, self.n = kappa, lam_l1, lam_l2, n
        self.balls = [(np.arange(n), kappa)] + ([] if beta is None else [(np.arange(n, n + p), beta)])

    def problem(self, eta: float) -> RowProblem:
        """The row problems for step η."""
        scale = 2.0 * eta  # penalties enter as a proximal-gradient step of length η
        Zt = self.Z - (eta * self.m) * self.V
        H = self.G @ self.Wk.T - (eta * self.m) * self.HV
        G = self.G + (scale * self.lam_l2) * np.diag(self.mask) if self.lam_l2 else self.G
        stats = GramStats(G, H, np.einsum("ij,ij->j", Zt, Zt) / self.m, self.m)
        spec = RowSpec(penalty=(scale * self.lam_l1) * self.mask, free=[len(self.mask) - 1],
                       balls=self.balls, anchor=self.Wk, mu=self.mu)
        return RowProblem(stats, spec)

    def solve(self, eta: float, *, tol, accept_uncertified=False, **parallel):
        """Rows of the new [A B b_x] for step η, certified (RowFitError otherwise)."""
        return solve_certified(self.problem(eta), tol=tol, step="(A, B) rows",
                               accept_uncertified=accept_uncertified, warm_start=self.Wk, **parallel)

    def model(self, model, W: np.ndarray):
        n = self.n
        for (idx, radius), name in zip(self.balls, "AB", strict=False):  # certified rows lie in their balls
            if not in_ball(W[:, idx], radius):
                raise RuntimeError(f"(A, B) step left ‖{name}‖_∞ = {inf_norm(W[:, idx])!r} > {radius}")
        return model.with_weights(A=W[:, :n], B=W[:, n:-1], b_x=W[:, -1])


class AdjointMethod(FitMethod):
    """Fit an implicit model by alternating certified convex steps with adjoint state targets."""

    name = "adjoint"
    Options = AdjointOptions
    State = AdjointState

    @property
    def max_steps(self) -> int:
        return self.opts.max_outer

    @property
    def penalties(self) -> tuple:
        return self.opts.lam_l1, self.opts.lam_l2

    def _objective(self, model, X, U, Y) -> float:
        return loss_value(self.data.loss, model.output(X, U), Y) + penalty_value(model, *self.penalties)

    def _solver_kw(self) -> dict:
        o = self.opts
        return dict(n_jobs=o.n_jobs, backend=o.backend, address=o.address,
                    accept_uncertified=o.accept_uncertified)

    def _output_step(self, model, X, U, Y):
        o = self.opts
        mu = relative_anchor(features(X, U, o.include_D), o.anchor_mu)
        return output_step(model, X, U, Y, self.data.loss, include_D=o.include_D, mu=mu,
                           lam_l1=o.lam_l1, lam_l2=o.lam_l2, tol=o.output_tol, s_bound=o.s_bound,
                           **self._solver_kw())

    def start(self, rng) -> AdjointState:
        o, d = self.opts, self.data
        model = init_model(o.init, n_inputs=d.U.shape[1], n_outputs=d.n_outputs,
                           n_states=o.n_states, kappa=o.kappa, seed=rng, activation=o.activation,
                           include_D=o.include_D, U=d.U)
        if o.beta is not None:  # start inside the (A, B) step's ball ‖b_i‖_1 ≤ β
            model = model.with_weights(B=project_l1_ball_rows(np.asarray(model.B, dtype=float), o.beta))
        X = model.equilibrium(d.U, tol=EQ_TOL)
        return AdjointState(model, rng, X, self._objective(model, X, d.U, d.Y), o.eta)

    def _state_step(self, model, X, U, Y, obj: float, eta: float):
        """Backtracking (A, B) step: (model, X, objective, η used, accepted, trials, gaps, notes)."""
        o = self.opts
        V = implicit_adjoint(model, U, X, loss_grad(self.data.loss, model.output(X, U), Y))
        step = StateStep(model, X, U, V, kappa=o.kappa, lam_l1=o.lam_l1, lam_l2=o.lam_l2,
                         anchor_mu=o.anchor_mu, beta=o.beta)
        gaps, notes = [], []
        for trial in range(1, MAX_TRIALS + 1):
            sol = step.solve(eta, tol=o.tol, **self._solver_kw())
            gaps.append(sol.max_gap)
            notes += uncertified_record("(A, B) rows", sol)
            cand = step.model(model, sol.W)
            X_new = cand.equilibrium(U, X0=X, tol=EQ_TOL)
            obj_new = self._objective(cand, X_new, U, Y)
            if obj_new < obj:
                return cand, X_new, obj_new, eta, True, trial, max(gaps), notes
            eta *= ETA_SHRINK
        return model, X, obj, eta, False, MAX_TRIALS, max(gaps), notes

    def step(self, state: AdjointState) -> Step:
        o, d = self.opts, self.data
        m = d.U.shape[0]
        batched = o.batch_size is not None and o.batch_size < m
        rows = np.sort(state.rng.choice(m, o.batch_size, replace=False)) if batched else slice(None)
        Ub, Yb, Xb = d.U[rows], d.Y[rows], state.X[rows]
        before = self._objective(state.model, Xb, Ub, Yb) if batched else state.objective
        model, cd = self._output_step(state.model, Xb, Ub, Yb)
        mid = self._objective(model, Xb, Ub, Yb)
        if o.s_bound is not None:  # that step restores ‖S‖_∞ ≤ s after (A, B) moved: it may rise
            before = mid
        model, Xb, after, eta_used, accepted, trials, gap_ab, notes = self._state_step(
            model, Xb, Ub, Yb, mid, state.eta)
        X = state.X.copy()
        X[rows] = Xb  # warm start of the full-data evaluation
        rec, X = evaluate(model, d.U, d.Y, d.task, d.loss, self.penalties, X0=X, tol=EQ_TOL)
        objective = rec.pop("train_objective")
        rec = {"objective": objective, **rec, "equilibrium_residual": rec["train_residual"],
               "eta": eta_used, "accepted": accepted, "trials": trials, "max_gap_AB": gap_ab,
               "status_AB": "uncertified" if any(n["step"] == "(A, B) rows" for n in notes) else "optimal",
               "max_gap_CD": cd.gap, "status_CD": cd.status, "max_duality_gap": max(gap_ab, cd.gap),
               "inf_norm_A": inf_norm(model.A)}
        if cd.status == "uncertified":
            notes.append({"step": "(C, D) fit", "rows": "all", "solver": cd.solver, "max_gap": cd.gap})
        if notes:
            rec["uncertified"] = notes
        if batched:
            rec.update(batch_size=int(o.batch_size), batch_objective_before=before,
                       batch_objective=after)
        eta = state.eta if batched else (eta_used * ETA_GROW if accepted else eta_used)
        rel = (before - after) / max(abs(before), 1e-300)
        stop = not batched and (not accepted or rel < o.min_rel_decrease)
        return Step(AdjointState(model, state.rng, X, objective, eta), rec, stop)

    def finish(self, state: AdjointState, model) -> FitResult:
        """Final (C, D) refit on the final states of `model`, checks and the summary."""
        o, d = self.opts, self.data
        X = state.X if model is state.model else model.equilibrium(d.U, tol=EQ_TOL)
        model, cd = self._output_step(model, X, d.U, d.Y)
        rec = evaluate_at(model, X, d.U, d.Y, d.task, d.loss, self.penalties)
        result = finish_summary(model, rec, cd, o.kappa, "adjoint", d.task, s_bound=o.s_bound)
        result.summary.update(beta=o.beta, inf_norm_B=inf_norm(model.B))
        return result


def finish_summary(model, rec: dict, cd, kappa: float, method: str, task: str, *,
                   s_bound=None) -> FitResult:
    """The checks an alternating method ends with (ball, residual ≤ 1e-8) and its summary; `cd`
    is the final (C, D) fit, `rec` the training record at the final states."""
    norm = inf_norm(model.A)
    if not in_ball(model.A, kappa):
        raise RuntimeError(f"{method} fit left ‖A‖_∞ = {norm!r} > κ = {kappa}; this is a bug")
    if rec["train_residual"] > 1e-8:
        raise RuntimeError(f"final equilibrium residual {rec['train_residual']:.3g} > 1e-8")
    model.metadata.update(method=method, kappa=kappa)
    if task == "classification" and model.metadata.get("classes") is None:
        model.metadata["classes"] = list(range(max(2, model.n_outputs)))
    final = [] if cd.status != "uncertified" else [
        {"iteration": "final", "step": "(C, D) fit", "solver": cd.solver, "max_gap": cd.gap}]
    summary = {**rec, "equilibrium_residual": rec["train_residual"], "inf_norm_A": norm,
               "kappa": kappa, "final_output_fit": cd.to_dict(), "max_duality_gap": cd.gap,
               "final_uncertified": final, "s_bound": s_bound,
               "sensitivity_inf_norm": None if s_bound is None else check_s_bound(model, s_bound)}
    return FitResult(model, [], summary)


fit_adjoint = fit_function(AdjointMethod)
