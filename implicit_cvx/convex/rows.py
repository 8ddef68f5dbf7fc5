"""Native certified solver for the row problems of every squared-loss weight fit.

Row i:  minimize_w (1/m)‖t_i − Rw‖² + Σ_j λ_j|w_j| + α‖w‖² + μ‖w − w0_i‖²
        subject to ‖w_g‖_1 ≤ r_g for each ball group g.
Solved in Gram form (gram.py), free coordinates eliminated, by an exact primal active-set method
per row (Newton/KKT steps on the support); every row carries a Fenchel duality-gap certificate,
computed vectorized over rows — the judge of every engine (native and cvxpy alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from ..numerics import BALL_RTOL, golden_section_max, project_balls, shrink_into_balls
from .batched import solve_batched
from .gram import GramStats, eliminate_free, regularize


class RowFitError(RuntimeError):
    """A convex step could not be solved to its certified tolerance; the message names the step,
    the rows, the solvers tried and the gaps reached, and what to do."""


@dataclass
class RowSpec:
    """The row formulation: ℓ1 penalty λ (scalar or (d,)), free coordinates, ℓ1 balls, ridge, anchor.

    A scalar λ applies to every coordinate except the free ones. `balls` is a list of
    (index array, radius) over disjoint index sets. Unpenalized coordinates outside every ball
    are treated as free (eliminated exactly; their Gram block must be positive definite).
    """

    penalty: float | np.ndarray = 0.0
    free: np.ndarray | list = field(default_factory=list)
    balls: list = field(default_factory=list)
    ridge: float = 0.0
    anchor: np.ndarray | None = None
    mu: float = 0.0

    def with_penalty(self, penalty) -> RowSpec:
        return replace(self, penalty=penalty)

    def for_rows(self, rows) -> RowSpec:
        """The spec of a subset of the rows (the anchor, one row per output, is subset too)."""
        return self if self.anchor is None else replace(self, anchor=np.asarray(self.anchor)[rows])

    def resolve(self, d: int, k: int) -> _Resolved:
        """Validate against d coordinates and k rows; return per-coordinate arrays."""
        free = np.asarray(self.free, dtype=int).ravel()
        if free.size and (free.min() < 0 or free.max() >= d):
            raise ValueError(f"free coordinates {free.tolist()} out of range [0, {d})")
        if len(np.unique(free)) != free.size:
            raise ValueError(f"free coordinates {free.tolist()} contain duplicates")
        lam = np.asarray(self.penalty, dtype=float)
        if lam.ndim == 0:
            lam = np.full(d, float(lam))
            lam[free] = 0.0
        elif lam.shape != (d,):
            raise ValueError(f"penalty must be a scalar or shape ({d},), got shape {lam.shape}")
        if not np.all(np.isfinite(lam)) or np.any(lam < 0):
            raise ValueError(f"penalty λ must be finite and ≥ 0, got min {np.min(lam)}")
        if np.any(lam[free] > 0):
            raise ValueError(
                f"free coordinates {free[lam[free] > 0].tolist()} are penalized (λ > 0); "
                f"free coordinates must have λ = 0"
            )
        owner = np.full(d, -1)
        balls = []
        for b, item in enumerate(self.balls):
            try:
                idx, radius = item
            except (TypeError, ValueError):
                raise ValueError(f"ball {b} must be an (index array, radius) pair, got {item!r}") from None
            idx = np.asarray(idx, dtype=int).ravel()
            radius = float(radius)
            if idx.size == 0 or idx.min() < 0 or idx.max() >= d:
                raise ValueError(f"ball {b} indices must be non-empty and in [0, {d}), got {idx.tolist()[:10]}")
            if not (np.isfinite(radius) and radius > 0):
                raise ValueError(f"ball {b} radius must be finite and > 0, got {radius}")
            if np.any(owner[idx] >= 0) or len(np.unique(idx)) != idx.size:
                raise ValueError(f"ball {b} overlaps an earlier ball (or repeats an index); balls must be disjoint")
            if np.intersect1d(idx, free).size:
                raise ValueError(f"free coordinates {np.intersect1d(idx, free).tolist()} lie in ball {b}; free coordinates must be outside every ball")
            owner[idx] = b
            balls.append((idx, radius))
        free_all = np.flatnonzero((lam == 0) & (owner < 0))
        for name, val in (("ridge", self.ridge), ("mu", self.mu)):
            if not (np.isfinite(val) and val >= 0):
                raise ValueError(f"{name} must be finite and ≥ 0, got {val}")
        anchor = None
        if self.mu > 0:
            if self.anchor is None:
                raise ValueError("mu > 0 needs an anchor W0 of shape (k, d)")
            anchor = np.asarray(self.anchor, dtype=float)
            if anchor.shape != (k, d):
                raise ValueError(f"anchor W0 must have shape ({k}, {d}), got {anchor.shape}")
        return _Resolved(lam, free_all, balls, owner, float(self.ridge), anchor, float(self.mu))


@dataclass
class _Resolved:
    lam: np.ndarray
    free: np.ndarray
    balls: list
    owner: np.ndarray
    ridge: float
    anchor: np.ndarray | None
    mu: float


@dataclass
class RowSolution:
    """Solved rows: W (k, d), objective, certified gap (≥ objective − optimum), status per row.

    `escalated` marks rows re-solved by a later solver of a chain, `uncertified` lists rows a fit
    accepted without a certificate, `info` holds solver-specific results (e.g. dead columns).
    """

    W: np.ndarray
    objective: np.ndarray
    gap: np.ndarray
    status: list
    iterations: np.ndarray
    seconds: float
    rows: np.ndarray
    escalated: np.ndarray | None = None
    solver: str = "native"
    uncertified: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    info: dict = field(default_factory=dict)

    @property
    def max_gap(self) -> float:
        return float(np.max(self.gap)) if self.gap.size else 0.0

    def to_dict(self) -> dict:
        esc = self.escalated
        optimal = sum(str(s).startswith("optimal") for s in self.status)
        return {
            "solver": self.solver,
            "rows": int(len(self.rows)),
            "max_duality_gap": self.max_gap,
            "optimal": int(optimal),
            "inaccurate": int(len(self.status) - optimal),
            "max_iterations": int(np.max(self.iterations)) if self.iterations.size else 0,
            "rows_escalated": int(np.sum(esc)) if esc is not None else 0,
            "rows_uncertified": int(len(self.uncertified)),
            "seconds": float(self.seconds),
        }


METHODS = ("auto", "batched", "active_set")
ADD_FRACTION = 0.5  # add every coordinate violating by ≥ 50% of the worst: fewer pivots, same answer
# Adding many coordinates at once can make the face's KKT system singular and the method cycle
# (seen with 10%); a row left uncertified is re-solved from 0 adding one coordinate per pivot.


class ReducedProblem:
    """A reduced (free-eliminated, ridge/anchor-folded) row problem shared by all rows."""

    def __init__(self, stats: GramStats, spec: RowSpec):
        res = spec.resolve(stats.d, stats.k)
        self.spec = res
        folded = regularize(stats, res.ridge, res.anchor, res.mu)
        self.full = folded
        red, self.elim = eliminate_free(folded, res.free)
        self.G, self.H, self.c = red.G, red.H, red.c
        keep = self.elim.keep
        self.lam = res.lam[keep]
        pos = np.full(stats.d, -1)
        pos[keep] = np.arange(len(keep))
        self.groups = [(pos[idx], r) for idx, r in res.balls]
        self.gid = res.owner[keep]
        self.unballed = np.flatnonzero(self.gid < 0)

    def clip_balls(self, W: np.ndarray) -> np.ndarray:
        """Scale each ball part down onto its ball if rounding left it outside."""
        return shrink_into_balls(W, self.groups)

    def certify(self, W: np.ndarray, rows: np.ndarray):
        """(primal objective, certified gap) of reduced iterates W (na, d') for `rows`.

        Gap = P(w) − max_s D(s), D(s) = 2s(c − hᵀw) − s²f(w) − g*(s·2(h − Gw)) (Fenchel dual).
        """
        GW = W @ self.G
        Ht = self.H[:, rows].T
        hw = np.einsum("ij,ij->i", Ht, W)
        f = np.einsum("ij,ij->i", GW, W) - 2 * hw + self.c[rows]
        primal = f + np.abs(W) @ self.lam
        a = self.c[rows] - hw
        av = np.abs(2 * (Ht - GW))
        u = self.unballed
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(av[:, u] > 0, self.lam[u] / av[:, u], np.inf)
        s_box = ratio.min(axis=1) if u.size else np.full(len(rows), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_hi = np.minimum(s_box, np.where(f > 0, a / f, np.inf))
        s_hi = np.where(np.isfinite(s_hi), np.maximum(s_hi, 0.0), 1.0)

        def dual(s):
            val = 2 * s * a - s * s * f
            for idx, r in self.groups:
                val -= r * np.maximum(0.0, (s[:, None] * av[:, idx] - self.lam[idx]).max(axis=1))
            return val

        best = np.maximum(dual(np.minimum(1.0, s_box)), golden_section_max(dual, 0.0 * s_hi, s_hi))
        return primal, np.maximum(primal - np.maximum(best, 0.0), 0.0)

    def active_set(self, w: np.ndarray, row: int, max_pivots: int,
                   add_fraction: float = ADD_FRACTION) -> tuple[np.ndarray, int]:
        """Primal active-set method from a feasible w: exact, monotone in the objective.

        On the face (support S, signs σ, active balls) solve the KKT system
        `[2G_SS, E; Eᵀ, 0][w_S; ν] = [2h_S − λ_Sσ; r_active]`; step towards it until a coordinate
        reaches 0 (drop it) or an inactive ball becomes tight (activate it); at the face optimum
        release a ball with ν < 0, else add the dual-infeasible coordinates (|v_j| > λ_j + ν_g).
        """
        h, G, lam, groups, gid = self.H[:, row], self.G, self.lam, self.groups, self.gid
        w, sigma = w.copy(), np.sign(w)
        active = [b for b, (idx, r) in enumerate(groups) if np.abs(w[idx]).sum() >= r * (1 - 1e-12)]
        for pivot in range(max_pivots):
            S = np.flatnonzero(sigma)
            act = [b for b in active if np.any(sigma[groups[b][0]])]
            E = (gid[S][:, None] == np.array(act, dtype=int)[None, :]) * sigma[S][:, None]
            K = np.block([[2 * G[np.ix_(S, S)], E], [E.T, np.zeros((len(act), len(act)))]])
            rhs = np.concatenate([2 * h[S] - lam[S] * sigma[S], [groups[b][1] for b in act]])
            try:
                sol = np.linalg.solve(K, rhs)
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
            if not np.all(np.isfinite(sol)):
                return w, pivot
            step, nu = sol[: len(S)] - w[S], sol[len(S) :]
            toward_zero = sigma[S] * step
            with np.errstate(divide="ignore", invalid="ignore"):
                t_coord = np.where(toward_zero < 0, sigma[S] * w[S] / -toward_zero, np.inf)
            tau, blocking_ball = min(1.0, t_coord.min(initial=np.inf)), None
            for b, (idx, r) in enumerate(groups):
                slope = (toward_zero[gid[S] == b]).sum()
                if b not in act and slope > 0:
                    t_ball = max((r - np.abs(w[idx]).sum()) / slope, 0.0)
                    if t_ball < tau:
                        tau, blocking_ball = t_ball, b
            w[S] += tau * step
            if tau < 1:
                if blocking_ball is not None:
                    active.append(blocking_ball)
                else:
                    drop = S[t_coord <= tau]
                    w[drop], sigma[drop] = 0.0, 0.0
                continue
            if len(nu) and nu.min() < 0:
                active.remove(act[int(np.argmin(nu))])
                continue
            bound = lam.copy()
            for b, n in zip(act, nu, strict=True):
                bound[groups[b][0]] += n
            v = 2 * (h - G @ w)
            viol = np.where(sigma == 0, np.abs(v) - bound, -np.inf)
            j = int(np.argmax(viol))
            worst = viol[j]
            if worst <= 1e-13 * (1 + bound[j]):
                return w, pivot
            add = viol >= add_fraction * worst
            sigma[add] = np.sign(v[add])
        return w, max_pivots


def relative_gap(gap, obj):
    """gap / max(1, |objective|): the measure every row tolerance is checked against."""
    return gap / np.maximum(1.0, np.abs(obj))


def solve_rows(
    stats: GramStats,
    spec: RowSpec,
    *,
    tol: float = 1e-9,
    max_iter: int | None = None,
    warm_start: np.ndarray | None = None,
    rows=None,
    method: str = "auto",
) -> RowSolution:
    """Solve the selected rows (all by default) to relative duality gap ≤ tol·max(1, |objective|).

    Row i minimizes (1/m)‖t_i − Rw‖² + Σ_j λ_j|w_j| + α‖w‖² + μ‖w − w0_i‖² subject to the ℓ1
    balls of `spec`, given only the Gram statistics of (R, T). Every row carries a Fenchel
    duality-gap certificate. Rows left above tolerance are returned with status "inaccurate";
    `convex.solvers.solve_certified` escalates or refuses them.

    Parameters
    ----------
    stats : GramStats
        The Gram statistics of the samples (`convex.gram.gram_stats(R, T)`).
    spec : RowSpec
        The formulation: ℓ1 penalty, free coordinates, balls, ridge, anchor.
    tol : float, default=1e-9
        The relative duality-gap tolerance.
    max_iter : int, optional
        Pivots per row (default 20·d + 100).
    warm_start : ndarray, shape (k_rows, d), optional
        Starting rows.
    rows : array_like of int, optional
        The rows to solve (default all k).
    method : {"auto", "batched", "active_set"}, default="auto"
        "batched" ("auto"): all rows at once (ADMM, then an active set in lockstep over rows),
        rows left uncertified then by the per-row method; "active_set": the native active-set
        method per row only.

    Returns
    -------
    RowSolution
        W (k_rows, d), objectives, certified gaps and status per row.

    Raises
    ------
    ValueError
        If the method, rows or warm start are invalid.

    Examples
    --------
    A lasso on two output rows, checked against cvxpy on the same problem:

    >>> import cvxpy as cp
    >>> import numpy as np
    >>> from implicit_cvx.convex.gram import gram_stats
    >>> from implicit_cvx.convex.rows import RowSpec, solve_rows
    >>> rng = np.random.default_rng(0)
    >>> R = rng.normal(size=(50, 3))
    >>> T = R @ np.array([[1.0, 0.0], [0.0, -2.0], [0.5, 0.0]])
    >>> sol = solve_rows(gram_stats(R, T), RowSpec(penalty=0.01))
    >>> sol.W.round(3) + 0.0, sol.status
    (array([[ 0.997,  0.   ,  0.494],
           [ 0.   , -1.993,  0.   ]]), ['optimal', 'optimal'])
    >>> w = cp.Variable(3)
    >>> _ = cp.Problem(cp.Minimize(cp.sum_squares(T[:, 0] - R @ w) / 50 + 0.01 * cp.norm1(w))).solve()
    >>> bool(np.allclose(sol.W[0], w.value, atol=1e-4))
    True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    start = time.perf_counter()
    rows = check_row_selection(rows, stats.k)
    warm_start = check_warm_start(warm_start, len(rows), stats.d)
    prob = ReducedProblem(stats, spec)
    W, obj, gap, iters = _solve_active_set(prob, rows, warm_start, max_iter, tol, method)
    return _finish(prob, W, obj, gap, iters, rows, tol, start)


def check_row_selection(rows, k: int) -> np.ndarray:
    """The selected rows as an int array (all k by default), each in [0, k)."""
    rows = np.arange(k) if rows is None else np.asarray(rows, dtype=int).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= k):
        raise ValueError(f"rows must lie in [0, {k}), got range [{rows.min()}, {rows.max()}]")
    return rows


