"""Certified column group lasso: a native solver with its own duality gap.

    minimize_W  Σ_i f_i(w_i) + Σ_ij λ_j|W_ij| + g·Σ_{j∈J} ‖W_:j‖_2
    subject to  ‖W_i,idx‖_1 ≤ r for every ball (idx, r) of the spec and every ball row i,

with f_i(w) = wᵀGw − 2h_iᵀw + c_i the Gram form of a squared-loss row (ridge and anchor folded in,
unpenalized coordinates outside J and outside every ball eliminated exactly). The group norms
couple the rows (they delete whole columns: states, or inputs), the balls couple the columns of a
row; each part has an exact proximal map (ℓ1 + group ℓ2 per column: soft-threshold then group
shrink; ℓ1 balls per row: sort-based projection), so a consensus ADMM with one Cholesky factor
of 2G + 2ρI (refactored only when ρ adapts) solves the whole matrix at once.

Certificate (Fenchel duality in the sample space, as in `rows.row_gap`): with the residual dual
point θ_i = t·∇(squared loss) the dual objective is Σ_i (2t a_i − t² f_i) − Q*(tV), V = 2(Hᵀ − WG),
a_i = c_i − h_iᵀw_i, where Q is the whole nonsmooth part. Q* (an inf-convolution) is bounded by
splitting it with explicit ball multipliers ν ≥ 0 (any split is a valid lower bound): Q* ≤ Σ ν·r
whenever tV is feasible for the column sets {s : ‖(|s| − λ − ν)₊‖_2 ≤ g} (j ∈ J) and
|s_ij| ≤ λ_j + ν_i (j ∉ J). The gap P(W) − max(D, 0) bounds P(W) − P* for the coupled problem
and vanishes at the optimum (ν are the multipliers the KKT conditions give there).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla

from ..numerics import BALL_RTOL, golden_section_max, project_l1_ball_rows
from .gram import GramStats, eliminate_free, regularize
from .rows import RowSolution, RowSpec, relative_gap

__all__ = ["GroupLasso", "certify_group_point", "group_objective", "solve_group_lasso_native"]

CHECK_EVERY = 50  # ADMM iterations before the first certificate; then every max(50, it/5)
ADAPT_EVERY = 10  # ADMM iterations between ρ updates (residual balancing)
_T_CAP = 2.0  # the dual step t is searched in [0, 2] (t = 1 at the optimum)
_BISECTION_STEPS = 52  # t_max to 2·2⁻⁵²
_GOLDEN_STEPS = 30


class GroupLasso:
    """The reduced coupled problem: validated data, objective, exact proximal maps, certificate."""

    def __init__(self, stats: GramStats, spec: RowSpec, weight: float, columns, unballed_rows=()):
        if not (np.isfinite(weight) and weight >= 0):
            raise ValueError(f"group weight g must be finite and ≥ 0, got {weight!r}")
        d, k = stats.d, stats.k
        columns = np.unique(np.asarray(columns, dtype=int).ravel())
        if columns.size and (columns.min() < 0 or columns.max() >= d):
            raise ValueError(f"group columns must lie in [0, {d}), got {columns.tolist()[:10]}")
        unballed = np.asarray(unballed_rows, dtype=int).ravel()
        if unballed.size and (unballed.min() < 0 or unballed.max() >= k):
            raise ValueError(f"unballed_rows must lie in [0, {k}), got {unballed.tolist()[:10]}")
        res = spec.resolve(d, k)
        self.res, self.weight, self.columns = res, float(weight), columns
        self.full = regularize(stats, res.ridge, res.anchor, res.mu)
        red, self.elim = eliminate_free(self.full, np.setdiff1d(res.free, columns))
        self.G, self.H, self.c = red.G, red.H, red.c
        keep = self.elim.keep
        pos = np.full(d, -1)
        pos[keep] = np.arange(keep.size)
        self.lam = res.lam[keep]
        self.in_J = np.zeros(keep.size, dtype=bool)
        self.in_J[pos[columns]] = True
        self.balls = [(pos[idx], r) for idx, r in res.balls]
        self.ball_rows = np.ones(k, dtype=bool)
        self.ball_rows[unballed] = False
        self.k, self.d = k, keep.size

    # ---- primal ---------------------------------------------------------------------------------
    def feasible(self, W: np.ndarray) -> bool:
        """Every ball part of every ball row inside its ball (relative tolerance BALL_RTOL)."""
        rows = self.ball_rows
        return all(np.all(np.abs(W[np.ix_(rows, idx)]).sum(axis=1) <= r * (1 + BALL_RTOL))
                   for idx, r in self.balls)

    def project(self, W: np.ndarray) -> np.ndarray:
        """W with the ball parts of the ball rows projected onto their ℓ1 balls (exact)."""
        W = W.copy()
        rows = np.flatnonzero(self.ball_rows)
        for idx, r in self.balls:
            W[np.ix_(rows, idx)] = project_l1_ball_rows(W[np.ix_(rows, idx)], r)
        return W

    def prox_columns(self, V: np.ndarray, step: float) -> np.ndarray:
        """argmin_W ‖W − V‖²/(2·step) + Σλ|W| + gΣ_J‖W_:j‖: soft-threshold, then shrink each group."""
        W = np.sign(V) * np.maximum(np.abs(V) - step * self.lam, 0.0)
        if self.weight > 0 and self.in_J.any():
            norms = np.linalg.norm(W[:, self.in_J], axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                shrink = np.where(norms > 0, np.maximum(1.0 - step * self.weight / norms, 0.0), 0.0)
            W[:, self.in_J] *= shrink
        return W

    # ---- dual -----------------------------------------------------------------------------------
    def dual_bound(self, W: np.ndarray) -> float:
        """max(D, 0) over the dual points t·(residual at W) with the splits of the module
        docstring (dead group columns either absorbed by g or charged to ν, whichever is better);
        every evaluated point is checked feasible, so the value is a valid lower bound of P*."""
        GW = W @ self.G
        hw = np.einsum("ji,ij->i", self.H, W)
        f = np.einsum("ij,ij->i", GW, W) - 2 * hw + self.c
        A, F = float((self.c - hw).sum()), float(f.sum())
        V = 2 * (self.H.T - GW)
        norms = np.zeros(self.d)
        norms[self.in_J] = np.linalg.norm(W[:, self.in_J], axis=0)
        live = norms > 0
        direction = np.zeros_like(W)  # g·W_:j/‖W_:j‖ on live group columns
        direction[:, live] = self.weight * W[:, live] / norms[live]
        dead = self.in_J & ~live
        best = _DualSearch(self, V, direction, dead).best(A, F)
        if dead.any():
            best = max(best, _DualSearch(self, V, direction, np.zeros_like(dead)).best(A, F))
        return best

    def certify(self, W_red: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(full W, per-row objectives f_i + λ|w_i| on the full problem, total objective with the
        group term, certified gap ≥ total − optimum; inf when W leaves a ball)."""
        W = self.elim.recover(W_red)
        rows = self.full.objective(W) + np.abs(W) @ self.res.lam
        total = float(rows.sum() + self.weight * np.linalg.norm(W[:, self.columns], axis=0).sum())
        gap = max(total - self.dual_bound(W_red), 0.0) if self.feasible(W_red) else np.inf
        return W, rows, total, gap


