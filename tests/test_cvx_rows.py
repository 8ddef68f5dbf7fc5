"""cvxpy formulations: DCP/DPP, the same certificate as the native path, SCS → Clarabel escalation."""

import cvxpy as cp
import numpy as np
import pytest
from test_rows import FORMULATIONS, D, N, check_against_reference, make_data

from implicit_cvx.convex.cvx import (
    build_row_problem,
    psd_factor,
    solve_row_raw,
    solve_rows_cvxpy,
    solve_rows_equality,
)
from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import RowFitError, RowSpec, solve_rows
from implicit_cvx.convex.solvers import RowProblem, solve_certified


def test_psd_factor_reproduces_singular_gram():
    R, _ = make_data(m=5)  # m < d: singular G
    G = R.T @ R / 5
    L = psd_factor(G)
    assert L.shape[1] <= 5
    np.testing.assert_allclose(L @ L.T, G, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FORMULATIONS))
def test_problem_is_dcp_and_dpp_and_matches_native(name):
    R, T = make_data()
    stats, spec = gram_stats(R, T), RowSpec(**FORMULATIONS[name])
    rp = build_row_problem(stats, spec)
    assert rp.problem.is_dcp() and rp.problem.is_dpp()
    sol = solve_rows_cvxpy(stats, spec, solver="CLARABEL", tol=1e-9)
    check_against_reference(R, T, spec, sol, 1e-9)
    np.testing.assert_allclose(sol.objective, solve_rows(stats, spec).objective, rtol=1e-9)


def test_scs_escalates_to_clarabel_and_counts_it():
    R, T = make_data()
    stats, spec = gram_stats(R, T), RowSpec(**FORMULATIONS["robust_B_ball"])
    problem = RowProblem(stats, spec)
    scs = solve_rows_cvxpy(stats, spec, solver="SCS", solver_opts={"eps_abs": 1e-3, "eps_rel": 1e-3})
    assert all(st == "inaccurate" for st in scs.status)  # SCS alone does not reach 1e-9
    for idx, r in spec.balls:  # SCS iterates were projected onto the balls
        assert np.all(np.abs(scs.W[:, idx]).sum(1) <= r * (1 + 1e-12))
    ref = solve_rows(stats, spec, tol=1e-12)
    assert np.all(scs.objective - ref.objective <= scs.gap + 1e-12)  # the gap bounds the loss
    assert np.all(scs.objective - ref.objective > 1e-9 * np.abs(ref.objective))
    first = solve_rows_cvxpy(stats, spec, solver="SCS")  # the chain's first attempt
    left = np.array([st != "optimal" for st in first.status])
    assert left.any()
    sol = solve_certified(problem, chain=("scs", "clarabel"), tol=1e-9)
    np.testing.assert_array_equal(sol.escalated, left)
    assert sol.to_dict()["rows_escalated"] == left.sum()
    assert sol.solver == "scs+clarabel" and sol.to_dict()["optimal"] == 4
    check_against_reference(R, T, spec, sol, 1e-9)
    loose = solve_certified(problem, chain=("scs", "clarabel"), tol=1e-1)
    assert loose.escalated.sum() == 0 and loose.solver == "scs"


def test_row_still_above_tolerance_raises_naming_the_row():
    R, T = make_data()
    stats, spec = gram_stats(R, T), RowSpec(**FORMULATIONS["l1_A_ball"])
    problem = RowProblem(stats, spec)
    with pytest.raises(RowFitError, match=r"rows \[1\] are not certified.*after scs"):
        solve_certified(problem, chain=("scs",), rows=[1], tol=1e-12)
    kept = solve_certified(problem, chain=("scs",), rows=[1], tol=1e-12, accept_uncertified=True)
    assert kept.status == ["uncertified"] and kept.uncertified.tolist() == [1]


def test_user_extension_is_dcp_checked_and_reported_without_gap():
    R, T = make_data()
    stats, spec = gram_stats(R, T), RowSpec(**FORMULATIONS["l1_A_ball"])

    def extra(w, i):
        return 0.1 * cp.norm(w[:N], 2), [w[0] >= 0.05 * (i + 1)]

    sol = solve_rows_cvxpy(stats, spec, solver="CLARABEL", extra=extra)
    assert np.all(np.isnan(sol.gap)) and sol.status == ["optimal"] * 4
    assert np.all(sol.W[:, 0] >= 0.05 * np.arange(1, 5) - 1e-7)

    with pytest.raises(ValueError, match="not DCP"):
        solve_rows_cvxpy(stats, spec, extra=lambda w, i: (-cp.norm(w, 2), []))


def test_equality_rows_fit_exactly():
    rng = np.random.default_rng(4)
    R = rng.normal(size=(8, D))
    W_true = rng.normal(size=(3, D)) * (rng.random((3, D)) < 0.5) * 0.2
    T = R @ W_true.T
    spec = RowSpec(penalty=1.0, balls=[(np.arange(N), 5.0)])
    sol = solve_rows_equality(R, T, spec)
    assert sol.status == ["optimal"] * 3
    np.testing.assert_allclose(R @ sol.W.T, T, atol=1e-7)
    assert np.all(np.abs(sol.W).sum(1) <= np.abs(W_true).sum(1) + 1e-7)  # ℓ1-minimal interpolant


def test_raw_row_problem_matches_gram_form():
    R, T = make_data()
    spec = RowSpec(**FORMULATIONS["anchor"])
    w, obj = solve_row_raw(R, T[:, 2], spec, row=2, k=4)
    np.testing.assert_allclose(obj, solve_rows(gram_stats(R, T), spec).objective[2], rtol=1e-7)


def test_group_lasso_kills_whole_state_columns():
    from implicit_cvx.convex.cvx import solve_group_lasso

    R, T = make_data(k=5)
    stats, spec = gram_stats(R, T), RowSpec(penalty=1e-3, free=[D - 1], balls=[(np.arange(N), 0.5)])
    cols = np.arange(N)
    sol0, dead0 = solve_group_lasso(stats, spec, 0.0, cols, unballed_rows=[4])
    np.testing.assert_allclose(sol0.objective[:4], solve_rows(stats, spec, rows=np.arange(4)).objective, rtol=1e-6)
    sol, dead = solve_group_lasso(stats, spec, 5.0, cols, unballed_rows=[4])
    assert dead.size > dead0.size and np.all(np.abs(sol.W[:, dead]) <= 1e-6)
    assert np.all(np.abs(sol.W[:4, :N]).sum(1) <= 0.5 * (1 + 1e-7))
    # independent check: same problem on raw data, built here
    W = cp.Variable((5, D))
    lam = np.full(D, 1e-3)
    lam[-1] = 0
    obj = (cp.sum_squares(T.T - W @ R.T) / R.shape[0] + cp.sum(cp.abs(W) @ lam)
           + 5.0 * cp.sum(cp.norm(W[:, cols], 2, axis=0)))
    ref = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(W[:4, :N]), axis=1) <= 0.5])
    ref.solve(solver="CLARABEL")
    mine = sol.objective.sum() + 5.0 * np.linalg.norm(sol.W[:, cols], axis=0).sum()
    np.testing.assert_allclose(mine, ref.value, rtol=1e-6)
