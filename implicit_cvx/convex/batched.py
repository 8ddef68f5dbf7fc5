"""All rows of a Gram-form row problem at once: ADMM with one Cholesky, exact finish per face.

Row i:  min_w  wᵀGw − 2h_iᵀw + c_i + Σ_j λ_j|w_j|  s.t. ‖w_g‖_1 ≤ r_g   (the reduced problem of
rows._Problem). The rows share G, so ADMM on the whole weight matrix,
    min f(W) + g(V)  s.t.  W = V,   f = Σ_i w_iᵀGw_i − 2h_iᵀw_i,   g = λ‖·‖_1 + ball indicators,
solves every row with one Cholesky factor of (2G + ρI) (refactored only when ρ changes) and a
vectorized prox of g (soft-thresholding, then an exact weighted ℓ1-ball projection). Its iterates
only reveal each row's face (support, signs, tight balls); the answer is the face's exact KKT point
(proximal-point refinement makes singular faces well posed), judged by the row's duality gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

ALPHA = 1.6  # ADMM over-relaxation
RHO0 = 1.0  # first ρ (Ĝ has unit diagonal)
RHO_MIN = 1e-6
RHO_RATIO = 5.0  # refactor when the balanced ρ moves by more than this factor
ADMM_CHUNK = 20  # ADMM steps between ρ updates and convergence checks
ADMM_MAX = 300
SETTLE = 0.002  # ADMM stops when at most this share of the signs changed over a chunk
DENSE = 0.9  # ... or when this share of its entries is still nonzero after two chunks
FACE_MU = 1e-10  # proximal weight of the face solves, relative to G's unit diagonal
FACE_REFINE = 3  # proximal-point steps per face solve
DEBUG = False
PROX_RTOL = 1e-6  # a face is solved when the proximal step moves the gradient by < this × its bound
STATS = dict(drop0=0, dropped_coords=0, drop_small=0, ball=0, drop=0, release=0, add=0, prox=0, stop=0)
PDAS_STEPS = 5
PDAS_T = 1.0
BUCKET = 8  # face sizes are padded (exactly, by identity rows) to a multiple of this


def project_weighted_l1_rows(V: np.ndarray, a: np.ndarray, radius: float):
    """Euclidean projection of each row of V onto {x : Σ_j a_j|x_j| ≤ radius} (a > 0), exact.

    x_j = sign(v_j)·max(|v_j| − θa_j, 0) with θ ≥ 0 the root of Σ_j a_j max(|v_j| − θa_j, 0) = r,
    found by sorting the breakpoints |v_j|/a_j (O(n log n) per row, vectorized). Returns (X, θ).
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
    cum_av = np.cumsum(a_sorted * v_sorted, axis=1)
    cum_aa = np.cumsum(a_sorted * a_sorted, axis=1)
    th = (cum_av - radius) / cum_aa
    valid = th < v_sorted / a_sorted  # holds on a prefix: the breakpoints above θ
    last = valid.sum(axis=1) - 1
    theta[outside] = np.maximum(th[np.arange(len(last)), last], 0.0)
    X = np.sign(V) * np.maximum(absV - theta[:, None] * a, 0.0)
    return X, theta


@dataclass
class _Scaled:
    """The problem on the coordinates with a nonzero Gram diagonal, scaled to unit diagonal."""

    keep: np.ndarray  # coordinates solved (the rest are 0 at every optimum, see `scaled`)
    s: np.ndarray  # w = s·ŵ on `keep`
    G: np.ndarray
    lam: np.ndarray
    balls: list  # (positions in keep, weights a = s, radius): Σ a_j|ŵ_j| ≤ r
    gid: np.ndarray


def scaled(prob) -> _Scaled:
    """Drop the coordinates j with G_jj = 0 and scale the rest to unit diagonal.

    G = RᵀR/m is PSD, and so is the Gram matrix [[G, h], [hᵀ, c]] of [R, t]; so G_jj = 0 forces
    G_j· = 0 and h_j = 0: the objective does not depend on w_j, and w_j = 0 is optimal whatever
    λ_j ≥ 0 (with λ_j > 0 it is the only optimal value; in a ball, w_j ≠ 0 only uses radius).
    The certificate, computed on the original problem, checks this too.
    """
    diag = np.diag(prob.G)
    keep = np.flatnonzero(diag > 0)
    s = 1 / np.sqrt(diag[keep])
    G = prob.G[np.ix_(keep, keep)] * s[:, None] * s[None, :]
    pos = np.full(len(diag), -1)
    pos[keep] = np.arange(len(keep))
    balls = []
    for idx, r in prob.groups:
        p = pos[idx]
        p = p[p >= 0]
        balls.append((p, s[p], r))
    return _Scaled(keep, s, (G + G.T) / 2, prob.lam[keep] * s, balls, prob.gid[keep])