class _DualSearch:
    """The dual points tV of one W with the ball multipliers ν(t) they need: Σν·r and the
    largest violation of the column sets, as functions of the scalar t."""

    def __init__(self, prob: GroupLasso, V: np.ndarray, direction: np.ndarray, skip: np.ndarray):
        self.prob, J = prob, prob.in_J
        in_ball = np.zeros(V.shape, dtype=bool)
        rows = np.flatnonzero(prob.ball_rows)
        jpos = np.cumsum(J) - 1  # position of a group column among the group columns
        self.balls = []
        for idx, r in prob.balls:
            in_ball[np.ix_(rows, idx)] = True
            self.balls.append((V[np.ix_(rows, idx)], direction[np.ix_(rows, idx)], prob.lam[idx],
                               skip[idx], r, jpos[idx[J[idx]]]))
        self.rows = rows
        fixed = ~in_ball & ~J[None, :]  # |t·v| ≤ λ, no multiplier can help: a bound on t
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(fixed & (np.abs(V) > 0), np.broadcast_to(prob.lam, V.shape) / np.abs(V), np.inf)
        self.t_fixed = float(ratio.min(initial=np.inf))
        self.VJ, self.lamJ = np.abs(V[:, J]), prob.lam[J]

    def evaluate(self, t: float) -> tuple[float, float]:
        """(Σ ν·r, largest violation) at t; the point is dual feasible iff the violation ≤ 0."""
        cost, nuJ = 0.0, np.zeros_like(self.VJ)
        for Vb, Db, lamb, skipb, r, jcols in self.balls:
            need = np.abs(t * Vb - Db) - lamb
            need[:, skipb] = 0.0
            nu = np.maximum(need, 0.0).max(axis=1, initial=0.0)
            cost += r * float(nu.sum())
            if jcols.size:
                nuJ[self.rows[:, None], jcols[None, :]] += nu[:, None]
        col = np.linalg.norm(np.maximum(t * self.VJ - self.lamJ - nuJ, 0.0), axis=0)
        return cost, max(float(col.max(initial=0.0)) - self.prob.weight, t - self.t_fixed)

    def best(self, A: float, F: float) -> float:
        """max over feasible t ∈ [0, t_max] of 2tA − t²F − Σν(t)·r (concave): t_max by bisection
        (its left end is always a checked feasible point), then golden section; infeasible points
        count −inf."""

        def value(t) -> float:
            cost, viol = self.evaluate(float(t))
            return 2 * t * A - t * t * F - cost if viol <= 0 else -np.inf

        lo, hi = 0.0, _T_CAP
        if self.evaluate(hi)[1] <= 0:
            lo = hi
        for _ in range(_BISECTION_STEPS if lo < hi else 0):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.evaluate(mid)[1] <= 0 else (lo, mid)
        return float(max(golden_section_max(np.vectorize(value), 0.0, lo, _GOLDEN_STEPS), 0.0))


