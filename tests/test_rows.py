"""Native certified row solver vs an independent cvxpy + Clarabel solve on the raw data."""

from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import RowSpec, row_gap, solve_path, solve_rows

N, P = 6, 4  # states, inputs; regressors R = [X, U, 1]
D = N + P + 1
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def make_data(seed=0, m=60, k=4):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.normal(size=(m, N)), 0)
    U = rng.normal(size=(m, P))
    R = np.hstack([X, U, np.ones((m, 1))])
    T = R @ rng.normal(size=(D, k)) + 0.3 * rng.normal(size=(m, k))
    return R, T


def reference(R, T, lam, balls, alpha=0.0, mu=0.0, W0=None):
    """Per-row optimum by cvxpy + Clarabel on the raw m-sample problem (built here, independently)."""
    m, d = R.shape
    out = []
    for i in range(T.shape[1]):
        w = cp.Variable(d)
        obj = cp.sum_squares(T[:, i] - R @ w) / m + lam @ cp.abs(w) + alpha * cp.sum_squares(w)
        if mu:
            obj += mu * cp.sum_squares(w - W0[i])
        prob = cp.Problem(cp.Minimize(obj), [cp.norm1(w[idx]) <= r for idx, r in balls])
        prob.solve(solver="CLARABEL", **TIGHT)
        out.append(prob.value)
    return np.array(out)


def lam_vector(lam):
    v = np.full(D, lam)
    v[-1] = 0.0
    return v


A_BALL = (np.arange(N), 0.5)
B_BALL = (np.arange(N, N + P), 0.8)
W0 = np.random.default_rng(9).normal(size=(4, D))
FORMULATIONS = {
    "l1_A_ball": dict(penalty=0.02, free=[D - 1], balls=[A_BALL]),
    "elastic_net": dict(penalty=0.02, free=[D - 1], balls=[A_BALL], ridge=0.05),
    "robust_B_ball": dict(penalty=0.01, free=[D - 1], balls=[A_BALL, B_BALL]),
    "anchor": dict(penalty=0.02, free=[D - 1], balls=[A_BALL], anchor=W0, mu=0.1),
    "no_free_lasso": dict(penalty=0.05),
}


def check_against_reference(R, T, spec, sol, tol):
    res = spec.resolve(R.shape[1], T.shape[1])
    ref = reference(R, T, res.lam, res.balls, res.ridge, res.mu, res.anchor)
    scale = np.maximum(1.0, np.abs(sol.objective))
    np.testing.assert_allclose(sol.objective, ref, rtol=1e-6)
    assert np.all(sol.gap >= sol.objective - ref - 1e-9)
    assert np.all(sol.gap <= tol * scale)
    for idx, r in res.balls:
        assert np.all(np.abs(sol.W[:, idx]).sum(1) <= r * (1 + 1e-12))
    direct = ((T - R @ sol.W.T) ** 2).mean(0) + np.abs(sol.W) @ res.lam + res.ridge * (sol.W**2).sum(1)
    if res.mu:
        direct += res.mu * ((sol.W - res.anchor) ** 2).sum(1)
    np.testing.assert_allclose(sol.objective, direct, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(FORMULATIONS))
def test_matches_clarabel_on_raw_data(name):
    R, T = make_data()
    spec = RowSpec(**FORMULATIONS[name])
    sol = solve_rows(gram_stats(R, T), spec, tol=1e-9)
    assert sol.status == ["optimal"] * 4 and sol.max_gap <= 1e-9 * np.abs(sol.objective).max()
    check_against_reference(R, T, spec, sol, 1e-9)


def test_ill_conditioned_states_with_dead_and_collinear_columns():
    R, T = make_data(seed=3, m=40)
    R[:, 2] = 0.0  # a dead unit
    R[:, 3] = 2 * R[:, 1] + 1e-6 * R[:, 0]  # nearly collinear states
    spec = RowSpec(penalty=1e-3, free=[D - 1], balls=[(np.arange(N), 0.9)])
    sol = solve_rows(gram_stats(R, T), spec)
    check_against_reference(R, T, spec, sol, 1e-9)


@settings(deadline=None, derandomize=True, max_examples=12)
@given(seed=st.integers(0, 10_000), lam=st.floats(1e-3, 0.5), kappa=st.floats(0.05, 2.0),
       scale=st.floats(0.0, 1.0))