def _prox_g(X: np.ndarray, sc: _Scaled, rho: float):
    """prox of g/ρ: soft-threshold at λ̂/ρ, then project each ball part (exact, same θ as the
    joint prox because both act on |x_j| monotonically). Returns (V, θ per ball)."""
    V = np.sign(X) * np.maximum(np.abs(X) - sc.lam / rho, 0.0)
    thetas = np.zeros((X.shape[0], len(sc.balls)))
    for b, (p, a, r) in enumerate(sc.balls):
        if p.size:
            V[:, p], thetas[:, b] = project_weighted_l1_rows(V[:, p], a, r)
    return V, thetas


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


class _Faces:
    """Batched solves of face systems [2Ĝ_SS + μI, E; Eᵀ, 0][x; ν] = [b_S; r], rows grouped by
    |S| rounded up to BUCKET and padded with dummy coordinates (identity rows, zero rhs)."""

    def __init__(self, sc: _Scaled, mu: float):
        d = len(sc.keep)
        self.sc, self.mu, self.d = sc, mu, d
        self.K = np.eye(d + BUCKET)
        self.K[:d, :d] = 2 * sc.G + mu * np.eye(d)
        nb = len(sc.balls)
        self.E = np.zeros((d + BUCKET, nb))  # ball weights a_j of each coordinate's ball
        for b, (p, a, _) in enumerate(sc.balls):
            self.E[p, b] = a
        self.radii = np.array([r for _, _, r in sc.balls])

    def solve(self, b, sig, act):
        """x (rows, d) zero off the supports sig ≠ 0, and ν (rows, nb) for rhs b (rows, d)."""
        x = np.zeros_like(b)
        nu = np.zeros((b.shape[0], len(self.radii)))
        sizes = np.count_nonzero(sig, axis=1)
        buckets = -(-sizes // BUCKET) * BUCKET
        for size in np.unique(buckets[sizes > 0]):
            rows = np.flatnonzero((buckets == size) & (sizes > 0))
            x[rows], nu[rows] = self._bucket(b[rows], sig[rows], act[rows], int(size))
        return x, nu

    def _bucket(self, b, sig, act, size):
        nr, nb, d = b.shape[0], len(self.radii), self.d
        idx = np.empty((nr, size), dtype=int)
        K = np.empty((nr, size, size))
        for i in range(nr):  # a row gather then a column gather: faster than one fancy index
            supp = np.flatnonzero(sig[i])
            idx[i, : supp.size] = supp
            idx[i, supp.size :] = np.arange(d, d + size - supp.size)
            np.take(self.K[idx[i]], idx[i], axis=1, out=K[i])
        live = idx < d
        cols = np.minimum(idx, d - 1)
        sg = np.take_along_axis(sig, cols, axis=1) * live
        rhs = np.empty((nr, size, 1 + nb))
        rhs[:, :, 0] = np.take_along_axis(b, cols, axis=1) * live
        rhs[:, :, 1:] = self.E[idx] * sg[:, :, None] * act[:, None, :]
        on = np.any(rhs[:, :, 1:] != 0, axis=1)  # active balls with a coordinate on the face
        sol = np.linalg.solve(K, rhs)
        if DEBUG:
            STATS["flops"] = STATS.get("flops", 0) + nr * size**3 * 2 / 3
        x, nu = sol[:, :, 0], np.zeros((nr, nb))
        if nb:
            E, KE = rhs[:, :, 1:], sol[:, :, 1:]
            M = np.swapaxes(E, 1, 2) @ KE
            M[:, np.arange(nb), np.arange(nb)] += ~on
            nu = np.linalg.solve(M, (np.einsum("rjb,rj->rb", E, x) - self.radii * on)[:, :, None])[:, :, 0]
            x = x - np.einsum("rjb,rb->rj", KE, nu)
        out = np.zeros((nr, d + BUCKET))
        np.put_along_axis(out, idx, x, axis=1)
        return out[:, :d], nu


def _ball_norms(sc: _Scaled, W):
    return np.stack([np.abs(W[:, p]) @ a for p, a, _ in sc.balls], axis=1) if sc.balls else np.zeros((len(W), 0))


def active_set_rows(sc: _Scaled, Hh, W, max_rounds: int, mu: float = FACE_MU,
                    add_fraction: float = 0.1):
    """The primal active-set method of rows._Problem.active_set, all rows in lockstep (one pivot
    per row per round, face systems batched), with proximal face steps (μ > 0) so that singular
    faces are well posed: a step on an unbounded face stops where a coordinate reaches 0.

    From feasible W: step to the face's proximal point until a coordinate reaches 0 (drop it)
    or an inactive ball becomes tight (activate it); at the step's end release a ball with
    ν < 0, else add the coordinates violating |v_j| ≤ λ̂_j + ν a_j by ≥ add_fraction of the
    worst, else repeat the proximal step until it no longer moves. Returns (W, pivots per row).
    """
    nr, nb = W.shape[0], len(sc.balls)
    W, sig = W.copy(), np.sign(W)
    radii = np.array([r for _, _, r in sc.balls])
    act = _ball_norms(sc, W) >= radii * (1 - 1e-12)
    member = np.stack([sc.gid == b for b in range(nb)], axis=0) if nb else np.zeros((0, W.shape[1]), bool)
    weight = np.zeros((nb, W.shape[1]))
    for b, (p, a, _) in enumerate(sc.balls):
        weight[b, p] = a
    pivots = np.zeros(nr, dtype=int)
    running = np.ones(nr, dtype=bool)
    faces = _Faces(sc, mu)
    settled = np.zeros(nr, dtype=bool)
    for _ in range(max_rounds):
        R = np.flatnonzero(running)
        if not R.size:
            break
        w, sg, ac = W[R], sig[R], act[R]
        x, nu = faces.solve(2 * Hh[R] - sc.lam * sg + mu * w, sg, ac)
        step = x - w
        tz = sg * step
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = np.where(tz < 0, sg * w / -tz, np.inf)
        tau_c = tc.min(axis=1, initial=np.inf)
        tau = np.minimum(1.0, tau_c)
        ball_hit = np.full(len(R), -1)
        if nb:
            norms = _ball_norms(sc, w)
            slope = tz @ weight.T
            with np.errstate(divide="ignore", invalid="ignore"):
                tb = np.where(~ac & (slope > 0), np.maximum((radii - norms) / slope, 0.0), np.inf)
            b_min = tb.argmin(axis=1)
            t_b = tb[np.arange(len(R)), b_min]
            hit = t_b < tau
            ball_hit[hit] = b_min[hit]
            tau = np.where(hit, t_b, tau)
        w = w + tau[:, None] * step
        pivots[R] += 1
        blocked = tau < 1
        for b in range(nb):
            ac[ball_hit == b, b] = True
        drop = blocked[:, None] & (ball_hit < 0)[:, None] & (tc <= tau[:, None])
        w[drop], sg[drop] = 0.0, 0.0
        # at the face's proximal point: release, add, repeat or stop
        full = ~blocked
        neg = full & np.any(ac & (nu < 0), axis=1) if nb else np.zeros(len(R), bool)
        for i in np.flatnonzero(neg):
            ac[i, np.argmin(np.where(ac[i], nu[i], np.inf))] = False
        look = full & ~neg
        if look.any():
            v = 2 * Hh[R[look]] - 2 * w[look] @ sc.G
            bound = sc.lam + np.maximum(nu[look] * ac[look], 0) @ weight
            viol = np.where(sg[look] == 0, np.abs(v) - bound, -np.inf)
            worst = viol.max(axis=1)
            add = (viol >= add_fraction * worst[:, None]) & (worst[:, None] > 1e-13 * (1 + bound))
            sg_l = sg[look]
            sg_l[add] = np.sign(v[add])
            sg[look] = sg_l
            moved = mu * np.abs(step[look]).max(axis=1) > PROX_RTOL * np.where(
                sg[look] != 0, bound, np.inf).min(axis=1, initial=np.inf)
            idle = ~add.any(axis=1) & ~moved
            stop = np.zeros(len(R), bool)
            stop[np.flatnonzero(look)[idle]] = True
            # stop after a second idle step: it repeats the face solve from the face's point
            running[R[stop & settled[R]]] = False
            settled[R] = stop
        W[R], sig[R], act[R] = w, sg, ac
        if DEBUG:
            STATS["ball"] += int(np.sum(ball_hit >= 0)); STATS["drop"] += int(np.sum(drop.any(1)))
            STATS["drop0"] += int(np.sum(drop.any(1) & (tau == 0))); STATS["dropped_coords"] += int(drop.sum())
            STATS["drop_small"] += int(np.sum(drop.any(1) & (tau > 0) & (tau < 1e-3)))
            STATS["release"] += int(neg.sum())
            if look.any():
                STATS["add"] += int(add.any(1).sum()); STATS["prox"] += int((~add.any(1) & moved).sum())
                STATS["stop"] += int(idle.sum())
    return W, pivots


def _unscale(sc: _Scaled, Wh: np.ndarray, d: int) -> np.ndarray:
    W = np.zeros((Wh.shape[0], d))
    W[:, sc.keep] = Wh * sc.s
    return W


def admm(sc: _Scaled, Hh: np.ndarray, V: np.ndarray, max_iter: int):
    """Over-relaxed ADMM on all rows at once: W = (2Ĝ + ρI)⁻¹(2Ĥ + ρ(V − Y)), V = prox_{g/ρ}(W + Y),
    Y += W − V, with one ρ balancing the primal and dual residuals (refactored when it moves by
    RHO_RATIO). Stops when the sign pattern settles (≤ SETTLE of the entries change in a chunk
    of ADMM_CHUNK steps) or stays dense (≥ DENSE of them nonzero: no sparsity found, e.g. λ → 0
    on a singular Ĝ). Returns (V, iterations, useful) — useful is False if it stayed dense."""
    fac = _Factor(sc.G)
    rho = fac.factor(RHO0)
    Y = -(V @ (2 * sc.G) - 2 * Hh) / rho  # the dual of V when the W-step is exact
    it = 0
    while it < max_iter:
        before = np.sign(V)
        for _ in range(min(ADMM_CHUNK, max_iter - it)):
            W = fac.solve((2 * Hh + rho * (V - Y)).T).T
            Xr = ALPHA * W + (1 - ALPHA) * V
            V_new, _ = _prox_g(Xr + Y, sc, rho)
            Y += Xr - V_new
            r_p, r_d = np.linalg.norm(W - V_new), rho * np.linalg.norm(V_new - V)
            V = V_new
            it += 1
        changed = np.count_nonzero(np.sign(V) != before)
        if changed <= SETTLE * V.size:
            return V, it, True
        if it >= 2 * ADMM_CHUNK and np.count_nonzero(V) >= DENSE * V.size:
            return V, it, False
        scale_p = max(np.linalg.norm(W), np.linalg.norm(V), 1e-300)
        scale_d = max(rho * np.linalg.norm(Y), 1e-300)
        ratio = np.sqrt((r_p / scale_p) / max(r_d / scale_d, 1e-300))
        if not 1 / RHO_RATIO <= ratio <= RHO_RATIO:
            new = fac.factor(float(np.clip(rho * ratio, RHO_MIN, 1 / RHO_MIN)))
            Y *= rho / new
            rho = new
    return V, it, True


def solve_batched(prob, rows: np.ndarray, warm_start: np.ndarray | None, max_iter: int):
    """All `rows` of the reduced problem `prob` (rows._Problem) at once: ADMM from 0 (skipped
    with a warm start), then the batched active set from its point, on the scaled problem.

    Returns (W (k, d') reduced and ball-clipped, objective, certified gap, iterations per row:
    ADMM steps + active-set pivots). Rows above tolerance are the caller's to fall back on.
    """
    k, d = len(rows), len(prob.lam)
    sc = scaled(prob)
    Hh = (prob.H[np.ix_(sc.keep, rows)] * sc.s[:, None]).T
    iters = np.zeros(k, dtype=int)
    if warm_start is None:
        V = np.zeros((k, len(sc.keep)))
        if sc.keep.size and k:
            V_admm, iters[:], useful = admm(sc, Hh, V, min(ADMM_MAX, max_iter))
            V = V_admm if useful else V
    else:
        V, _ = _prox_g(warm_start[:, sc.keep] / sc.s, sc, np.inf)  # onto the balls
    if sc.keep.size and k:
        V, pivots = active_set_rows(sc, Hh, V, max_iter)
        iters += pivots
    W = prob.clip_balls(_unscale(sc, V, d))
    obj, gap = prob.certify(W, rows)
    return W, obj, gap, iters
