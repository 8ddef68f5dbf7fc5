"""Certified convex fits of the output layer (C, D, b_y) on fixed features F = [X, U].

    minimize_{W, b}  (1/m) Σ_i ℓ(W f_i + b, y_i) + Σ_j λ_j‖W_:j‖_1 + λ2‖W‖_F² + μ‖[W b] − [W0 b0]‖²
    subject to       ‖W_i,g‖_1 ≤ r_g for every output row i and ball group g (e.g. ‖c_i‖_1 + ‖d_i‖_1 ≤ γ)

Squared loss separates by rows: it goes to the one row engine (gram_stats + solve_rows).
Cross-entropy and the Crammer–Singer hinge couple the rows and keep m: cross-entropy is solved
natively by FISTA with adaptive restart, hinge by cvxpy + Clarabel. Both carry the same certificate:
a Fenchel duality gap P(Θ) − D(Λ) with D(Λ) = −h*(Λ) − g*(−ΛᵀF̃), computed here from primal and
dual values, never taken from a solver. The dual point is π_i = m·λ_i + e_{y_i} in the simplex of
each sample (softmax probabilities for CE, the epigraph multipliers for hinge), balanced so the free
bias has Σ_i λ_i = 0, then scaled into the domain of the ℓ1 parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax, xlogy

from ..numerics import cross_entropy, hinge, project_balls, project_l1_ball_rows
from .gram import GramStats, GramSums, gram_sums, reduce_gram
from .rows import RowFitError, RowSpec
from .solvers import RowProblem, solve_certified

OUTPUT_LOSSES = ("squared", "cross_entropy", "hinge")


@dataclass
class OutputFitInfo:
    """Certified result of an output-layer fit: objective P, gap ≥ P − P*, status, iterations."""

    objective: float
    gap: float
    status: str
    iterations: int
    solver: str = "native"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---- the regularizer g(Θ), Θ = [W b] (q, d+1) ---------------------------------------------------
class _Regularizer:
    """g(Θ) = Σ λ_j|W_ij| + λ2‖W‖² + μ‖Θ − Θ0‖² + ball indicators: value, prox, conjugate."""

    def __init__(self, q: int, d: int, lam_l1, lam_l2: float, anchor, balls):
        lam = np.asarray(lam_l1, dtype=float)
        lam = np.full(d, float(lam)) if lam.ndim == 0 else lam
        if lam.shape != (d,) or not np.all(np.isfinite(lam)) or np.any(lam < 0):
            raise ValueError(f"lam_l1 must be ≥ 0, a scalar or shape ({d},), got {lam_l1!r}")
        if not (np.isfinite(lam_l2) and lam_l2 >= 0):
            raise ValueError(f"lam_l2 must be finite and ≥ 0, got {lam_l2}")
        self.q, self.d = q, d
        self.lam = np.append(lam, 0.0)  # the bias column is never penalized
        self.mu, self.theta0 = 0.0, np.zeros((q, d + 1))
        if anchor is not None:
            self.theta0, self.mu = _check_anchor(anchor, q, d)
        self.rho = np.append(np.full(d, lam_l2 + self.mu), self.mu)
        self.lam_l2 = float(lam_l2)
        self.balls = _check_balls(balls, d)
        in_ball = np.zeros(d + 1, dtype=bool)
        for idx, _ in self.balls:
            in_ball[idx] = True
        self.out = np.flatnonzero(~in_ball)
        self.ball_rho = lam_l2 + self.mu

    def value(self, theta: np.ndarray) -> float:
        W = theta[:, :-1]
        return float(
            np.abs(W) @ self.lam[:-1] @ np.ones(self.q)
            + self.lam_l2 * np.sum(W * W)
            + self.mu * np.sum((theta - self.theta0) ** 2)
        )

    def prox(self, V: np.ndarray, step: float) -> np.ndarray:
        """argmin_Θ ‖Θ − V‖²/(2·step) + g(Θ): fold the quadratics in, soft-threshold, project balls."""
        t = 1.0 / (1.0 / step + 2.0 * self.rho)
        Vp = t * (V / step + 2.0 * self.mu * self.theta0)
        return self.project(np.sign(Vp) * np.maximum(np.abs(Vp) - t * self.lam, 0.0))

    def project(self, theta: np.ndarray) -> np.ndarray:
        """Θ with each ball part of each row projected onto its ℓ1 ball."""
        return project_balls(theta, self.balls)

    def certifiable(self) -> None:
        """A finite dual bound needs every W coordinate outside a ball to be penalized."""
        bad = [j for j in self.out[:-1] if self.lam[j] == 0 and self.rho[j] == 0]
        if bad:
            raise ValueError(
                f"the output-layer fit has unpenalized, unconstrained coefficients (columns "
                f"{bad[:10]}): without lam_l1 > 0, lam_l2 > 0, an anchor μ > 0 or a ball the problem "
                f"may have no minimizer (separable data) and no certificate; add one of them"
            )

    def scale_limit(self, S: np.ndarray) -> float:
        """Largest t ≤ 1 with tS in dom g*: |tS_ij| ≤ λ_j where ρ_j = 0 outside balls (bias excluded)."""
        cols = [j for j in self.out[:-1] if self.rho[j] == 0]
        if not cols:
            return 1.0
        a = np.abs(S[:, cols]).max(axis=0)
        with np.errstate(divide="ignore"):
            return float(min(1.0, np.min(np.where(a > 0, self.lam[cols] / a, np.inf))))

    def conjugate(self, S: np.ndarray) -> float:
        """g*(S) = sup_Θ ⟨S, Θ⟩ − g(Θ); balls by their Lagrangian ν (a valid upper bound)."""
        Sp = S + 2.0 * self.mu * self.theta0
        total = -self.mu * np.sum(self.theta0**2)
        o = self.out[:-1]
        excess = np.maximum(np.abs(Sp[:, o]) - self.lam[o], 0.0)
        pos = self.rho[o] > 0
        total += np.sum(excess[:, pos] ** 2 / (4.0 * self.rho[o][pos]))
        if self.mu > 0:  # the bias; with μ = 0 the dual point is balanced (S_b = 0) instead
            total += np.sum(Sp[:, -1] ** 2) / (4.0 * self.mu)
        for idx, r in self.balls:
            a = np.maximum(np.abs(Sp[:, idx]) - self.lam[idx], 0.0)
            if self.ball_rho > 0:
                # min_ν νr + Σ (a_j − ν)_+²/(4ρ): ν is the ℓ1-projection threshold of a at radius 2ρr
                proj = project_l1_ball_rows(a, 2.0 * self.ball_rho * r)
                nu = np.max(a - proj, axis=1)
                total += np.sum(nu * r + np.sum(np.maximum(a - nu[:, None], 0) ** 2, axis=1)
                                / (4.0 * self.ball_rho))
            else:
                total += r * np.sum(a.max(axis=1))
        return float(total)


def _check_anchor(anchor, q: int, d: int):
    try:
        W0, b0, mu = anchor
    except (TypeError, ValueError):
        raise ValueError("anchor must be a (W0 (q, d), b0 (q,), mu) triple") from None
    W0, b0, mu = np.asarray(W0, dtype=float), np.asarray(b0, dtype=float), float(mu)
    if W0.shape != (q, d) or b0.shape != (q,):
        raise ValueError(f"anchor W0, b0 must have shapes ({q}, {d}), ({q},); got {W0.shape}, {b0.shape}")
    if not (np.isfinite(mu) and mu >= 0):
        raise ValueError(f"anchor μ must be finite and ≥ 0, got {mu}")
    return np.column_stack([W0, b0]), mu


def _check_balls(balls, d: int) -> list:
    out, seen = [], np.zeros(d, dtype=bool)
    for g, item in enumerate(balls or ()):
        idx, r = item
        idx, r = np.asarray(idx, dtype=int).ravel(), float(r)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= d or np.any(seen[idx]):
            raise ValueError(f"ball {g}: indices must be non-empty, disjoint and in [0, {d}), got {idx[:10]}")
        if not (np.isfinite(r) and r > 0):
            raise ValueError(f"ball {g}: radius must be finite and > 0, got {r}")
        seen[idx] = True
        out.append((idx, r))
    return out


# ---- losses in dual form -----------------------------------------------------------------------
def _loss_mean(loss: str, Yhat: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((cross_entropy if loss == "cross_entropy" else hinge)(Yhat, y)))


def _loss_conjugate(loss: str, Pi: np.ndarray, y: np.ndarray) -> float:
    """h*(Λ) for π_i = mλ_i + e_{y_i} in the simplex: mean negative entropy (CE) or mean π_{i,y_i} − 1."""
    if loss == "cross_entropy":
        return float(np.sum(xlogy(Pi, Pi)) / len(y))
    return float(np.mean(Pi[np.arange(len(y)), y] - 1.0))


def _balance_mix(S: np.ndarray, counts: np.ndarray, m: int):
    """(t, ν): mixing π ← (1 − t)π + tν toward a common distribution ν makes Σ_i π_i = class
    counts (Σλ_i = 0: free bias); t = 0 when no mixing is needed."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float(np.max(np.where(S > 0, 1.0 - counts / S, 0.0)))
    if t <= 0:
        return 0.0, np.zeros_like(S)
    nu = np.maximum((counts - (1.0 - t) * S) / (t * m), 0.0)
    return t, nu / nu.sum()