def group_objective(stats: GramStats, spec: RowSpec, weight: float, columns, W) -> float:
    """Σ_i f_i(w_i) + λ|w_i| + g Σ_J ‖W_:j‖ on the full (unreduced) problem at W (k, d)."""
    res = spec.resolve(stats.d, stats.k)
    full = regularize(stats, res.ridge, res.anchor, res.mu)
    cols = np.asarray(columns, dtype=int)
    return float((full.objective(W) + np.abs(W) @ res.lam).sum() + weight * np.linalg.norm(W[:, cols], axis=0).sum())


def certify_group_point(stats: GramStats, spec: RowSpec, weight: float, columns, W, *,
                        unballed_rows=(), threshold: float = 0.0):
    """Our certificate for a point from any solver (e.g. an interior-point W): the free
    coordinates re-optimized, the ball parts projected, and — when it certifies better — group
    columns with ‖W_:j‖ ≤ threshold set to 0 exactly. Returns (W, row objectives, total, gap)."""
    prob = GroupLasso(stats, spec, weight, columns, unballed_rows)
    W_red = prob.project(np.nan_to_num(np.asarray(W, dtype=float))[:, prob.elim.keep])
    best = prob.certify(W_red)
    if threshold > 0:
        tiny = prob.in_J & (np.linalg.norm(W_red, axis=0) <= threshold)
        if tiny.any():
            W_red = W_red.copy()
            W_red[:, tiny] = 0.0
            best = min(best, prob.certify(W_red), key=lambda out: out[3])
    return best