def test_gap_bounds_suboptimality_of_any_feasible_point(seed, lam, kappa, scale):
    R, T = make_data(seed, m=30, k=2)
    spec = RowSpec(penalty=lam, free=[D - 1], balls=[(np.arange(N), kappa)])
    stats = gram_stats(R, T)
    W = np.random.default_rng(seed).normal(size=(2, D)) * scale
    W[:, :N] *= min(1.0, kappa / max(np.abs(W[:, :N]).sum(1).max(), 1e-300))
    obj, gap = row_gap(stats, spec, W)
    ref = reference(R, T, lam_vector(lam), [(np.arange(N), kappa)])
    assert np.all(gap >= obj - ref - 1e-9 * np.maximum(1, np.abs(ref)))
    sol = solve_rows(stats, spec)
    assert np.all(sol.gap >= sol.objective - ref - 1e-9)
    np.testing.assert_allclose(sol.objective, ref, rtol=1e-6)


def test_infeasible_point_has_infinite_gap_and_zero_gap_at_optimum():
    R, T = make_data()
    spec = RowSpec(**FORMULATIONS["l1_A_ball"])
    stats = gram_stats(R, T)
    W = np.zeros((4, D))
    W[:, 0] = 0.6
    assert np.all(np.isinf(row_gap(stats, spec, W)[1]))
    sol = solve_rows(stats, spec)
    np.testing.assert_allclose(row_gap(stats, spec, sol.W)[1], sol.gap, atol=1e-12)


def test_rows_subset_warm_start_path_and_inaccurate_status():
    R, T = make_data()
    stats = gram_stats(R, T)
    spec = RowSpec(**FORMULATIONS["robust_B_ball"])
    full = solve_rows(stats, spec)
    part = solve_rows(stats, spec, rows=[2, 0])
    np.testing.assert_allclose(part.W, full.W[[2, 0]], atol=1e-10)
    path = solve_path(stats, spec, [0.2, 0.05, 0.01])
    np.testing.assert_allclose(path[-1].objective, full.objective, rtol=1e-10)
    assert path[-1].iterations.sum() <= full.iterations.sum()
    cut = solve_rows(stats, spec, max_iter=0)
    assert "inaccurate" in cut.status and cut.to_dict()["inaccurate"] >= 1
    assert cut.max_gap > 1e-9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(penalty=-1.0), "≥ 0"),
        (dict(penalty=np.ones(3)), "shape"),
        (dict(balls=[(np.arange(3), 0.0)]), "radius must be finite and > 0"),
        (dict(balls=[(np.arange(3), 1.0), (np.arange(2, 5), 1.0)]), "overlaps"),
        (dict(penalty=0.1, free=[D - 1], balls=[([D - 1], 1.0)]), "lie in ball 0"),
        (dict(penalty=np.ones(D), free=[D - 1]), "penalized"),
        (dict(free=[D]), "out of range"),
        (dict(mu=0.1), "anchor"),
        (dict(mu=0.1, anchor=np.zeros((2, D))), "anchor W0 must have shape"),
        (dict(ridge=-1.0), "ridge"),
        (dict(balls=[(np.arange(3),)]), "pair"),
    ],
)
def test_bad_specs_raise_clear_errors(kwargs, match):
    R, T = make_data()
    with pytest.raises(ValueError, match=match):
        solve_rows(gram_stats(R, T), RowSpec(**kwargs))


def test_bad_rows_and_warm_start_raise():
    R, T = make_data()
    stats = gram_stats(R, T)
    with pytest.raises(ValueError, match="rows must lie"):
        solve_rows(stats, RowSpec(penalty=0.1), rows=[7])
    with pytest.raises(ValueError, match="warm_start must have shape"):
        solve_rows(stats, RowSpec(penalty=0.1), warm_start=np.zeros((2, D)))


def test_rows_that_made_the_active_set_cycle_are_certified():
    """Regression: (C, D) rows of digits teacher states at λ = 0.03 (bias free) on which adding
    many coordinates per pivot made the face's KKT system singular and the method cycle."""
    from implicit_cvx.convex.gram import GramStats

    f = np.load(Path(__file__).parent / "data" / "cd_rows_cycling.npz", allow_pickle=False)
    stats = GramStats(f["G"], f["H"], f["c"], int(f["m"]))
    d = stats.d
    sol = solve_rows(stats, RowSpec(penalty=0.03, free=[d - 1]), tol=1e-9)
    assert list(sol.status) == ["optimal", "optimal"]
    for i in range(2):
        w = cp.Variable(d)
        obj = cp.quad_form(w, cp.psd_wrap(stats.G)) - 2 * stats.H[:, i] @ w + stats.c[i]
        prob = cp.Problem(cp.Minimize(obj + 0.03 * cp.norm1(w[: d - 1])))
        prob.solve(solver="CLARABEL")
        assert sol.objective[i] <= prob.value + 1e-7 * abs(prob.value)
        assert sol.objective[i] >= prob.value - 1e-6 * abs(prob.value)
