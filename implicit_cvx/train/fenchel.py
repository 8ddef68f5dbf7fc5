"""Method `fenchel`: Fenchel-lifted block coordinate descent (Gu, Askari, El Ghaoui 2020).

For ReLU, F(x, z) = ½x² + ½(z₊)² − xz = ½(z₊ − x)² + x·(−z)₊ (x ≥ 0) is ≥ 0 and = 0 iff x = z₊.
The relaxed objective, with samples as rows, Z = XAᵀ + UBᵀ + b_x,

    J = L(Y, XCᵀ + UDᵀ + b_y) + λ·(1/m)Σ F(X, Z) + P(A, B, C, D),   ‖A‖_∞ ≤ κ, X ≥ 0,

is decreased block by block (λ fixed within an outer iteration, grown between them):
- (C, D, b_y): the certified convex output fit (convex.losses.fit_output_layer).
- (A, B, b_x): majorize–minimize. ½(z₊)² has a 1-Lipschitz derivative, so
  F(x, z) ≤ F(x, z_k) + (z_k₊ − x)(z − z_k) + ½(z − z_k)² = ½(z − t)² + const with
  t = x + min(z_k, 0), tight at z_k. Each MM step is a squared-loss row problem (certified by
  solve_rows, ℓ1 ball of radius κ on the A part, b_x free), so J never increases.
- X ≥ 0: per-sample convex with the proximal term (ρ_eff/2m)‖X − X_k‖², ρ_eff = λ(ρ + (s − 1)₊),
  s = λ_max(A + Aᵀ) (−xᵀAx is indefinite); solved for all samples at once by FISTA with a
  strong-convexity certificate ‖G‖²(1/2μ − 1/2L) on the suboptimality.
Every block step is accepted only if J did not increase, so J is monotone within an iteration.
The relaxation can fit the data through X alone, so every iteration also reports the TRUE
equilibrium objective; the best true model is kept, and the fit ends with an equilibrium re-solve
and a (C, D) refit on the true states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import option
from ..convex.gram import GramStats
from ..convex.rows import RowSpec
from ..convex.solvers import RowProblem, solve_certified, uncertified_record
from ..model import ImplicitModel
from ..numerics import inf_norm, pre_activation
from .adjoint import finish_summary
from .driver import AlternatingMethod, FitResult, Step, fit_function
from .init import init_model
from .objective import evaluate, evaluate_at, loss_grad, loss_value, penalty_value
from .options import CertifiedStepOptions, LoopOptions, RowParallelOptions, StateModelOptions
from .steps import output_step

EQ_TOL = 1e-12


def fenchel_divergence(X, Z) -> np.ndarray:
    """F(x, z) = ½(z₊ − x)² + x·(−z)₊ elementwise (= ½x² + ½(z₊)² − xz for x ≥ 0)."""
    return 0.5 * (np.maximum(Z, 0.0) - X) ** 2 + X * np.maximum(-Z, 0.0)


def relaxed_objective(model, U, Y, X, loss, lam, penalties=(0.0, 0.0)) -> dict:
    """The relaxed objective J and its parts: loss at X, fenchel = (1/m)ΣF, penalty."""
    parts = {
        "relaxed_loss": loss_value(loss, model.output(X, U), Y),
        "fenchel_gap": float(fenchel_divergence(X, pre_activation(model, X, U)).sum() / len(U)),
        "penalty": penalty_value(model, *penalties),
    }
    parts["relaxed_objective"] = parts["relaxed_loss"] + lam * parts["fenchel_gap"] + parts["penalty"]
    return parts


def _J(model, U, Y, X, loss, lam, penalties) -> float:
    return relaxed_objective(model, U, Y, X, loss, lam, penalties)["relaxed_objective"]


# ---- block steps ---------------------------------------------------------------------------------
def state_weights_step(model, U, X, lam, kappa, penalties, tol, inner=5, mu=1e-4, **solver_kw):
    """(A, B, b_x) ← MM on the Fenchel term: each step a certified squared-loss row problem.

    Returns the model, the largest duality gap (in J's units) of the row problems solved, and
    the history notes of rows accepted uncertified (when solver_kw allows it).
    """
    m, n, p = X.shape[0], model.n_states, model.n_inputs
    R = np.hstack([X, U, np.ones((m, 1))])
    # (λ/2)(1/m)‖t − Rw‖² + λ1‖w‖_1 + λ2‖w‖²  ==  (λ/2)·[(1/m)‖t − Rw‖² + (2λ1/λ)‖w‖_1 + (2λ2/λ)‖w‖²]
    mask = np.append(np.ones(n + p), 0.0)
    G = R.T @ R / m + (2.0 * penalties[1] / lam) * np.diag(mask)
    pen = (2.0 * penalties[0] / lam) * mask
    max_gap, notes = 0.0, []
    for _ in range(inner):
        Z = pre_activation(model, X, U)
        T = X + np.minimum(Z, 0.0)
        W0 = np.hstack([model.A, model.B, model.b_x[:, None]])
        stats = GramStats(G, R.T @ T / m, np.einsum("ij,ij->j", T, T) / m, m)
        spec = RowSpec(penalty=pen, free=[n + p], balls=[(np.arange(n), kappa)], anchor=W0, mu=mu)
        sol = solve_certified(RowProblem(stats, spec), tol=tol, step="(A, B) rows", warm_start=W0,
                              **solver_kw)
        notes += uncertified_record("(A, B) rows", sol)
        max_gap = max(max_gap, 0.5 * lam * float(np.sum(sol.gap)))
        new = model.with_weights(A=sol.W[:, :n], B=sol.W[:, n:n + p], b_x=sol.W[:, -1])
        before = _fenchel_weight_objective(model, U, X, lam, penalties)
        after = _fenchel_weight_objective(new, U, X, lam, penalties)
        if after > before:
            break
        model = new
        if before - after <= tol * max(1.0, abs(before)):
            break
    return model, max_gap, notes


def _fenchel_weight_objective(model, U, X, lam, penalties) -> float:
    F = fenchel_divergence(X, pre_activation(model, X, U))
    return lam * float(F.sum()) / len(U) + penalty_value(model, *penalties)


def _x_objective(model, U, Y, X, Xk, loss, lam, rho_eff):
    """m·(loss + λ(1/m)ΣF) + (ρ_eff/2)‖X − X_k‖²: the X-step objective (separable by sample)."""
    m = len(U)
    Z = pre_activation(model, X, U)
    return (m * loss_value(loss, model.output(X, U), Y) + lam * float(fenchel_divergence(X, Z).sum())
            + 0.5 * rho_eff * float(np.sum((X - Xk) ** 2)))


def _x_gradient(model, U, Y, X, Xk, loss, lam, rho_eff):
    m = len(U)
    Z = pre_activation(model, X, U)
    A = model.A
    g = m * loss_grad(loss, model.output(X, U), Y) @ model.C
    return g + lam * (X + np.maximum(Z, 0.0) @ A - Z - X @ A) + rho_eff * (X - Xk)


def state_step(model, U, Y, Xk, loss, lam, rho, tol, max_iter=500):
    """X ← argmin_{X ≥ 0} of the proximal X objective by FISTA (restart on increase).

    Returns (X, certified suboptimality bound in J's units; None for the non-smooth hinge).
    """
    m = len(U)
    A, C = model.A, model.C
    s = float(np.linalg.eigvalsh(A + A.T)[-1]) if A.size else 0.0
    rho_eff = lam * (rho + max(0.0, s - 1.0))
    mu_sc = rho_eff + lam * (1.0 - s)  # ≥ λρ > 0: modulus of strong convexity
    normA, normC = np.linalg.norm(A, 2), np.linalg.norm(C, 2)
    L_loss = {"squared": 2.0, "cross_entropy": 0.5, "hinge": 0.0}[loss] * normC**2
    L = L_loss + lam * (1.0 + normA) ** 2 + rho_eff
    smooth = loss != "hinge"
    X, Yv, t = Xk.copy(), Xk.copy(), 1.0
    fX = _x_objective(model, U, Y, X, Xk, loss, lam, rho_eff)
    bound = np.inf
    for _ in range(max_iter):
        Xn = np.maximum(Yv - _x_gradient(model, U, Y, Yv, Xk, loss, lam, rho_eff) / L, 0.0)
        Gm2 = float(np.sum((L * (Yv - Xn)) ** 2))
        bound = Gm2 * (0.5 / mu_sc - 0.5 / L) if smooth else np.inf
        fn = _x_objective(model, U, Y, Xn, Xk, loss, lam, rho_eff)
        if fn > fX:  # restart the momentum from the last accepted point
            Yv, t = X.copy(), 1.0
            continue
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        Yv = Xn + ((t - 1.0) / t_next) * (Xn - X)
        X, fX, t = Xn, fn, t_next
        if bound <= tol * max(1.0, abs(fX)):
            break
    return X, (bound / m if smooth else None)



# ---- the method ----------------------------------------------------------------------------------
@dataclass
class FenchelOptions(StateModelOptions, RowParallelOptions, CertifiedStepOptions, LoopOptions):
    max_outer: int = option(30, low=1, estimator="max_iter", help="outer iterations")
    lam: float = option(1.0, low=0, open_low=True, help="weight λ of the Fenchel divergence at iteration 0")
    lam_growth: float = option(1.5, low=1, help="λ_k = lam · lam_growth^k")
    rho: float = option(1.0, low=0, open_low=True, help="proximal weight of the X step, relative to λ")
    lam_l1: float = option(0.0, low=0, estimator="lam_l1", help="ℓ1 penalty on A, B, C, D")
    lam_l2: float = option(0.0, low=0, estimator="lam_l2", help="squared ℓ2 penalty on A, B, C, D")
    ab_inner: int = option(5, low=1, help="majorize–minimize steps of (A, B) per outer iteration")
    x_iter: int = option(300, low=1, help="FISTA iterations of the X step")
    anchor_mu: float = option(1e-4, low=0, open_low=True,
                              help="proximal anchor μ‖W − W_k‖² of the weight steps")
    tol: float = option(1e-9, low=0, open_low=True, help="relative duality-gap tolerance of the steps")
    activation: str = option("relu", choices=("relu",), section="model",
                             help="relu only: the Fenchel divergence is ReLU's")


@dataclass
class FenchelState:
    model: ImplicitModel
    rng: np.random.Generator
    X: np.ndarray  # the relaxed states
    X_eq: np.ndarray  # the true equilibrium of the current model (warm start)
    best: ImplicitModel  # the model of least TRUE training objective so far
    best_value: float
    iteration: int


class FenchelMethod(AlternatingMethod):
    """Fit an implicit model by Fenchel-lifted block coordinate descent (ReLU only).

    λ_k = lam·lam_growth^k, rho relative to λ. Returns the best TRUE model after an equilibrium
    re-solve and a certified (C, D) refit.
    """

    name = "fenchel"
    Options = FenchelOptions
    State = FenchelState

    def _output_step(self, model, X):
        o, d = self.opts, self.data
        return output_step(model, X, d.U, d.Y, d.loss, include_D=o.include_D, mu=o.anchor_mu,
                           lam_l1=o.lam_l1, lam_l2=o.lam_l2, tol=o.tol, **self.solver_kw())

    def start(self, rng) -> FenchelState:
        o, d = self.opts, self.data
        model = init_model(o.init, n_inputs=d.U.shape[1], n_outputs=d.n_outputs,
                           n_states=o.n_states, kappa=o.kappa, seed=rng, activation=o.activation,
                           include_D=o.include_D, U=d.U)
        if any(act.name != "relu" for act, _, _ in model.activation.blocks):
            raise ValueError(
                f"method 'fenchel' needs ReLU states (its Fenchel divergence is ReLU's), got "
                f"activation {model.activation.to_json()}; use method 'adjoint' or 'gradient'")
        X = model.equilibrium(d.U, method="reproducible", tol=EQ_TOL)
        return FenchelState(model, rng, X, X.copy(), model, np.inf, 0)

    def _J(self, model, X, lam) -> float:
        d = self.data
        return relaxed_objective(model, d.U, d.Y, X, d.loss, lam, self.penalties)["relaxed_objective"]

    def _accept(self, model, cand, X, lam, trace):
        """Keep `cand` only if the relaxed objective did not increase; append J to the trace."""
        value = self._J(cand, X, lam)
        trace.append(min(value, trace[-1]))
        return cand if value <= trace[-2] else model

    def step(self, state: FenchelState) -> Step:
        o, d = self.opts, self.data
        lam_k = o.lam * o.lam_growth ** state.iteration
        model, X = state.model, state.X
        trace = [self._J(model, X, lam_k)]
        cand, cd = self._output_step(model, X)
        model = self._accept(model, cand, X, lam_k, trace)
        cand, gap_ab, notes = state_weights_step(model, d.U, X, lam_k, o.kappa, self.penalties,
                                                 o.tol, o.ab_inner, o.anchor_mu, **self.solver_kw())
        model = self._accept(model, cand, X, lam_k, trace)
        Xn, gap_x = state_step(model, d.U, d.Y, X, d.loss, lam_k, o.rho, o.tol, o.x_iter)
        if self._J(model, Xn, lam_k) <= trace[-1]:
            X = Xn
        trace.append(self._J(model, X, lam_k))
        rec = {"lam": lam_k, "relaxed_trace": trace,
               **relaxed_objective(model, d.U, d.Y, X, d.loss, lam_k, self.penalties)}
        true, X_eq = evaluate(model, d.U, d.Y, d.task, d.loss, self.penalties, X0=state.X_eq,
                              tol=EQ_TOL)
        rec.update(true)
        best, best_value = state.best, state.best_value
        if true["train_objective"] < best_value:
            best, best_value = model, true["train_objective"]
        if cd.status == "uncertified":
            notes.append({"step": "(C, D) fit", "rows": "all", "solver": cd.solver, "max_gap": cd.gap})
        rec.update(gap_CD=cd.gap, gap_AB=gap_ab, gap_X=gap_x,
                   max_duality_gap=max(g for g in (cd.gap, gap_ab, gap_x, 0.0) if g is not None),
                   inf_norm_A=inf_norm(model.A), **({"uncertified": notes} if notes else {}))
        return Step(FenchelState(model, state.rng, X, X_eq, best, best_value, state.iteration + 1), rec)

    def finish(self, state: FenchelState, model) -> FitResult:
        """Equilibrium re-solve of the best model and a certified (C, D) refit on its true states,
        kept if it lowers the true objective. The refit keeps the run's proximal anchor: an
        unanchored refit overfits (|C| in the hundreds on §7.1) and is slow on separable data."""
        d, o = self.data, self.opts
        best = state.best if model is state.model else model
        X = best.equilibrium(d.U, method="reproducible", tol=EQ_TOL)
        before = evaluate_at(best, X, d.U, d.Y, d.task, d.loss, self.penalties)
        refit, cd = self._output_step(best, X)
        after = evaluate_at(refit, X, d.U, d.Y, d.task, d.loss, self.penalties)
        final, rec = (refit, after) if after["train_objective"] <= before["train_objective"] else (best, before)
        result = finish_summary(final, rec, cd, o.kappa, "fenchel", d.task)
        result.summary["fenchel_gap"] = relaxed_objective(
            state.model, d.U, d.Y, state.X, d.loss, 1.0, self.penalties)["fenchel_gap"]
        return result


fit_fenchel = fit_function(FenchelMethod)
