"""All rows of a Gram-form row problem at once: ADMM with one Cholesky, then an exact active set.

Row i:  min_w  wᵀGw − 2h_iᵀw + c_i + Σ_j λ_j|w_j|  s.t. Σ_{j∈g} |w_j| ≤ r_g   (the reduced problem
of rows.ReducedProblem; its certificate is the judge). All rows share G, so
1. ADMM on the whole weight matrix, min f(W) + g(V) s.t. W = V with f = Σ_i w_iᵀGw_i − 2h_iᵀw_i and
   g = λ‖·‖_1 + ball indicators, uses one Cholesky factor of 2G + ρI for every row (refactored
   only when the residual-balancing ρ changes) and a vectorized prox of g;
2. the primal active-set method then runs on all rows in lockstep from ADMM's point (one pivot
   per row per round: the ratio tests, gradients and pivot rules are vectorized over rows; each
   face system is one LAPACK Cholesky solve of its exact size). Its face steps are proximal
   (min f + λσᵀw + (μ/2)‖w − w_k‖² on the face), so singular faces — dead states, collinear
   states, λ → 0 — are well posed; at its fixed point the step vanishes and the face point is an
   exact minimizer of the original problem.
Both work on G scaled to unit diagonal (w = s·ŵ, s_j = G_jj^(-1/2)); the balls then become the
weighted balls Σ_j s_j|ŵ_j| ≤ r, projected onto exactly in that metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.linalg.lapack import dposv

ALPHA = 1.6  # ADMM over-relaxation
RHO0, RHO_MIN = 1.0, 1e-6  # first and smallest ADMM ρ (Ĝ has unit diagonal)
RHO_RATIO = 5.0  # ρ is rebalanced (and 2Ĝ + ρI refactored) when it is off by this factor
ADMM_CHUNK = 20  # ADMM steps between ρ updates and convergence checks
ADMM_MAX = 300
SETTLE = 0.002  # ADMM stops when at most this share of its signs changed over a chunk,
DENSE = 0.9  # or gives up when this share of its entries is nonzero after two chunks
FACE_MU = 1e-10  # proximal weight of the face steps, relative to Ĝ's unit diagonal
PROX_RTOL = 1e-6  # a face is solved once μ|step| < PROX_RTOL · (its smallest bound λ̂_j + ν a_j)
VIOL_TOL = 1e-13  # a coordinate violates dual feasibility when |v_j| > bound_j + VIOL_TOL(1 + bound_j)


def project_weighted_l1_rows(V: np.ndarray, a: np.ndarray, radius: float):
    """Euclidean projection of each row of V onto {x : Σ_j a_j|x_j| ≤ radius} (a > 0), exact.

    x_j = sign(v_j)·max(|v_j| − θa_j, 0) with θ ≥ 0 the root of Σ_j a_j max(|v_j| − θa_j, 0) = r,
    found by sorting the breakpoints |v_j|/a_j (O(n log n) per row, vectorized); rows inside are
    returned unchanged, projected rows satisfy Σ_j a_j|x_j| ≤ radius. Returns (X, θ).
    """
    absV = np.abs(V)
    theta = np.zeros(V.shape[0])
    outside = absV @ a > radius
    if not outside.any():
        return V.copy(), theta
    Vo = absV[outside]
    order = np.argsort(-Vo / a, axis=1)
    v_sorted = np.take_along_axis(Vo, order, axis=1)
    a_sorted = a[order]
    th = (np.cumsum(a_sorted * v_sorted, axis=1) - radius) / np.cumsum(a_sorted**2, axis=1)
    last = np.count_nonzero(th < v_sorted / a_sorted, axis=1) - 1  # true on a prefix
    theta[outside] = np.maximum(th[np.arange(len(last)), last], 0.0)
    X = np.sign(V) * np.maximum(absV - theta[:, None] * a, 0.0)
    norms = np.abs(X) @ a
    over = norms > radius  # by rounding: shrink onto the ball
    X[over] *= (radius / norms[over])[:, None]
    return X, theta


@dataclass
class Scaled:
    """The reduced problem on the coordinates with G_jj > 0, scaled to unit diagonal."""

    keep: np.ndarray  # reduced coordinates solved for; the others are 0 (see `scaled`)
    s: np.ndarray  # w_keep = s·ŵ
    G: np.ndarray  # Ĝ = diag(s) G diag(s)
    lam: np.ndarray  # λ̂ = λ·s
    balls: list  # (positions in keep, weights a = s there, radius): Σ a_j|ŵ_j| ≤ r
    weight: np.ndarray  # (n_balls, len(keep)): a_j on each ball's coordinates, else 0

    @property
    def radii(self) -> np.ndarray:
        return np.array([r for _, _, r in self.balls])

    def ball_norms(self, W: np.ndarray) -> np.ndarray:
        return np.abs(W) @ self.weight.T

    def unscale(self, Wh: np.ndarray, d: int) -> np.ndarray:
        W = np.zeros((Wh.shape[0], d))
        W[:, self.keep] = Wh * self.s
        return W


def scaled(prob) -> Scaled:
    """Drop the coordinates j with G_jj = 0 and scale the others to unit diagonal.

    The Gram matrix [[G, h], [hᵀ, c]] of [R, t] is PSD (after ridge, anchor and the Schur
    elimination of free coordinates too), so G_jj = 0 forces G_j· = 0 and h_j = 0: the objective
    does not depend on w_j, and w_j = 0 is optimal for every λ_j ≥ 0 (the only optimal value if
    λ_j > 0; with λ_j = 0, inside a ball, any other value only uses up radius). The certificate,
    computed on the original problem, checks it again.
    """
    diag = np.diag(prob.G)
    keep = np.flatnonzero(diag > 0)
    s = 1 / np.sqrt(diag[keep])
    G = prob.G[np.ix_(keep, keep)] * np.outer(s, s)
    pos = np.full(len(diag), -1)
    pos[keep] = np.arange(len(keep))
    balls, weight = [], np.zeros((len(prob.groups), len(keep)))
    for b, (idx, r) in enumerate(prob.groups):
        p = pos[idx][pos[idx] >= 0]
        balls.append((p, s[p], r))
        weight[b, p] = s[p]
    return Scaled(keep, s, (G + G.T) / 2, prob.lam[keep] * s, balls, weight)


def prox_g(X: np.ndarray, sc: Scaled, rho: float) -> np.ndarray:
    """prox of g/ρ: soft-threshold at λ̂/ρ, then project each ball part. Exact: the joint prox is
    x_j = sign(x_j)·max(|x_j| − λ̂_j/ρ − θa_j, 0), which is this composition with the same θ."""
    V = np.sign(X) * np.maximum(np.abs(X) - sc.lam / rho, 0.0)
    for p, a, r in sc.balls:
        if p.size:
            V[:, p] = project_weighted_l1_rows(V[:, p], a, r)[0]
    return V


class _Factor:
    """Cholesky factor of 2Ĝ + ρI, recomputed only when ρ changes."""

    def __init__(self, G: np.ndarray):
        self.G, self.rho, self.cho = G, None, None

    def factor(self, rho: float) -> float:
        """Factor 2Ĝ + ρI; ρ is raised tenfold while rounding leaves it indefinite. Returns ρ."""
        while rho != self.rho:
            try:
                self.cho = sla.cho_factor(2 * self.G + rho * np.eye(len(self.G)))
                self.rho = rho
            except np.linalg.LinAlgError:
                rho *= 10
        return rho

    def solve(self, B: np.ndarray) -> np.ndarray:
        return sla.cho_solve(self.cho, B)


def admm(sc: Scaled, Hh: np.ndarray, V: np.ndarray, max_iter: int):
    """Over-relaxed ADMM on all rows: W = (2Ĝ + ρI)⁻¹(2Ĥ + ρ(V − Y)), V = prox_{g/ρ}(W + Y),
    Y += W − V (rows of Hh are the rows' ĥ_i), one ρ balancing the relative primal and dual
    residuals. Stops when the sign pattern settles or stays dense (see SETTLE, DENSE).
    Returns (V, iterations, useful): useful is False if it stayed dense (no sparsity found, as
    with λ → 0 on a singular Ĝ, where starting the active set from it costs more than from 0)."""
    fac = _Factor(sc.G)
    rho = fac.factor(RHO0)
    Y = -(V @ (2 * sc.G) - 2 * Hh) / rho  # the scaled dual of V when the W-step is exact
    it = 0
    while it < max_iter:
        before = np.sign(V)
        for _ in range(min(ADMM_CHUNK, max_iter - it)):
            W = fac.solve((2 * Hh + rho * (V - Y)).T).T
            Xr = ALPHA * W + (1 - ALPHA) * V
            V_new = prox_g(Xr + Y, sc, rho)
            Y += Xr - V_new
            r_p, r_d = np.linalg.norm(W - V_new), rho * np.linalg.norm(V_new - V)
            V = V_new
            it += 1
        if np.count_nonzero(np.sign(V) != before) <= SETTLE * V.size:
            return V, it, True
        if it >= 2 * ADMM_CHUNK and np.count_nonzero(V) >= DENSE * V.size:
            return V, it, False
        rel_p = r_p / max(np.linalg.norm(W), np.linalg.norm(V), 1e-300)
        rel_d = r_d / max(rho * np.linalg.norm(Y), 1e-300)
        ratio = np.sqrt(rel_p / max(rel_d, 1e-300))
        if not 1 / RHO_RATIO <= ratio <= RHO_RATIO:
            new = fac.factor(float(np.clip(rho * ratio, RHO_MIN, 1 / RHO_MIN)))
            Y *= rho / new
            rho = new
    return V, it, True


class _Faces:
    """Solves of the face systems [2Ĝ_SS + μI, E; Eᵀ, 0][x_S; ν] = [b_S; r_active] (E: the active
    balls' a_jσ_j): per row a Cholesky solve (LAPACK posv; LU if rounding made the block
    indefinite) of 2Ĝ_SS + μI with right-hand sides [b_S, E], then the Schur complement of the
    ball rows. A loop of LAPACK calls on the exact sizes beats batched solves of padded ones."""

    def __init__(self, sc: Scaled, mu: float):
        self.K = 2 * sc.G + mu * np.eye(len(sc.G))
        self.A = sc.weight.T  # (d, n_balls): a_j on each ball's coordinates
        self.radii = sc.radii

    def solve(self, b: np.ndarray, sig: np.ndarray, act: np.ndarray):
        """(x, ν): x zero off each row's support {sig ≠ 0}; ν the active balls' multipliers."""
        x = np.zeros_like(b)
        nu = np.zeros((b.shape[0], len(self.radii)))
        on = act & ((sig != 0) @ (self.A != 0))  # tight balls with a coordinate on the face
        rows, cols = np.nonzero(sig)
        starts = np.searchsorted(rows, np.arange(b.shape[0] + 1))
        for i in np.flatnonzero(np.diff(starts)):
            supp = cols[starts[i] : starts[i + 1]]
            x[i, supp], nu[i] = self._row(b[i, supp], sig[i, supp], np.flatnonzero(on[i]), supp)
        return x, nu

    def _row(self, b, sg, on, supp):
        rhs = np.empty((supp.size, 1 + on.size))
        rhs[:, 0] = b
        if on.size:
            rhs[:, 1:] = self.A[supp][:, on] * sg[:, None]
        _, sol, info = dposv(np.take(self.K[supp], supp, axis=1), rhs, overwrite_a=True)
        if info != 0:
            sol = np.linalg.solve(np.take(self.K[supp], supp, axis=1), rhs)
        x, nu = sol[:, 0], np.zeros(len(self.radii))
        if on.size:  # the Schur complement of the ball rows: (EᵀK⁻¹E)ν = EᵀK⁻¹b − r
            E, KE = rhs[:, 1:], sol[:, 1:]
            if on.size == 1:
                nu[on] = (E[:, 0] @ x - self.radii[on]) / (E[:, 0] @ KE[:, 0])
            else:
                nu[on] = np.linalg.solve(E.T @ KE, E.T @ x - self.radii[on])
            x = x - KE @ nu[on]
        return x, nu


def _ratio_test(sc: Scaled, w, step, sg, act):
    """Largest τ ≤ 1 keeping w + τ·step on the face and in the balls: (τ, per-coordinate
    crossing times, index of the ball that became tight or −1)."""
    tz = sg * step
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = np.where(tz < 0, sg * w / -tz, np.inf)
    tau = np.minimum(1.0, tc.min(axis=1, initial=np.inf))
    ball = np.full(len(w), -1)
    if sc.balls:
        slope = tz @ sc.weight.T
        with np.errstate(divide="ignore", invalid="ignore"):
            tb = np.where(~act & (slope > 0), np.maximum((sc.radii - sc.ball_norms(w)) / slope, 0), np.inf)
        first = tb.argmin(axis=1)
        t_b = tb[np.arange(len(w)), first]
        hit = t_b < tau
        ball[hit], tau[hit] = first[hit], t_b[hit]
    return tau, tc, ball


def _next_face(sc: Scaled, Hh, w, sg, act, nu, step, mu):
    """At a face's proximal point: release the ball with the most negative ν, else add every
    dual-infeasible coordinate (|v_j| > λ̂_j + ν a_j) with the sign of its gradient. Returns
    the rows that changed nothing and whose step no longer moves the gradient (PROX_RTOL)."""
    release = np.any(act & (nu < 0), axis=1)
    for i in np.flatnonzero(release):
        act[i, np.argmin(np.where(act[i], nu[i], np.inf))] = False
    v = 2 * Hh - 2 * w @ sc.G
    bound = sc.lam + np.maximum(nu * act, 0) @ sc.weight
    add = (sg == 0) & (np.abs(v) > bound + VIOL_TOL * (1 + bound)) & ~release[:, None]
    sg[add] = np.sign(v[add])
    floor = PROX_RTOL * np.where(sg != 0, bound, np.inf).min(axis=1, initial=np.inf)
    floor = np.maximum(floor, VIOL_TOL * (1 + np.abs(Hh).max(axis=1)))
    moved = mu * np.abs(step).max(axis=1, initial=0.0) > floor
    return ~release & ~add.any(axis=1) & ~moved


def active_set_rows(sc: Scaled, Hh, W, max_rounds: int, mu: float = FACE_MU):
    """The primal active-set method (rows.ReducedProblem.active_set) on all rows in lockstep, one
    pivot per row per round, face systems batched; exact and monotone in each row's objective.

    From feasible W, step towards the face's proximal point until a coordinate reaches 0 (drop
    it) or an inactive ball becomes tight (activate it); at the point, release a ball with
    ν < 0, else add all dual-infeasible coordinates, else repeat the proximal step. A row stops
    after two such idle steps in a row (the second one re-solves from the face's point).
    Returns (W, pivots per row).
    """
    nr = W.shape[0]
    W, sig = W.copy(), np.sign(W)
    act = sc.ball_norms(W) >= sc.radii * (1 - 1e-12)
    faces = _Faces(sc, mu)
    pivots = np.zeros(nr, dtype=int)
    running = np.ones(nr, dtype=bool)
    idle_before = np.zeros(nr, dtype=bool)
    for _ in range(max_rounds):
        R = np.flatnonzero(running)
        if not R.size:
            break
        w, sg, ac = W[R], sig[R], act[R]
        x, nu = faces.solve(2 * Hh[R] - sc.lam * sg + mu * w, sg, ac)
        step = x - w
        tau, tc, ball = _ratio_test(sc, w, step, sg, ac)
        w += tau[:, None] * step
        pivots[R] += 1
        ac[np.flatnonzero(ball >= 0), ball[ball >= 0]] = True
        drop = ((tau < 1) & (ball < 0))[:, None] & (tc <= tau[:, None])
        w[drop], sg[drop] = 0.0, 0.0
        full = tau >= 1
        idle = np.zeros(len(R), dtype=bool)
        if full.any():
            f_sg, f_ac = sg[full], ac[full]
            idle[full] = _next_face(sc, Hh[R[full]], w[full], f_sg, f_ac, nu[full], step[full], mu)
            sg[full], ac[full] = f_sg, f_ac
        running[R[idle & idle_before[R]]] = False
        idle_before[R] = idle
        W[R], sig[R], act[R] = w, sg, ac
    return W, pivots


def solve_batched(prob, rows: np.ndarray, warm_start: np.ndarray | None, max_iter: int):
    """All `rows` of the reduced problem `prob` (a rows.ReducedProblem) at once: ADMM from 0 (skipped
    when a warm start is given), then the lockstep active set from its point (≤ max_iter
    pivots per row). Returns (W (k, d') reduced and clipped to the balls, objective, certified
    gap, iterations per row: ADMM steps + pivots); the caller re-solves rows above tolerance.
    """
    k, d = len(rows), len(prob.lam)
    sc = scaled(prob)
    Hh = (prob.H[np.ix_(sc.keep, rows)] * sc.s[:, None]).T
    iters = np.zeros(k, dtype=int)
    if warm_start is None:
        V = np.zeros((k, len(sc.keep)))
        if V.size and max_iter > 0:
            V_admm, iters[:], useful = admm(sc, Hh, V, min(ADMM_MAX, max_iter))
            V = V_admm if useful else V
    else:
        V = prox_g(warm_start[:, sc.keep] / sc.s, sc, np.inf)  # onto the balls
    if V.size:
        V, pivots = active_set_rows(sc, Hh, V, max_iter)
        iters += pivots
    W = prob.clip_balls(sc.unscale(V, d))
    obj, gap = prob.certify(W, rows)
    return W, obj, gap, iters