def check_warm_start(warm_start, k: int, d: int):
    """A (k, d) float warm start, or None."""
    if warm_start is None:
        return None
    warm_start = np.asarray(warm_start, dtype=float)
    if warm_start.shape != (k, d):
        raise ValueError(f"warm_start must have shape ({k}, {d}), got {warm_start.shape}")
    return warm_start


def _finish(prob: ReducedProblem, W_S, obj, gap, iters, rows, tol, start, **extra) -> RowSolution:
    status = ["optimal" if g <= tol else "inaccurate" for g in relative_gap(gap, obj)]
    W = prob.elim.recover(W_S, rows)
    return RowSolution(W, obj, gap, status, iters, time.perf_counter() - start, rows, **extra)


def _solve_active_set(prob: ReducedProblem, rows, warm_start, max_iter, tol, method="active_set"):
    """Each row by the active-set method from the (projected) warm start or 0; then certify.
    With method "batched"/"auto", all rows by batched.solve_batched first, and only the rows it
    leaves uncertified by the per-row method, warm-started from its point.

    Rows left uncertified are solved again from 0 adding one coordinate per pivot (the classic,
    slower rule); the better certified point of the two is kept."""
    k, d = len(rows), len(prob.lam)
    W = np.zeros((k, d))
    if warm_start is not None:
        W = project_balls(warm_start[:, prob.elim.keep], prob.groups)
    max_iter = 20 * d + 100 if max_iter is None else int(max_iter)
    iters = np.zeros(k, dtype=int)
    with threadpool_limits(1, user_api="blas"):  # small dense solves: threads only thrash
        todo = range(k if d else 0)
        if method != "active_set":
            W, obj, gap, iters = solve_batched(prob, rows, None if warm_start is None else W, max_iter)
            todo = np.flatnonzero(relative_gap(gap, obj) > tol)
        for i in todo:
            W[i], extra = prob.active_set(W[i], rows[i], max_iter)
            iters[i] += extra
        W = prob.clip_balls(W)
        obj, gap = prob.certify(W, rows)
        for i in np.flatnonzero(relative_gap(gap, obj) > tol):
            w, extra = prob.active_set(np.zeros(d), rows[i], max_iter, add_fraction=1.0)
            w = prob.clip_balls(w[None, :])
            o, g = prob.certify(w, rows[i : i + 1])
            iters[i] += extra
            if g[0] < gap[i]:
                W[i], obj[i], gap[i] = w[0], o[0], g[0]
    return W, obj, gap, iters


