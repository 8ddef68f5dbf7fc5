"""One battery run over every registered row solver (convex/solvers.SOLVERS), the way a solver
library tests all its solvers: on the same problems, each solver's answer
- lies in its balls (feasibility),
- carries a gap that bounds its true suboptimality against an independent cvxpy + Clarabel solve
  of the raw m-sample problem, and
- once certified by `solve_certified` with that solver first, matches the reference."""

import numpy as np
import pytest
from test_rows import FORMULATIONS, make_data, reference

from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import RowSpec
from implicit_cvx.convex.solvers import SOLVERS, RowProblem, solve, solve_certified

ROW_SOLVERS = sorted(name for name, entry in SOLVERS.items() if "rows" in entry.kinds)
CASES = [(name, formulation) for name in ROW_SOLVERS for formulation in sorted(FORMULATIONS)]


@pytest.fixture(scope="module")
def references():
    """The independent optimum of every formulation (raw data, Clarabel), computed once."""
    R, T = make_data(seed=3)
    out = {}
    for key, kw in FORMULATIONS.items():
        spec = RowSpec(**kw)
        res = spec.resolve(R.shape[1], T.shape[1])
        out[key] = reference(R, T, res.lam, res.balls, res.ridge, res.mu, res.anchor)
    return R, T, out


def test_every_row_solver_is_in_the_battery():
    assert {"native", "scs", "clarabel"} <= set(ROW_SOLVERS)


@pytest.mark.parametrize("name, formulation", CASES)
def test_solver_answers_are_feasible_and_their_gap_bounds_the_loss(name, formulation, references):
    R, T, ref = references
    spec = RowSpec(**FORMULATIONS[formulation])
    problem = RowProblem(gram_stats(R, T), spec)
    sol = solve(problem, name, tol=1e-9)
    for idx, r in spec.balls:
        assert np.all(np.abs(sol.W[:, idx]).sum(axis=1) <= r * (1 + 1e-12)), name
    loss = sol.objective - ref[formulation]
    assert np.all(loss >= -1e-7 * np.maximum(1.0, np.abs(ref[formulation])))  # no better than optimal
    assert np.all(loss <= sol.gap + 1e-7 * np.maximum(1.0, np.abs(ref[formulation])))  # gap ≥ loss


@pytest.mark.parametrize("name, formulation", CASES)
def test_certified_answers_match_the_reference(name, formulation, references):
    R, T, ref = references
    problem = RowProblem(gram_stats(R, T), RowSpec(**FORMULATIONS[formulation]))
    chain = (name, "clarabel") if name != "clarabel" else (name,)
    sol = solve_certified(problem, tol=1e-8, chain=chain)
    np.testing.assert_allclose(sol.objective, ref[formulation], rtol=1e-6, atol=1e-9)
