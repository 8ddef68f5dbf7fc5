"""Method `fenchel`: Fenchel-lifted block coordinate descent (DESIGN §6.2 b; Gu, Askari, El Ghaoui 2020).

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

import time

import numpy as np

from ..convex.gram import GramStats
from ..convex.losses import fit_output_layer
from ..convex.rows import RowSpec, solve_rows
from ..wellposed import check_kappa, inf_norm
from .init import as_generator, init_model
from .objective import FitResult, evaluate, loss_grad, loss_value, penalty_value, prepare_data
from .runlog import progress_bar, restore_rng, rng_state

ANCHOR_MU = 1e-4  # default proximal anchor μ‖W − W_k‖² of the weight steps (singular Gram matrices)


def fenchel_divergence(X, Z) -> np.ndarray:
    """F(x, z) = ½(z₊ − x)² + x·(−z)₊ elementwise (= ½x² + ½(z₊)² − xz for x ≥ 0)."""
    return 0.5 * (np.maximum(Z, 0.0) - X) ** 2 + X * np.maximum(-Z, 0.0)


def pre_activations(model, X, U) -> np.ndarray:
    """Z = XAᵀ + UBᵀ + b_x."""
    return X @ model.A.T + U @ model.B.T + model.b_x


def relaxed_objective(model, U, Y, X, loss, lam, penalties=(0.0, 0.0)) -> dict:
    """The relaxed objective J and its parts: loss at X, fenchel = (1/m)ΣF, penalty."""
    parts = {
        "relaxed_loss": loss_value(loss, model.output(X, U), Y),
        "fenchel_gap": float(fenchel_divergence(X, pre_activations(model, X, U)).sum() / len(U)),
        "penalty": penalty_value(model, *penalties),
    }
    parts["relaxed_objective"] = parts["relaxed_loss"] + lam * parts["fenchel_gap"] + parts["penalty"]
    return parts


def _J(model, U, Y, X, loss, lam, penalties) -> float:
    return relaxed_objective(model, U, Y, X, loss, lam, penalties)["relaxed_objective"]


# ---- block steps ---------------------------------------------------------------------------------
def output_step(model, U, Y, X, loss, penalties, include_D, tol, mu=ANCHOR_MU, **par):
    """(C, D, b_y) ← certified output fit on features [X, U] (or X when D is fixed at 0)."""
    F = np.hstack([X, U]) if include_D else X
    W0 = np.hstack([model.C, model.D]) if include_D else model.C
    W, b, info = fit_output_layer(F, Y, loss, lam_l1=penalties[0], lam_l2=penalties[1],
                                  anchor=(W0, model.b_y, mu), tol=tol, warm_start=(W0, model.b_y),
                                  **par)
    n = model.n_states
    changes = {"C": W[:, :n], "b_y": b}
    if include_D:
        changes["D"] = W[:, n:]
    return model.with_weights(**changes), info.gap


def state_weights_step(model, U, X, lam, kappa, penalties, tol, inner=5, mu=ANCHOR_MU, **par):
    """(A, B, b_x) ← MM on the Fenchel term: each step a certified squared-loss row problem.

    Returns the model and the largest duality gap (in J's units) of the row problems solved.
    """
    m, n, p = X.shape[0], model.n_states, model.n_inputs
    R = np.hstack([X, U, np.ones((m, 1))])
    # (λ/2)(1/m)‖t − Rw‖² + λ1‖w‖_1 + λ2‖w‖²  ==  (λ/2)·[(1/m)‖t − Rw‖² + (2λ1/λ)‖w‖_1 + (2λ2/λ)‖w‖²]
    mask = np.append(np.ones(n + p), 0.0)
    G = R.T @ R / m + (2.0 * penalties[1] / lam) * np.diag(mask)
    pen = (2.0 * penalties[0] / lam) * mask
    max_gap = 0.0
    for _ in range(inner):
        Z = pre_activations(model, X, U)
        T = X + np.minimum(Z, 0.0)
        W0 = np.hstack([model.A, model.B, model.b_x[:, None]])
        stats = GramStats(G, R.T @ T / m, np.einsum("ij,ij->j", T, T) / m, m)
        spec = RowSpec(penalty=pen, free=[n + p], balls=[(np.arange(n), kappa)], anchor=W0, mu=mu)
        sol = solve_rows(stats, spec, tol=tol, warm_start=W0, **par)
        max_gap = max(max_gap, 0.5 * lam * float(np.sum(sol.gap)))
        new = model.with_weights(A=sol.W[:, :n], B=sol.W[:, n:n + p], b_x=sol.W[:, -1])
        before = _fenchel_weight_objective(model, U, X, lam, penalties)
        after = _fenchel_weight_objective(new, U, X, lam, penalties)
        if after > before:
            break
        model = new
        if before - after <= tol * max(1.0, abs(before)):
            break
    return model, max_gap


def _fenchel_weight_objective(model, U, X, lam, penalties) -> float:
    F = fenchel_divergence(X, pre_activations(model, X, U))
    return lam * float(F.sum()) / len(U) + penalty_value(model, *penalties)


def _x_objective(model, U, Y, X, Xk, loss, lam, rho_eff):
    """m·(loss + λ(1/m)ΣF) + (ρ_eff/2)‖X − X_k‖²: the X-step objective (separable by sample)."""
    m = len(U)
    Z = pre_activations(model, X, U)
    return (m * loss_value(loss, model.output(X, U), Y) + lam * float(fenchel_divergence(X, Z).sum())
            + 0.5 * rho_eff * float(np.sum((X - Xk) ** 2)))


def _x_gradient(model, U, Y, X, Xk, loss, lam, rho_eff):
    m = len(U)
    Z = pre_activations(model, X, U)
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


# ---- the fit -------------------------------------------------------------------------------------
def fit_fenchel(
    U,
    Y,
    *,
    task: str,
    loss: str | None = None,
    n_states: int | None = 64,
    kappa: float = 0.95,
    include_D: bool = True,
    lam: float = 1.0,
    lam_growth: float = 1.5,
    rho: float = 1.0,
    max_outer: int = 30,
    lam_l1: float = 0.0,
    lam_l2: float = 0.0,
    ab_inner: int = 5,
    x_iter: int = 300,
    anchor_mu: float = ANCHOR_MU,
    init=None,
    seed=0,
    U_val=None,
    Y_val=None,
    run=None,
    progress: bool = False,
    tol: float = 1e-9,
    n_jobs: int = 1,
    backend: str = "serial",
) -> FitResult:
    """Fenchel-lifted BCD (ReLU only); λ_k = lam·lam_growth^k; rho is relative to λ.

    History per outer iteration: the relaxed objective after each block step (`relaxed_trace`,
    monotone), its parts, the TRUE equilibrium objective/loss/metrics/residual, the duality gaps
    of the block steps, validation metrics and seconds. Returns the best true model after an
    equilibrium re-solve and a certified (C, D) refit on the true states.
    """
    t_start = time.perf_counter()
    kappa = check_kappa(kappa)
    U, Y, loss, q, U_val, Y_val = prepare_data(U, Y, task, loss, U_val, Y_val)
    for name, v, low in (("lam", lam, 0.0), ("rho", rho, 0.0), ("anchor_mu", anchor_mu, 0.0)):
        if not (np.isfinite(v) and v > low):
            raise ValueError(f"{name}={v!r} must be a positive number")
    if not (np.isfinite(lam_growth) and lam_growth >= 1.0):
        raise ValueError(f"lam_growth={lam_growth!r} must be ≥ 1 (λ grows between outer iterations)")
    if int(max_outer) != max_outer or max_outer < 1:
        raise ValueError(f"max_outer={max_outer!r} must be a positive integer")
    if lam_l1 < 0 or lam_l2 < 0:
        raise ValueError(f"penalties must be ≥ 0, got lam_l1={lam_l1}, lam_l2={lam_l2}")
    rng = as_generator(seed)
    model = init_model(init, n_inputs=U.shape[1], n_outputs=q, n_states=n_states, kappa=kappa,
                       seed=rng, include_D=include_D, U=U)
    if any(act.name != "relu" for act, _, _ in model.activation.blocks):
        raise ValueError(
            f"method 'fenchel' needs ReLU states (its Fenchel divergence is ReLU's), got activation "
            f"{model.activation.to_json()}; use method 'adjoint' or 'gradient' for other activations"
        )
    penalties = (lam_l1, lam_l2)
    par = {"n_jobs": n_jobs, "backend": backend}
    X = model.equilibrium(U, tol=1e-12)
    X_eq, best, best_value, start, elapsed0 = X.copy(), model, np.inf, 0, 0.0
    if run is not None and run.resumed is not None:
        ck = run.resumed
        model, start, rng = ck.model, ck.iteration + 1, restore_rng(ck.state["rng"])
        X, X_eq = ck.arrays["X"].copy(), ck.arrays["X_eq"].copy()
        best, best_value, elapsed0 = ck.models["best"], ck.state["best_value"], ck.state["seconds"]
    history = run.history() if run is not None else []
    bar = progress_bar(max_outer, progress, "fenchel", initial=start)
    it = start - 1
    max_gap = max([r["max_duality_gap"] for r in history] or [0.0])
    for it in range(start, max_outer):
        lam_k = lam * lam_growth**it
        trace = [_J(model, U, Y, X, loss, lam_k, penalties)]
        cand, gap_cd = output_step(model, U, Y, X, loss, penalties, include_D, tol, anchor_mu, **par)
        model = _accept(model, cand, U, Y, X, loss, lam_k, penalties, trace)
        cand, gap_ab = state_weights_step(model, U, X, lam_k, kappa, penalties, tol, ab_inner,
                                           anchor_mu, **par)
        model = _accept(model, cand, U, Y, X, loss, lam_k, penalties, trace)
        Xn, gap_x = state_step(model, U, Y, X, loss, lam_k, rho, tol, x_iter)
        if _J(model, U, Y, Xn, loss, lam_k, penalties) <= trace[-1]:
            X = Xn
        trace.append(_J(model, U, Y, X, loss, lam_k, penalties))
        rec = {"iteration": it, "lam": lam_k, "relaxed_trace": trace,
               **relaxed_objective(model, U, Y, X, loss, lam_k, penalties)}
        true, X_eq = evaluate(model, U, Y, task, loss, penalties, X0=X_eq, tol=1e-12)
        rec.update(true)
        if true["train_objective"] < best_value:
            best, best_value = model, true["train_objective"]
        if U_val is not None:
            rec.update(evaluate(model, U_val, Y_val, task, loss, penalties, tol=1e-12, prefix="val")[0])
        max_step_gap = max(g for g in (gap_cd, gap_ab, gap_x, 0.0) if g is not None)
        max_gap = max(max_gap, max_step_gap)
        rec.update(gap_CD=gap_cd, gap_AB=gap_ab, gap_X=gap_x, max_duality_gap=max_step_gap,
                   inf_norm_A=inf_norm(model.A), seconds=elapsed0 + time.perf_counter() - t_start)
        history.append(rec)
        bar.update()
        bar.set_postfix(true=f"{true['train_objective']:.4g}", relaxed=f"{trace[-1]:.4g}")
        if run is not None:
            run.log(rec)
            if run.due(it, final=it == max_outer - 1):
                run.checkpoint(it, model, {"rng": rng_state(rng), "best_value": best_value,
                                           "seconds": rec["seconds"]},
                               {"X": X, "X_eq": X_eq}, {"best": best})
    bar.close()
    final, summary = _finish(best, U, Y, task, loss, penalties, include_D, tol, anchor_mu, par)
    summary.update(outer_iterations=it + 1, max_duality_gap=max(max_gap, summary["max_duality_gap"]),
                   fenchel_gap=history[-1]["fenchel_gap"] if history else 0.0, kappa=kappa,
                   seconds=elapsed0 + time.perf_counter() - t_start)
    final.metadata.update(method="fenchel", kappa=kappa)
    return FitResult(final, history, summary)


def _accept(model, cand, U, Y, X, loss, lam, penalties, trace):
    """Keep `cand` only if the relaxed objective did not increase; append J to the trace."""
    value = _J(cand, U, Y, X, loss, lam, penalties)
    if value <= trace[-1]:
        trace.append(value)
        return cand
    trace.append(trace[-1])
    return model


def _finish(best, U, Y, task, loss, penalties, include_D, tol, anchor_mu, par):
    """Equilibrium re-solve of the best model and a certified (C, D) refit on the true states.

    The refit keeps the run's proximal anchor: an unanchored refit overfits (|C| in the hundreds on
    §7.1) and is slow on separable data."""
    X = best.equilibrium(U, tol=1e-12)
    before = evaluate(best, U, Y, task, loss, penalties, X0=X, tol=1e-12)[0]
    refit, gap = output_step(best, U, Y, X, loss, penalties, include_D, tol, anchor_mu, **par)
    after, _ = evaluate(refit, U, Y, task, loss, penalties, X0=X, tol=1e-12)
    final, rec = (refit, after) if after["train_objective"] <= before["train_objective"] else (best, before)
    summary = {**rec, "equilibrium_residual": rec["train_residual"], "inf_norm_A": inf_norm(final.A),
               "max_duality_gap": gap}
    return final, summary