# ---- per-partition terms: every data term of the fit and its certificate is a sum over samples ----
def _onehot(y: np.ndarray, q: int) -> np.ndarray:
    E = np.zeros((len(y), q))
    E[np.arange(len(y)), y] = 1.0
    return E


def _ce_sums(part, points: list):
    """[(Σ_i CE_i, Σ_i (p_i − e_{y_i}) f̃_iᵀ or None) at each (Θ, with gradient?) of `points`] on
    one partition (F̃_p, y_p): several points per pass over the partition."""
    Ft, y = part
    out = []
    for theta, grad in points:
        Z = Ft @ theta.T
        Z -= Z.max(axis=1, keepdims=True)
        expZ = np.exp(Z)
        s = expZ.sum(axis=1)
        val = float(np.sum(np.log(s) - Z[np.arange(len(y)), y]))
        out.append((val, (expZ / s[:, None] - _onehot(y, theta.shape[0])).T @ Ft if grad else None))
    return out


def _feature_gram(part) -> np.ndarray:
    Ft, _ = part
    return Ft.T @ Ft


def _softmax_part(part, theta: np.ndarray) -> np.ndarray:
    """The dual guess of cross-entropy on one partition: softmax probabilities of F̃θᵀ."""
    return softmax(part[0] @ theta.T, axis=1)


