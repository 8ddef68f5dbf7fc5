"""All-rows-at-once solver (convex/batched.py) vs the per-row active set vs independent cvxpy +
Clarabel solves: random problems with rank-deficient G, zero columns, λ → 0, balls, free
coordinates; the exact weighted ℓ1-ball projection; ADMM on its own."""

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.convex import batched
from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import ReducedProblem, RowSpec, row_gap, solve_rows
from implicit_cvx.wellposed import project_l1_ball_rows

TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def clarabel_rows(R, T, spec):
    """Per-row optimum of (1/m)‖t − Rw‖² + Σλ|w| s.t. balls, by cvxpy + Clarabel on the raw data."""
    m, d = R.shape
    res = spec.resolve(d, T.shape[1])
    out = []
    for i in range(T.shape[1]):
        w = cp.Variable(d)
        obj = cp.sum_squares(T[:, i] - R @ w) / m + res.lam @ cp.abs(w)
        prob = cp.Problem(cp.Minimize(obj), [cp.norm1(w[idx]) <= r for idx, r in res.balls])
        prob.solve(solver="CLARABEL", **TIGHT)
        out.append(prob.value)
    return np.array(out)


def random_problem(seed, m, n, p, k, dead, collinear, lam, ball, free):
    """States X (m, n) of a ReLU layer with `dead` zero columns and `collinear` exact copies,
    inputs U, targets T = a sparse linear fit + noise; spec with λ, an ℓ1 ball on the states
    (radius `ball`, or none) and the bias column free (or no bias column)."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(m, p))
    X = np.maximum(U @ rng.normal(size=(p, n)) + 0.3 * rng.normal(size=n), 0)
    X[:, :dead] = 0.0
    for j in range(collinear):
        X[:, dead + j] = 2.0 * X[:, -1 - j]
    R = np.hstack([X, U] + ([np.ones((m, 1))] if free else []))
    W = rng.normal(size=(R.shape[1], k)) * (rng.random((R.shape[1], k)) < 0.4)
    T = R @ W + 0.05 * rng.normal(size=(m, k))
    balls = [(np.arange(n), ball)] if ball else []
    return R, T, RowSpec(penalty=lam, free=[R.shape[1] - 1] if free else [], balls=balls)


problems = st.fixed_dictionaries({
    "seed": st.integers(0, 10_000),
    "m": st.sampled_from([12, 40]),  # m = 12 < d: G singular
    "n": st.integers(3, 8),
    "p": st.integers(2, 6),
    "k": st.integers(1, 4),
    "dead": st.integers(0, 2),
    "collinear": st.integers(0, 1),
    "lam": st.sampled_from([1e-9, 1e-6, 1e-3, 0.05]),
    "ball": st.sampled_from([None, 0.3, 2.0]),
    "free": st.booleans(),
})


@settings(deadline=None, derandomize=True, max_examples=40)
@given(case=problems)
def test_batched_and_per_row_certify_to_the_same_objective(case):
    R, T, spec = random_problem(**case)
    stats = gram_stats(R, T)
    fast = solve_rows(stats, spec, method="batched")
    slow = solve_rows(stats, spec, method="active_set")
    scale = np.maximum(1.0, np.abs(fast.objective))
    assert fast.status == ["optimal"] * T.shape[1], (fast.gap / scale).max()
    assert slow.status == ["optimal"] * T.shape[1], (slow.gap / scale).max()
    # both are within their certified gaps of the same optimum
    assert np.all(np.abs(fast.objective - slow.objective) <= fast.gap + slow.gap + 1e-12 * scale)
    for idx, r in spec.resolve(R.shape[1], T.shape[1]).balls:
        assert np.all(np.abs(fast.W[:, idx]).sum(1) <= r * (1 + 1e-12))
    obj, gap = row_gap(stats, spec, fast.W)  # the public certificate agrees with the solver's
    np.testing.assert_allclose(obj, fast.objective, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gap, fast.gap, rtol=1e-6, atol=1e-12 * scale.max())


@settings(deadline=None, derandomize=True, max_examples=8)
@given(case=problems)
def test_gap_bounds_the_true_suboptimality_against_clarabel(case):
    R, T, spec = random_problem(**case)
    sol = solve_rows(gram_stats(R, T), spec, method="batched")
    ref = clarabel_rows(R, T, spec)
    scale = np.maximum(1.0, np.abs(ref))
    assert np.all(sol.objective - sol.gap <= ref + 1e-9 * scale)  # the dual bound is valid
    assert np.all(sol.gap <= 1e-9 * scale)
    np.testing.assert_allclose(sol.objective, ref, rtol=1e-6, atol=1e-9)


def test_zero_columns_are_dropped_and_get_zero_weight():
    R, T, spec = random_problem(seed=5, m=40, n=6, p=4, k=3, dead=2, collinear=1, lam=1e-9,
                                ball=0.5, free=True)
    prob = ReducedProblem(gram_stats(R, T), spec)
    sc = batched.scaled(prob)
    dropped = np.setdiff1d(np.arange(len(prob.lam)), sc.keep)
    np.testing.assert_array_equal(dropped, [0, 1])  # the dead states (free bias eliminated)
    np.testing.assert_allclose(np.diag(sc.G), 1.0)
    sol = solve_rows(gram_stats(R, T), spec, method="batched")
    assert sol.status == ["optimal"] * 3
    assert np.all(sol.W[:, :2] == 0.0)


def test_warm_start_at_the_solution_needs_no_admm_and_few_pivots():
    R, T, spec = random_problem(seed=7, m=40, n=6, p=4, k=4, dead=1, collinear=0, lam=1e-3,
                                ball=0.5, free=True)
    stats = gram_stats(R, T)
    cold = solve_rows(stats, spec, method="batched")
    warm = solve_rows(stats, spec, method="batched", warm_start=cold.W)
    np.testing.assert_allclose(warm.objective, cold.objective, rtol=1e-12, atol=1e-14)
    assert warm.iterations.max() <= 3 < cold.iterations.min()  # 2 idle face steps (+1)


def test_unknown_method_is_refused():
    R, T, spec = random_problem(seed=1, m=20, n=3, p=2, k=1, dead=0, collinear=0, lam=0.1,
                                ball=None, free=False)
    with pytest.raises(ValueError, match="method must be one of"):
        solve_rows(gram_stats(R, T), spec, method="simplex")


def weighted_projection_reference(v, a, r):
    x = cp.Variable(v.size)
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)), [a @ cp.abs(x) <= r]).solve(
        solver="CLARABEL", **TIGHT)
    return x.value


@settings(deadline=None, derandomize=True, max_examples=30)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), radius=st.floats(1e-3, 5.0),
       spread=st.floats(0.0, 3.0))
def test_weighted_l1_projection_is_exact(seed, n, radius, spread):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(4, n)) * rng.choice([0.1, 1.0, 10.0], size=(4, 1))
    a = np.exp(spread * rng.normal(size=n))
    X, theta = batched.project_weighted_l1_rows(V, a, radius)
    norms = np.abs(X) @ a
    assert np.all(norms <= radius * (1 + 1e-12))
    inside = np.abs(V) @ a <= radius
    np.testing.assert_array_equal(X[inside], V[inside])
    np.testing.assert_allclose(norms[~inside], radius, rtol=1e-10)
    np.testing.assert_allclose(X, np.sign(V) * np.maximum(np.abs(V) - theta[:, None] * a, 0),
                               rtol=1e-10, atol=1e-15)
    for i in np.flatnonzero(~inside):
        np.testing.assert_allclose(X[i], weighted_projection_reference(V[i], a, radius),
                                   atol=1e-6 * max(1.0, np.abs(V[i]).max()))


@settings(deadline=None, derandomize=True, max_examples=20)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20), radius=st.floats(1e-3, 5.0))
def test_unit_weights_give_the_l1_ball_projection(seed, n, radius):
    V = np.random.default_rng(seed).normal(size=(6, n)) * 3
    X, _ = batched.project_weighted_l1_rows(V, np.ones(n), radius)
    np.testing.assert_allclose(X, project_l1_ball_rows(V, radius), atol=1e-12)


def test_admm_alone_reaches_the_optimum_of_a_well_conditioned_problem(monkeypatch):
    """ADMM (one Cholesky, residual-balanced ρ, exact prox) converges on its own; the active
    set is not needed to get close."""
    R, T, spec = random_problem(seed=3, m=200, n=6, p=5, k=3, dead=0, collinear=0, lam=1e-2,
                                ball=0.4, free=False)
    prob = ReducedProblem(gram_stats(R, T), spec)
    sc = batched.scaled(prob)
    rows = np.arange(3)
    Hh = (prob.H[np.ix_(sc.keep, rows)] * sc.s[:, None]).T
    monkeypatch.setattr(batched, "SETTLE", -1.0)  # run the whole budget
    monkeypatch.setattr(batched, "DENSE", 2.0)
    V, its, useful = batched.admm(sc, Hh, np.zeros((3, len(sc.keep))), 2000)
    assert useful and its == 2000
    obj = prob.certify(prob.clip_balls(sc.unscale(V, len(prob.lam))), rows)[0]
    np.testing.assert_allclose(obj, clarabel_rows(R, T, spec), rtol=1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_sim_at_a_tiny_penalty_certifies_every_row_without_clarabel():
    """λ → 0 on teacher states (dead and collinear states, constant pixels): every (A, B) and
    (C, D) row certified by the native engine, none escalated to Clarabel."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from implicit_cvx.train.sim import fit_sim

    data = load_digits()
    U, y = data.data[:400] / 16.0, data.target[:400]
    teacher = MLPClassifier(hidden_layer_sizes=(24, 12), random_state=0, max_iter=200).fit(U, y)
    result = fit_sim(U, y, teacher=teacher, task="classification", lam=1e-9, tol=1e-9)
    assert result.summary["rows_escalated"] == 0
    stages = result.history[0]["stages"]
    for stage in stages:
        assert stage["inaccurate"] == 0 and stage["solver"] == "native", stage["phase"]
    assert result.summary["max_duality_gap"] <= 1e-9 * max(1.0, max(
        max(np.abs(stage["row_objectives"])) for stage in stages))
