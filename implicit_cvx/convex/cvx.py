"""The row problems as cvxpy problems: the reference, the extension point, SCS → Clarabel.

The Gram form is compiled once as a parametrized (DPP) problem — G = LLᵀ is a constant shared by
all rows, h_i and c_i are Parameters — and re-solved per row. SCS answers are projected onto the
balls and judged by the same duality-gap certificate as the native solver (rows.row_gap); rows
above tolerance are re-solved with Clarabel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ..numerics import project_balls
from .gram import GramStats
from .rows import (
    ReducedProblem,
    RowFitError,
    RowSolution,
    RowSpec,
    check_row_selection,
    check_warm_start,
    relative_gap,
    row_gap,
)

# tight interior-point tolerances: the certificate asks for gradients accurate to ~tol·λ
CLARABEL_OPTS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def psd_factor(G: np.ndarray) -> np.ndarray:
    """L (d, rank) with LLᵀ = G for a symmetric PSD G (eigh-based; handles singular G)."""
    e, V = np.linalg.eigh((G + G.T) / 2)
    keep = e > max(e.max(initial=0.0), 0.0) * 1e-14
    return V[:, keep] * np.sqrt(e[keep])


@dataclass
class RowProblem:
    """A compiled row problem: set `h`, `c` (and `t` for equality) per row, then solve."""

    problem: cp.Problem
    w: cp.Variable
    h: cp.Parameter | None
    c: cp.Parameter | None


def _penalty_and_balls(w, res) -> tuple:
    pen = res.lam @ cp.abs(w) if np.any(res.lam) else 0
    return pen, [cp.norm1(w[idx]) <= r for idx, r in res.balls]


def _checked(problem: cp.Problem, extended: bool) -> cp.Problem:
    if not problem.is_dcp():
        raise ValueError("the row problem (with the user's `extra` terms) is not DCP; fix `extra`")
    if not extended and not problem.is_dpp():
        raise ValueError("internal error: the Gram row problem is not DPP")
    return problem


def build_row_problem(stats: GramStats, spec: RowSpec, extra: Callable | None = None, row: int = 0) -> RowProblem:
    """min wᵀGw − 2hᵀw + c + Σλ_j|w_j| s.t. balls, with ridge/anchor folded into (G, h, c).

    Without `extra` the problem is DPP: compile once, then set h, c per row. `extra(w, i)`
    returns (penalty expression, list of constraints) for row i; the problem is then specific
    to `row` and only DCP-checked.
    """
    prob = ReducedProblem(stats, spec)
    folded, res = prob.full, prob.spec
    w = cp.Variable(folded.d)
    h = cp.Parameter(folded.d)
    c = cp.Parameter()
    pen, cons = _penalty_and_balls(w, res)
    objective = cp.sum_squares(psd_factor(folded.G).T @ w) - 2 * h @ w + c + pen
    if extra is not None:
        more, more_cons = extra(w, row)
        objective, cons = objective + more, cons + list(more_cons)
    problem = _checked(cp.Problem(cp.Minimize(objective), cons), extra is not None)
    return RowProblem(problem, w, h, c)


def _solve_once(rp: RowProblem, solver: str, opts: dict) -> tuple[np.ndarray | None, str]:
    try:
        rp.problem.solve(solver=solver, **opts)
    except cp.error.SolverError:
        return None, "solver_error"
    return rp.w.value, rp.problem.status


def _polish(prob: ReducedProblem, w: np.ndarray, row: int) -> np.ndarray:
    """Project the ball parts onto their balls and re-optimize the free coordinates exactly."""
    w_S = project_balls(w[None, prob.elim.keep], prob.groups)
    return prob.elim.recover(prob.clip_balls(w_S), [row])[0]


def _certified(stats, spec, prob, w, row) -> tuple[np.ndarray | None, float]:
    """Polished w and its relative certified gap (inf when the solver returned nothing)."""
    if w is None:
        return None, np.inf
    w = _polish(prob, w, row)
    obj, gap = row_gap(stats, spec, w[None], [row])
    return w, float(relative_gap(gap, obj)[0])


def solve_rows_cvxpy(
    stats: GramStats,
    spec: RowSpec,
    *,
    solver: str = "SCS",
    tol: float = 1e-9,
    extra: Callable | None = None,
    rows=None,
    warm_start: np.ndarray | None = None,
    solver_opts: dict | None = None,
) -> RowSolution:
    """Solve rows through cvxpy; each answer is projected onto its balls and certified by the one
    judge, rows.row_gap (status "optimal" iff its relative gap ≤ tol).

    With `extra` there is no certificate of ours: gap = NaN and the status is the solver's.
    Escalation to another solver is `solvers.solve_certified`'s job.
    """
    start = time.perf_counter()
    rows = check_row_selection(rows, stats.k)
    warm_start = check_warm_start(warm_start, len(rows), stats.d)
    prob = ReducedProblem(stats, spec)
    base = None if extra is not None else build_row_problem(stats, spec)
    # tight tolerances where our certificate judges; the solver's defaults where its status does
    opts = dict({} if extra is not None else _opts(solver), **(solver_opts or {}),
                warm_start=warm_start is not None)
    W = np.full((len(rows), stats.d), np.nan)
    status = []
    for n, i in enumerate(rows):
        rp = base if extra is None else build_row_problem(stats, spec, extra, row=i)
        rp.h.value, rp.c.value = prob.full.H[:, i], float(prob.full.c[i])
        if warm_start is not None:
            rp.w.value = warm_start[n]
        w, st = _solve_once(rp, solver, opts)
        if extra is None:
            w, gap = _certified(stats, spec, prob, w, i)
            st = "optimal" if gap <= tol else "inaccurate"
        if w is not None:
            W[n] = w
        status.append(st)
    obj, gaps = row_gap(stats, spec, np.nan_to_num(W), rows)
    if extra is not None:
        gaps[:] = np.nan
    failed = np.isnan(W).any(axis=1)  # the solver returned nothing: never certified
    obj[failed], gaps[failed] = np.nan, np.inf
    return RowSolution(W, obj, gaps, status, np.zeros(len(rows), dtype=int),
                       time.perf_counter() - start, rows, None, f"cvxpy:{solver}")


def _opts(solver: str) -> dict:
    return CLARABEL_OPTS if solver == "CLARABEL" else {}


def _raw_data(R, T):
    R = np.asarray(R, dtype=float)
    T = np.asarray(T, dtype=float)
    T = T[:, None] if T.ndim == 1 else T
    if R.ndim != 2 or T.shape[0] != R.shape[0]:
        raise ValueError(f"R (m, d) and T (m, k) must share m (samples as rows); got {R.shape}, {T.shape}")
    return R, T


def _anchor_terms(w, res, row):
    out = 0
    if res.ridge:
        out = out + res.ridge * cp.sum_squares(w)
    if res.mu:
        out = out + res.mu * cp.sum_squares(w - res.anchor[row])
    return out


def solve_row_raw(R, t, spec: RowSpec, solver: str = "CLARABEL", row: int = 0, k: int = 1) -> tuple[np.ndarray, float]:
    """One row as a fresh cvxpy problem on the raw m-sample data (the peers' way): (w, objective).

    `row` selects the anchor row of a spec with anchor W0 of shape (k, d).
    """
    R, T = _raw_data(R, t)
    res = spec.resolve(R.shape[1], k)
    w = cp.Variable(R.shape[1])
    pen, cons = _penalty_and_balls(w, res)
    obj = cp.sum_squares(T[:, 0] - R @ w) / R.shape[0] + pen + _anchor_terms(w, res, row)
    problem = _checked(cp.Problem(cp.Minimize(obj), cons), True)
    problem.solve(solver=solver, **_opts(solver))
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RowFitError(f"row {row}: {solver} returned status {problem.status!r} on the raw problem")
    return w.value, float(problem.value)


def solve_rows_equality(R, T, spec: RowSpec, solver: str = "CLARABEL") -> RowSolution:
    """Exact-equality rows: min Σλ_j|w_j| + α‖w‖² + μ‖w − w0_i‖² s.t. Rw = t_i and the balls.

    No strictly feasible point exists in Gram form, so this works on the raw constraints (t_i is
    a Parameter, compiled once). No certificate: gap = NaN, status is the solver's status.
    """
    start = time.perf_counter()
    R, T = _raw_data(R, T)
    res = spec.resolve(R.shape[1], T.shape[1])
    w = cp.Variable(R.shape[1])
    t = cp.Parameter(R.shape[0])
    pen, cons = _penalty_and_balls(w, res)
    base = pen + (res.ridge + res.mu) * cp.sum_squares(w) if (res.ridge or res.mu) else pen
    w0 = cp.Parameter(R.shape[1])
    objective = base - 2 * res.mu * w0 @ w if res.mu else base
    problem = _checked(cp.Problem(cp.Minimize(objective), cons + [R @ w == t]), False)
    W, status = np.full((T.shape[1], R.shape[1]), np.nan), []
    for i in range(T.shape[1]):
        t.value = T[:, i]
        w0.value = res.anchor[i] if res.mu else np.zeros(R.shape[1])
        sol, st = _solve_once(RowProblem(problem, w, None, None), solver, _opts(solver))
        if sol is not None:
            W[i] = sol
        status.append(st)
    obj = np.abs(W) @ res.lam + res.ridge * (W**2).sum(1)
    if res.mu:
        obj = obj + res.mu * ((W - res.anchor) ** 2).sum(1)
    n = T.shape[1]
    return RowSolution(W, obj, np.full(n, np.nan), status, np.zeros(n, dtype=int),
                       time.perf_counter() - start, np.arange(n), np.zeros(n, dtype=bool), f"cvxpy:{solver}")


def solve_group_lasso(
    stats: GramStats,
    spec: RowSpec,
    group_weight: float,
    columns,
    *,
    unballed_rows=(),
    threshold: float = 1e-6,
    solver: str = "CLARABEL",
) -> tuple[RowSolution, np.ndarray]:
    """Column group lasso (architecture optimisation, paper §5): couples all rows.

    min Σ_i row_objective_i(w_i) + group_weight·Σ_{j∈columns} ‖W[:, j]‖_2 s.t. the spec's balls on
    every row except `unballed_rows` (e.g. the rows of (C, D) stacked under those of (A, B)).
    One cvxpy problem; returns the solution (gap = NaN: no native certificate) and the dead
    columns (‖W[:, j]‖_2 ≤ threshold).
    """
    start = time.perf_counter()
    if not (np.isfinite(group_weight) and group_weight >= 0):
        raise ValueError(f"group_weight must be finite and ≥ 0, got {group_weight}")
    columns = np.asarray(columns, dtype=int).ravel()
    prob = ReducedProblem(stats, spec)
    full, res = prob.full, prob.spec
    W = cp.Variable((full.k, full.d))
    ball_rows = np.setdiff1d(np.arange(full.k), np.asarray(unballed_rows, dtype=int))
    objective = (cp.sum_squares(W @ psd_factor(full.G)) - 2 * cp.sum(cp.multiply(W, full.H.T))
                 + full.c.sum() + cp.sum(cp.abs(W) @ res.lam)
                 + group_weight * cp.sum(cp.norm(W[:, columns], 2, axis=0)))
    cons = [cp.sum(cp.abs(W[ball_rows][:, idx]), axis=1) <= r for idx, r in res.balls if ball_rows.size]
    problem = _checked(cp.Problem(cp.Minimize(objective), cons), True)
    problem.solve(solver=solver, **_opts(solver))
    if W.value is None:
        raise RowFitError(f"group lasso: {solver} returned status {problem.status!r}")
    Wv = W.value
    obj = full.objective(Wv) + np.abs(Wv) @ res.lam
    k = full.k
    sol = RowSolution(Wv, obj, np.full(k, np.nan), [problem.status] * k, np.zeros(k, dtype=int),
                      time.perf_counter() - start, np.arange(k), np.zeros(k, dtype=bool), f"cvxpy:{solver}")
    return sol, columns[np.linalg.norm(Wv[:, columns], axis=0) <= threshold]