def row_gap(stats: GramStats, spec: RowSpec, W: np.ndarray, rows=None):
    """(objective, certified gap) of full rows W (k, d): the one certificate for every engine.

    The objective is the full one at W; the dual bound comes from the free-eliminated problem,
    so the gap also charges suboptimal free coordinates. Rows outside the balls (beyond the
    relative tolerance BALL_RTOL) get an infinite gap.
    """
    prob = ReducedProblem(stats, spec)
    rows = np.arange(stats.k) if rows is None else np.asarray(rows, dtype=int)
    W = np.atleast_2d(np.asarray(W, dtype=float))
    P_red, gap_red = prob.certify(W[:, prob.elim.keep], rows)
    obj = prob.full.subset(rows).objective(W) + np.abs(W) @ prob.spec.lam
    gap = obj - (P_red - gap_red)
    for idx, r in prob.spec.balls:
        gap = np.where(np.abs(W[:, idx]).sum(axis=1) > r * (1 + BALL_RTOL), np.inf, gap)
    return obj, np.maximum(gap, 0.0)


def solve_path(stats: GramStats, spec: RowSpec, lambdas, **kwargs) -> list[RowSolution]:
    """Solve along a sequence of penalties λ (scalars or (d,) arrays), warm-starting each."""
    out, warm = [], kwargs.pop("warm_start", None)
    for lam in lambdas:
        sol = solve_rows(stats, spec.with_penalty(lam), warm_start=warm, **kwargs)
        out.append(sol)
        warm = sol.W
    return out


__all__ = ["ReducedProblem", "RowFitError", "RowSolution", "RowSpec", "relative_gap", "row_gap", "solve_path", "solve_rows"]