def _admm(prob: GroupLasso, W: np.ndarray, tol: float, max_iter: int):
    """Consensus ADMM on W = V1 (balls) = V2 (ℓ1 + groups), ρ adapted by residual balancing;
    the point proj_balls(V2) (exact zeros from the prox, inside the balls) is certified on a
    geometric schedule. Returns (best certified reduced W, its gap, iterations)."""
    k, d = W.shape
    rho = float(max(np.trace(prob.G) / max(d, 1), 1e-8))
    V1, V2, Y1, Y2 = W.copy(), W.copy(), np.zeros_like(W), np.zeros_like(W)
    HT2 = 2 * prob.H.T
    chol = sla.cho_factor(2 * prob.G + 2 * rho * np.eye(d))
    best, best_rel, best_gap, next_check = None, np.inf, np.inf, CHECK_EVERY
    for it in range(1, max_iter + 1):
        W = sla.cho_solve(chol, (HT2 + rho * (V1 - Y1 + V2 - Y2)).T).T
        V1_old, V2_old = V1, V2
        V1 = prob.project(W + Y1)
        V2 = prob.prox_columns(W + Y2, 1.0 / rho)
        Y1 += W - V1
        Y2 += W - V2
        if it >= next_check or it == max_iter:
            next_check = it + max(CHECK_EVERY, it // 5)
            cand = prob.project(V2)
            _, _, total, gap = prob.certify(cand)
            rel = float(relative_gap(gap, total))
            if rel < best_rel:
                best, best_rel, best_gap = cand, rel, gap
            if rel <= tol:
                return best, best_gap, it
        if it % ADAPT_EVERY == 0:
            r = np.linalg.norm(W - V1) + np.linalg.norm(W - V2)
            s = rho * (np.linalg.norm(V1 - V1_old) + np.linalg.norm(V2 - V2_old))
            ratio = r / max(s, 1e-300)
            factor = float(np.clip(np.sqrt(ratio), 0.1, 10.0)) if (ratio > 5 or ratio < 0.2) else 1.0
            if factor != 1.0:
                rho *= factor
                Y1, Y2 = Y1 / factor, Y2 / factor
                chol = sla.cho_factor(2 * prob.G + 2 * rho * np.eye(d))
    return best, best_gap, max_iter


def solve_group_lasso_native(stats: GramStats, spec: RowSpec, weight: float, columns, *,
                             unballed_rows=(), tol: float = 1e-9, max_iter: int = 30000,
                             warm_start=None, threshold: float = 1e-6) -> tuple[RowSolution, np.ndarray]:
    """The coupled group lasso by consensus ADMM, certified by our duality gap (module docstring).

    Returns (RowSolution, dead columns). Every row carries the problem's total gap (the rows are
    coupled: only the whole has a gap); status "optimal" iff gap ≤ tol·max(1, |total objective|).
    Dead columns: group columns with ‖W_:j‖_2 ≤ threshold.
    """
    start = time.perf_counter()
    prob = GroupLasso(stats, spec, weight, columns, unballed_rows)
    W0 = np.zeros((prob.k, prob.d))
    if warm_start is not None:
        W0 = prob.project(np.nan_to_num(np.asarray(warm_start, dtype=float)[:, prob.elim.keep]))
    W_red, gap, iterations = _admm(prob, W0, tol, max_iter)
    W, rows, total, gap = prob.certify(W_red)
    status = "optimal" if relative_gap(gap, total) <= tol else "inaccurate"
    k = prob.k
    sol = RowSolution(W, rows, np.full(k, gap), [status] * k, np.full(k, iterations),
                      time.perf_counter() - start, np.arange(k), np.zeros(k, dtype=bool), "group_native",
                      info={"objective": total, "gap": gap})
    dead = prob.columns[np.linalg.norm(W[:, prob.columns], axis=0) <= threshold]
    return sol, dead
