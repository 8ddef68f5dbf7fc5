"""One interface for every row solver, and the certify-escalate-or-refuse rule of every convex step.

A `RowProblem` is what a fit hands to the engine: Gram statistics and a `RowSpec`, plus the raw
samples for the exact-equality formulation, a column group penalty for the coupled group lasso, or
user cvxpy terms. Every solver is registered in `SOLVERS` with one signature,
    solver(problem, *, tol, rows, warm_start) → RowSolution,
and `solve_certified` runs a chain of them: each row goes to the next solver only while it is not
certified, and a row still uncertified after the last one stops the fit with a `RowFitError`
naming the step, the rows, the solvers and the gaps — unless the caller explicitly accepts
uncertified steps, which are then reported. A NaN anywhere in a row fails that row.

Certificates: squared-loss rows carry our Fenchel duality gap (`rows.row_gap`); the coupled column
group lasso carries ours too (`group.GroupLasso`: one gap for the whole problem, stored on every
row), whichever solver found the point. The equality and user-extended formulations have no
certificate of ours yet: they count as certified only on an "optimal" solver status, and their
summary says `certificate: solver status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..parallel import map_chunks
from .cvx import solve_group_lasso, solve_rows_cvxpy, solve_rows_equality
from .gram import GramStats
from .group import certify_group_point, group_objective, solve_group_lasso_native
from .rows import (
    ReducedProblem,
    RowFitError,
    RowSolution,
    RowSpec,
    check_row_selection,
    relative_gap,
    solve_rows,
)


@dataclass
class GroupPenalty:
    """weight·Σ_{j ∈ columns} ‖W[:, j]‖_2 over all rows (deletes whole states); the balls of the
    spec apply to every row except `unballed_rows`; columns below `threshold` are dead."""

    weight: float
    columns: np.ndarray
    unballed_rows: np.ndarray = ()
    threshold: float = 1e-6


@dataclass
class RowProblem:
    """The row problems of one convex step (see the module docstring)."""

    stats: GramStats
    spec: RowSpec
    raw: tuple | None = None  # (R (m, d), T (m, k)): samples, for the exact-equality formulation
    group: GroupPenalty | None = None
    extra: Callable | None = None  # extra(w, row) → (cvxpy penalty, constraints)

    @property
    def kind(self) -> str:
        if self.raw is not None:
            return "equality"
        if self.group is not None:
            return "group"
        return "extra" if self.extra is not None else "rows"


# ---- the registered solvers ------------------------------------------------------------------------
def _native(method: str):
    def solve(problem: RowProblem, *, tol, rows, warm_start) -> RowSolution:
        return solve_rows(problem.stats, problem.spec, tol=tol, rows=rows, warm_start=warm_start,
                          method=method)

    return solve


def _cvxpy(name: str):
    def solve(problem: RowProblem, *, tol, rows, warm_start) -> RowSolution:
        return solve_rows_cvxpy(problem.stats, problem.spec, solver=name, tol=tol, rows=rows,
                                extra=problem.extra, warm_start=warm_start)

    return solve


def _equality(problem: RowProblem, *, tol, rows, warm_start) -> RowSolution:
    R, T = problem.raw
    sol = solve_rows_equality(R, np.asarray(T)[:, rows], problem.spec.for_rows(rows))
    sol.rows = rows
    return sol


def _group_lasso(problem: RowProblem, *, tol, rows, warm_start) -> RowSolution:
    """Clarabel on the coupled problem; its point is judged by our gap, not by its status."""
    g = problem.group
    sol, _ = solve_group_lasso(problem.stats, problem.spec, g.weight, g.columns,
                               unballed_rows=g.unballed_rows, threshold=g.threshold)
    sol.W, sol.objective, total, gap = certify_group_point(
        problem.stats, problem.spec, g.weight, g.columns, sol.W, unballed_rows=g.unballed_rows,
        threshold=g.threshold)
    sol.gap[:] = gap
    sol.status = ["optimal" if relative_gap(gap, total) <= tol else "inaccurate"] * len(sol.rows)
    return sol


def _group_native(problem: RowProblem, *, tol, rows, warm_start) -> RowSolution:
    g = problem.group
    return solve_group_lasso_native(problem.stats, problem.spec, g.weight, g.columns,
                                    unballed_rows=g.unballed_rows, tol=tol,
                                    warm_start=warm_start, threshold=g.threshold)[0]


@dataclass(frozen=True)
class SolverEntry:
    """A registered row solver: the function, the problem kinds it handles, and whether its
    rows are independent (then they may be split across workers)."""

    solve: Callable
    kinds: frozenset
    separable: bool = True


SOLVERS = {
    "native": SolverEntry(_native("auto"), frozenset({"rows"})),  # all rows at once, then per row
    "active_set": SolverEntry(_native("active_set"), frozenset({"rows"})),  # per row only
    "scs": SolverEntry(_cvxpy("SCS"), frozenset({"rows", "extra"})),
    "clarabel": SolverEntry(_cvxpy("CLARABEL"), frozenset({"rows", "extra"})),
    "equality": SolverEntry(_equality, frozenset({"equality"})),
    "group_native": SolverEntry(_group_native, frozenset({"group"}), separable=False),
    "group_lasso": SolverEntry(_group_lasso, frozenset({"group"}), separable=False),
}


@dataclass
class _ChunkSolve:
    """Picklable call of one registered solver on one chunk of rows (inside a worker)."""

    name: str
    problem: RowProblem
    tol: float

    def __call__(self, task):
        rows, warm = task
        return SOLVERS[self.name].solve(self.problem, tol=self.tol, rows=rows, warm_start=warm)


def solve(problem: RowProblem, name: str, *, tol: float = 1e-9, rows=None, warm_start=None,
          n_jobs: int = 1, backend: str = "serial", address: str | None = None) -> RowSolution:
    """Rows of `problem` by the registered solver `name`; separable solvers split the rows across
    `n_jobs` workers of `backend` (serial, loky, dask at `address`) — the same answer."""
    if name not in SOLVERS:
        raise ValueError(f"unknown row solver {name!r}; choose one of {sorted(SOLVERS)}")
    entry = SOLVERS[name]
    if problem.kind not in entry.kinds:
        raise ValueError(f"row solver {name!r} does not handle {problem.kind!r} problems; "
                         f"solvers that do: {sorted(n for n, e in SOLVERS.items() if problem.kind in e.kinds)}")
    rows = check_row_selection(rows, problem.stats.k)
    start = time.perf_counter()
    if not entry.separable or (n_jobs == 1 and backend == "serial") or len(rows) < 2:
        return entry.solve(problem, tol=tol, rows=rows, warm_start=warm_start)
    parts = [p for p in np.array_split(np.arange(len(rows)), min(n_jobs, len(rows))) if p.size]
    tasks = [(rows[p], None if warm_start is None else warm_start[p]) for p in parts]
    sols = map_chunks(_ChunkSolve(name, problem, tol), tasks, backend=backend, n_jobs=n_jobs,
                      address=address)
    return merge_solutions(sols, time.perf_counter() - start)


def merge_solutions(sols: list[RowSolution], seconds: float) -> RowSolution:
    """Concatenate solutions of disjoint row sets (in the given order) into one RowSolution."""
    esc = [s.escalated for s in sols]
    return RowSolution(
        np.vstack([s.W for s in sols]), np.concatenate([s.objective for s in sols]),
        np.concatenate([s.gap for s in sols]), [st for s in sols for st in s.status],
        np.concatenate([s.iterations for s in sols]), seconds, np.concatenate([s.rows for s in sols]),
        None if any(e is None for e in esc) else np.concatenate(esc), sols[0].solver,
        np.concatenate([s.uncertified for s in sols]))


# ---- certify, escalate, or refuse -------------------------------------------------------------------
def uncertified_rows(problem: RowProblem, sol: RowSolution, tol: float) -> np.ndarray:
    """Positions of the rows of `sol` that are not certified to `tol`.

    A row fails when any of its weights is not finite; for squared-loss rows when its relative gap
    exceeds tol or its objective exceeds that of w = 0 (a relative gap means nothing at a blown-up
    objective); for the group lasso (coupled rows) every row fails when the problem's gap exceeds
    tol relative to its total objective; for formulations without our certificate when the
    solver's status is not optimal.
    """
    bad = ~np.all(np.isfinite(sol.W), axis=1)
    if problem.kind == "group":
        g = problem.group
        total = group_objective(problem.stats, problem.spec, g.weight, g.columns, np.nan_to_num(sol.W))
        with np.errstate(invalid="ignore"):
            bad |= ~(relative_gap(sol.gap, total) <= tol) | bad.any()
    elif problem.kind == "rows":
        zero = ReducedProblem(problem.stats, problem.spec).full.c[sol.rows]
        with np.errstate(invalid="ignore"):
            bad |= ~(relative_gap(sol.gap, sol.objective) <= tol)
            bad |= ~(sol.objective <= zero * (1 + 1e-9) + 1e-12)
    else:
        bad |= np.array([not str(st).startswith("optimal") for st in sol.status])
    return np.flatnonzero(bad)


def _replace(sol: RowSolution, pos: np.ndarray, fix: RowSolution, keep: np.ndarray) -> None:
    """Rows `pos[keep]` of `sol` take the values of rows `keep` of `fix`."""
    idx = pos[keep]
    sol.W[idx], sol.objective[idx], sol.gap[idx] = fix.W[keep], fix.objective[keep], fix.gap[keep]
    for i, j in zip(idx, keep, strict=True):
        sol.status[i] = f"{fix.status[j]} ({fix.solver})"


def solve_certified(problem: RowProblem, *, tol: float = 1e-9, chain=("native", "clarabel"),
                    step: str = "rows", accept_uncertified: bool = False, rows=None,
                    warm_start=None, n_jobs: int = 1, backend: str = "serial",
                    address: str | None = None) -> RowSolution:
    """Solve with the first solver of `chain`, then `escalate` through the others.

    Every row ends certified to its relative duality gap, or a RowFitError names the step, the
    rows, the solvers and the gaps (unless accept_uncertified, which marks them "uncertified"
    and lists them in ``uncertified``).

    Parameters
    ----------
    problem : RowProblem
        The rows: Gram statistics, formulation, and optional raw samples, group penalty or
        extra cvxpy terms.
    tol : float, default=1e-9
        The relative duality-gap tolerance.
    chain : sequence of str, default=("native", "clarabel")
        Registered solvers (`SOLVERS`), tried in order on the rows still uncertified.
    step : str, default="rows"
        The step's name, for messages.
    accept_uncertified : bool, default=False
        Return rows no solver certified instead of raising.
    rows : array_like of int, optional
        The rows to solve (default all).
    warm_start : ndarray, optional
        Starting rows.
    n_jobs : int, default=1
        Worker processes the rows are split over.
    backend : {"serial", "loky", "dask"}, default="serial"
        How the workers run.
    address : str, optional
        A dask scheduler's address.

    Returns
    -------
    RowSolution
        The solved rows; ``solver`` names the chain used.

    Raises
    ------
    RowFitError
        If some row is not certified after the whole chain (and not accept_uncertified).

    Examples
    --------
    The rows of a lasso with each row kept in the ℓ1 ball of radius 1:

    >>> import numpy as np
    >>> from implicit_cvx.convex.gram import gram_stats
    >>> from implicit_cvx.convex.rows import RowSpec
    >>> from implicit_cvx.convex.solvers import RowProblem, solve_certified
    >>> rng = np.random.default_rng(0)
    >>> R = rng.normal(size=(50, 3))
    >>> T = R @ np.array([[1.0, 0.0], [0.0, -2.0], [0.5, 0.0]])
    >>> spec = RowSpec(penalty=0.01, balls=[(np.arange(3), 1.0)])
    >>> sol = solve_certified(RowProblem(gram_stats(R, T), spec))
    >>> sol.W.round(3) + 0.0, sol.status
    (array([[ 0.811,  0.   ,  0.189],
           [ 0.   , -1.   ,  0.   ]]), ['optimal', 'optimal'])
    """
    par = dict(n_jobs=n_jobs, backend=backend, address=address)
    sol = solve(problem, chain[0], tol=tol, rows=rows, warm_start=warm_start, **par)
    return escalate(problem, sol, tol=tol, chain=chain, step=step,
                    accept_uncertified=accept_uncertified, **par)


def escalate(problem: RowProblem, sol: RowSolution, *, tol: float, chain, step: str,
             accept_uncertified: bool = False, **parallel) -> RowSolution:
    """Re-solve each row of `sol` (found by chain[0]) that is not certified with the next solvers
    of `chain` (a row keeps the smaller gap); raise RowFitError for rows still uncertified —
    unless accept_uncertified, then their status is "uncertified" and `sol.uncertified` lists them.
    A solver of coupled rows (not separable) takes over only when every row is uncertified."""
    sol.escalated = np.zeros(len(sol.rows), dtype=bool)
    for name in chain[1:]:
        bad = uncertified_rows(problem, sol, tol)
        if bad.size == 0 or not (SOLVERS[name].separable or bad.size == len(sol.rows)):
            break
        fix = solve(problem, name, tol=tol, rows=sol.rows[bad], warm_start=np.nan_to_num(sol.W[bad]),
                    **parallel)
        better = np.flatnonzero(~(fix.gap >= sol.gap[bad]) & np.all(np.isfinite(fix.W), axis=1))
        _replace(sol, bad, fix, better)
        sol.escalated[bad] = True
    bad = uncertified_rows(problem, sol, tol)
    sol.solver = "+".join(chain) if sol.escalated.any() else chain[0]
    sol.uncertified = sol.rows[bad]
    if bad.size and not accept_uncertified:
        gaps = relative_gap(sol.gap[bad], sol.objective[bad])
        raise RowFitError(
            f"{step}: rows {sol.rows[bad][:10].tolist()} are not certified to relative duality gap "
            f"{tol:g} after {' → '.join(chain)} (relative gaps {np.round(gaps[:10], 12).tolist()}; "
            "NaN or a blown-up objective also fail); loosen the tolerance, add a ridge or anchor "
            "to condition the problem, or pass accept_uncertified=True to continue and have the "
            "report list such steps")
    for i in bad:
        sol.status[i] = "uncertified"
    return sol


def uncertified_record(step: str, sol: RowSolution) -> list[dict]:
    """History entries for the rows a fit accepted uncertified (empty when all are certified)."""
    rows = sol.uncertified
    if len(rows) == 0:
        return []
    pos = np.flatnonzero(np.isin(sol.rows, rows))
    return [{"step": step, "rows": sol.rows[pos].tolist(), "solver": sol.solver,
             "max_gap": float(np.nanmax(np.where(np.isfinite(sol.gap[pos]), sol.gap[pos], np.inf)))}]