def _dual_sums(item, loss: str, theta: np.ndarray):
    """Sums of one partition for the certificate: Σ loss, Σ π_i, class counts, ΠᵀF̃, EᵀF̃, Σ f̃_i."""
    (Ft, y), Pi = item
    q = theta.shape[0]
    losses = (cross_entropy if loss == "cross_entropy" else hinge)(Ft @ theta.T, y)
    return (float(np.sum(losses)), Pi.sum(axis=0), np.bincount(y, minlength=q).astype(float),
            Pi.T @ Ft, _onehot(y, q).T @ Ft, Ft.sum(axis=0))


def _conjugate_sums(item, loss: str, t_mix: float, nu: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """m·h*(Λ) on one partition at π_i = t((1 − t_mix)π_i + t_mix ν) + (1 − t)e_{y_i}, for
    every scale t in ts (one pass over the partition for all of them)."""
    (_, y), Pi = item
    Pb = (1.0 - t_mix) * Pi + t_mix * nu if t_mix > 0 else Pi
    if loss == "cross_entropy":
        E = _onehot(y, Pi.shape[1])
        return np.array([np.sum(xlogy(m, m)) for m in (t * Pb + (1 - t) * E for t in ts)])
    true = np.sum(Pb[np.arange(len(y)), y])
    return np.array([t * true + (1 - t) * len(y) - len(y) for t in ts])


def _zoom_max(f, lo: float, hi: float, points: int = 17, levels: int = 8) -> float:
    """The best value of a concave f seen on grids of `points` on [lo, hi], each level zoomed to
    the two cells around the best point (width × 2/(points − 1) per level); f takes an array of
    points, so each level is one evaluation (one pass over the partitions)."""
    best = -np.inf
    for _ in range(levels):
        ts = np.linspace(lo, hi, points)
        vals = f(ts)
        i = int(np.argmax(vals))
        best = max(best, float(vals[i]))
        cell = (hi - lo) / (points - 1)
        lo, hi = max(lo, ts[i] - cell), min(hi, ts[i] + cell)
    return best


class Samples:
    """The samples of an output fit as partitions (F̃_p = [F_p, 1], y_p) held by a Cluster
    (parallel.Cluster): objective, gradient and certificate terms are sums of per-partition
    terms, so only (q, d+1) matrices travel. In memory: one partition in this process."""

    def __init__(self, cluster, parts: list, m: int):
        self.cluster, self.parts, self.m = cluster, parts, int(m)

    @classmethod
    def in_memory(cls, Ft: np.ndarray, y: np.ndarray) -> Samples:
        from ..parallel import Cluster

        return cls(Cluster("memory"), [(Ft, y)], len(y))

    def value_grad(self, points: list) -> list:
        """[(mean cross-entropy at Θ, its gradient or None) for each (Θ, with gradient?) of
        `points`], all in one pass over the partitions."""
        sums = self.cluster.map(_ce_sums, self.parts, points)
        out = []
        for k, (_, grad) in enumerate(points):
            val = sum(part[k][0] for part in sums) / self.m
            out.append((val, sum(part[k][1] for part in sums) / self.m if grad else None))
        return out

    def lipschitz(self) -> float:
        """½λ_max(F̃ᵀF̃/m): a bound of the cross-entropy Hessian."""
        G = sum(self.cluster.map(_feature_gram, self.parts)) / self.m
        return max(0.5 * np.linalg.eigvalsh(G)[-1], 1e-300)

    def softmax(self, theta: np.ndarray) -> list:
        """Per-partition handles of softmax(F̃θᵀ) (they stay where the partitions are)."""
        return self.cluster.submit(_softmax_part, self.parts, theta)

    def dual_items(self, Pi: list) -> list:
        return list(zip(self.parts, Pi, strict=True))


def certify_samples(loss: str, samples: Samples, theta: np.ndarray, reg: _Regularizer, Pi: list,
                    rtol: float = 0.0) -> tuple[float, float]:
    """(P(Θ), certified gap P(Θ) − max_t D(tΛ)) from per-partition dual guesses Π_p (rows in the
    simplex): D(Λ) = −h*(Λ) − g*(−ΛᵀF̃), every data term a sum over partitions.

    The scale t is searched (zoomed grids) only while the gap exceeds rtol·max(1, |P(Θ)|).
    """
    m, items = samples.m, samples.dual_items(Pi)
    parts = samples.cluster.map(_dual_sums, items, loss, theta)
    loss_sum, S_pi, counts, PiF, EF, F_sum = (sum(p[i] for p in parts) for i in range(6))
    primal = loss_sum / m + reg.value(theta)
    t_mix, nu = _balance_mix(S_pi, counts, m) if reg.mu == 0 else (0.0, np.zeros_like(S_pi))
    PbF = (1.0 - t_mix) * PiF + t_mix * np.outer(nu, F_sum) if t_mix > 0 else PiF
    S = -(PbF - EF) / m

    def dual(ts: np.ndarray) -> np.ndarray:
        h = sum(samples.cluster.map(_conjugate_sums, items, loss, t_mix, nu, ts)) / m
        return -h - np.array([reg.conjugate(t * S) for t in ts])

    hi = reg.scale_limit(S)
    best = float(np.max(dual(np.array([0.0, hi]))))
    if primal - best > rtol * max(1.0, abs(primal)):  # D(tΛ) is concave in t: zoomed grids
        best = max(best, _zoom_max(dual, 0.0, hi))
    return primal, max(primal - best, 0.0)


def certify(loss: str, Ft: np.ndarray, y: np.ndarray, theta: np.ndarray, reg: _Regularizer,
            Pi: np.ndarray, rtol: float = 0.0) -> tuple[float, float]:
    """certify_samples on samples in memory: F̃ (m, d+1), labels y, dual guess Π (m, q)."""
    return certify_samples(loss, Samples.in_memory(Ft, y), theta, reg, [Pi], rtol)


# ---- solvers -----------------------------------------------------------------------------------
def _fista_ce(samples: Samples, reg: _Regularizer, theta, tol, max_iter, check_every=25):
    """FISTA with backtracking and gradient restart on mean softmax CE over the samples.

    L = ½λ_max(F̃ᵀF̃/m) bounds the Hessian; the local L is lowered by 10% per step and doubled
    while the sufficient-decrease test fails (never above the bound), since near a confident fit the
    softmax curvature is far below ½. The pass that tests a step also evaluates the value and
    gradient at the next extrapolated point, used when the step is accepted (one pass per step).
    """
    L_max = samples.lipschitz()
    L = L_max
    theta = reg.project(theta)
    Yk, tk = theta.copy(), 1.0
    it = 0
    while True:
        primal, gap = certify_samples("cross_entropy", samples, theta, reg,
                                      samples.softmax(theta), tol)
        if gap <= tol * max(1.0, abs(primal)) or it >= max_iter:
            return theta, primal, gap, it
        fY, gY = samples.value_grad([(Yk, True)])[0]
        for _ in range(min(check_every, max_iter - it)):
            L = 0.9 * L
            while True:
                new = reg.prox(Yk - gY / L, 1.0 / L)
                D = new - Yk
                quad = fY + np.sum(gY * D) + 0.5 * L * np.sum(D * D)
                restart = np.sum((Yk - new) * (new - theta)) > 0  # (O'Donoghue–Candès)
                t_k = 1.0 if restart else tk
                t1 = (1 + np.sqrt(1 + 4 * t_k * t_k)) / 2
                Y_next = new + ((t_k - 1) / t1) * (new - theta)
                (f_new, _), ahead = samples.value_grad([(new, False), (Y_next, True)])
                if L >= L_max or f_new <= quad + 1e-15 * abs(fY):
                    break
                L = min(2.0 * L, L_max)
            Yk, theta, tk = Y_next, new, t1
            fY, gY = ahead
            it += 1


def output_layer_problem(F, y, loss: str, reg: _Regularizer):
    """The fit as a cvxpy problem (DCP): returns (problem, Θ variable, hinge epigraph constraint)."""
    import cvxpy as cp

    m, d = F.shape
    q = reg.q
    W, b = cp.Variable((q, d)), cp.Variable(q)
    Yhat = F @ W.T + np.ones((m, 1)) @ cp.reshape(b, (1, q), order="C")
    E = np.zeros((m, q))
    E[np.arange(m), y] = 1.0
    cons, epi = [], None
    if loss == "cross_entropy":
        data = (cp.sum(cp.log_sum_exp(Yhat, axis=1)) - cp.sum(cp.multiply(E, Yhat))) / m
    else:
        t = cp.Variable(m)
        true = cp.sum(cp.multiply(E, Yhat), axis=1)
        margins = Yhat + (1.0 - E) - cp.reshape(true, (m, 1), order="C") @ np.ones((1, q))
        epi = margins <= cp.reshape(t, (m, 1), order="C") @ np.ones((1, q))
        cons.append(epi)
        data = cp.sum(t) / m
    theta = cp.hstack([W, cp.reshape(b, (q, 1), order="C")])
    penalty = cp.sum(cp.abs(W) @ reg.lam[:-1]) + reg.lam_l2 * cp.sum_squares(W)
    if reg.mu > 0:
        penalty = penalty + reg.mu * cp.sum_squares(theta - reg.theta0)
    for idx, r in reg.balls:
        cons.append(cp.sum(cp.abs(W[:, idx]), axis=1) <= r)
    return cp.Problem(cp.Minimize(data + penalty), cons), theta, epi


def _cvxpy_fit(F, Ft, y, loss, reg, tol):
    """Clarabel solve; the returned point is projected into the balls and certified by us."""
    prob, theta, epi = output_layer_problem(F, y, loss, reg)
    if not prob.is_dcp():
        raise RuntimeError("output-layer problem failed the DCP check; this is a bug")
    eps = max(1e-2 * tol, 1e-12)
    prob.solve(solver="CLARABEL", tol_gap_abs=eps, tol_gap_rel=eps, tol_feas=eps, max_iter=500)
    if theta.value is None:
        raise RuntimeError(f"Clarabel returned no solution for the {loss} output fit (status {prob.status})")
    Th = reg.project(np.array(theta.value))
    if loss == "hinge":
        Pi = np.maximum(np.asarray(epi.dual_value), 0.0)
        Pi = Pi / np.maximum(Pi.sum(axis=1, keepdims=True), 1e-300)
    else:
        Pi = softmax(Ft @ Th.T, axis=1)
    primal, gap = certify(loss, Ft, y, Th, reg, Pi)
    iters = int(prob.solver_stats.num_iters or 0)
    return Th, primal, gap, iters


def _gram_part(part) -> GramSums:
    Ft, Y = part
    return gram_sums(Ft, Y)


def _fit_squared(samples: Samples, reg: _Regularizer, tol, warm, accept_uncertified, parallel):
    """Squared loss: one row problem per output on Gram statistics of [F, 1] (the row engine)."""
    stats = reduce_gram(samples.cluster.map(_gram_part, samples.parts))
    d = stats.d - 1
    if reg.lam_l2:
        mask = np.append(np.ones(d), 0.0)
        stats = GramStats(stats.G + reg.lam_l2 * np.diag(mask), stats.H, stats.c, stats.m)
    spec = RowSpec(penalty=reg.lam, free=[d], balls=reg.balls,
                   anchor=reg.theta0 if reg.mu else None, mu=reg.mu)
    sol = solve_certified(RowProblem(stats, spec), tol=tol, step="(C, D) rows", warm_start=warm,
                          accept_uncertified=accept_uncertified, **parallel)
    status = "optimal" if len(sol.uncertified) == 0 else "uncertified"
    return sol.W, float(np.sum(sol.objective)), float(np.sum(sol.gap)), status, int(np.max(sol.iterations))


def _fit_coupled(loss, samples: Samples, reg: _Regularizer, theta, tol, max_iter,
                 accept_uncertified):
    """Cross-entropy by FISTA (escalated to Clarabel if it stops uncertified and the samples are
    one partition in memory), hinge by Clarabel (in memory only);
    (Θ, P, gap, iterations, solver, status); RowFitError when no solver certifies."""
    reg.certifiable()
    solver, attempts = "native", []
    if loss == "cross_entropy":
        attempts.append((*_fista_ce(samples, reg, theta, tol, max_iter), "native"))
    in_memory = samples.cluster.client is None and len(samples.parts) == 1
    if in_memory and (loss == "hinge" or attempts[0][2] > tol * max(1.0, abs(attempts[0][1]))):
        Ft, Y = samples.parts[0]
        attempts.append((*_cvxpy_fit(Ft[:, :-1], Ft, Y, loss, reg, tol), "clarabel"))
    elif loss == "hinge":
        raise ValueError("the hinge output fit is solved by Clarabel on all samples in one "
                         "process: use one partition in memory (run.data_backend 'memory')")
    theta, primal, gap, iters, solver = min(attempts, key=lambda a: a[2])
    if gap <= tol * max(1.0, abs(primal)):
        return theta, primal, gap, iters, "+".join(a[-1] for a in attempts), "optimal"
    if not accept_uncertified:
        raise RowFitError(
            f"(C, D) {loss} fit: relative duality gap {gap / max(1.0, abs(primal)):.3g} > tol "
            f"{tol:g} after {' → '.join(a[-1] for a in attempts)}; add lam_l2 or a larger anchor, "
            "loosen the tolerance, or pass accept_uncertified=True to continue and have the "
            "report list such steps")
    return theta, primal, gap, iters, solver, "uncertified"


def fit_output_layer(F, Y, loss: str, *, lam_l1=0.0, lam_l2: float = 0.0, anchor=None, balls=(),
                     tol: float = 1e-8, max_iter: int = 20000, warm_start=None, n_jobs: int = 1,
                     backend: str = "serial", address: str | None = None,
                     accept_uncertified: bool = False):
    """Certified fit of W (q, d), b (q,) on features F (m, d): returns (W, b, OutputFitInfo).

    Y is (m,) / (m, q) for "squared", labels 0..K−1 (q = K ≥ 2, or anchor's q) otherwise.
    anchor = (W0, b0, μ) adds μ‖[W b] − [W0 b0]‖²; balls = [(column indices, radius)] bounds
    ‖W_i,g‖_1 per output row; warm_start = (W, b). Status "optimal" iff gap ≤ tol·max(1, |P|);
    a fit no solver certifies raises RowFitError, unless accept_uncertified (status "uncertified").
    """
    if loss not in OUTPUT_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(OUTPUT_LOSSES)}")
    F = np.asarray(F, dtype=float)
    if F.ndim != 2 or not np.all(np.isfinite(F)):
        raise ValueError(f"features F must be a finite (m, d) array, got shape {F.shape}")
    m, d = F.shape
    Y = np.asarray(Y)
    if Y.shape[0] != m:
        raise ValueError(f"targets have {Y.shape[0]} rows but F has {m} samples")
    if loss == "squared":
        Y = np.asarray(Y, dtype=float).reshape(m, -1)
        q = Y.shape[1]
    else:
        if Y.ndim != 1 or not np.array_equal(Y.astype(int), Y) or Y.min() < 0:
            raise ValueError(f"{loss} needs integer labels 0..K−1 of shape (m,), got shape {Y.shape}")
        Y = Y.astype(int)
        q = max(2, int(Y.max()) + 1) if anchor is None else np.shape(anchor[0])[0]
        if Y.max() >= q:
            raise ValueError(f"labels go up to {Y.max()} but the anchor has only {q} outputs")
    samples = Samples.in_memory(np.column_stack([F, np.ones(m)]), Y)
    return fit_output_samples(samples, loss, q=q, d=d, lam_l1=lam_l1, lam_l2=lam_l2,
                              anchor=anchor, balls=balls, tol=tol, max_iter=max_iter,
                              warm_start=warm_start, n_jobs=n_jobs, backend=backend,
                              address=address, accept_uncertified=accept_uncertified)


def fit_output_samples(samples: Samples, loss: str, *, q: int, d: int, lam_l1=0.0,
                       lam_l2: float = 0.0, anchor=None, balls=(), tol: float = 1e-8,
                       max_iter: int = 20000, warm_start=None, n_jobs: int = 1,
                       backend: str = "serial", address: str | None = None,
                       accept_uncertified: bool = False):
    """fit_output_layer on partitioned samples (F̃_p = [F_p, 1], targets_p) held by a Cluster: q
    outputs, d features; the same certificate, every data term summed over partitions. Targets
    must already be validated (labels 0..q−1, or (m_p, q) floats for "squared")."""
    start = time.perf_counter()
    if loss not in OUTPUT_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(OUTPUT_LOSSES)}")
    reg = _Regularizer(q, d, lam_l1, lam_l2, anchor, balls)
    theta = np.zeros((q, d + 1))
    if warm_start is not None:
        theta = np.column_stack([np.asarray(warm_start[0], float), np.asarray(warm_start[1], float)])
        if theta.shape != (q, d + 1):
            raise ValueError(f"warm_start (W, b) must have shapes ({q}, {d}), ({q},)")
    if loss == "squared":
        parallel = dict(n_jobs=n_jobs, backend=backend, address=address)
        theta, primal, gap, status, iters = _fit_squared(
            samples, reg, tol, theta if warm_start is not None else None, accept_uncertified,
            parallel)
        solver = "native"
    else:
        theta, primal, gap, iters, solver, status = _fit_coupled(
            loss, samples, reg, theta, tol, max_iter, accept_uncertified)
    info = OutputFitInfo(primal, gap, status, iters, solver, time.perf_counter() - start)
    return theta[:, :-1], theta[:, -1], info


__all__ = ["OutputFitInfo", "Samples", "certify", "certify_samples", "fit_output_layer",
           "fit_output_samples", "output_layer_problem"]
