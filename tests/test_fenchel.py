"""Method `fenchel`: divergence, block steps against cvxpy, monotone BCD, final model."""

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.train.fenchel import (
    _fenchel_weight_objective,
    _x_objective,
    fenchel_divergence,
    fit_fenchel,
    state_step,
    state_weights_step,
)
from implicit_cvx.train.init import random_model
from implicit_cvx.wellposed import BALL_RTOL, inf_norm

finite = st.floats(-5, 5, allow_nan=False)


@settings(deadline=None, derandomize=True, max_examples=60)
@given(x=st.floats(0, 5), z=finite, zk=finite)
def test_divergence_definition_and_mm_majorizer(x, z, zk):
    F = fenchel_divergence(np.array(x), np.array(z))
    assert F == pytest.approx(0.5 * x * x + 0.5 * max(z, 0) ** 2 - x * z, abs=1e-9)
    assert F >= 0 and fenchel_divergence(np.array(max(z, 0.0)), np.array(z)) == 0
    # the MM surrogate ½(z − t)² + const, t = x + min(z_k, 0), is above F and touches it at z_k
    t = x + min(zk, 0.0)
    Fk = fenchel_divergence(np.array(x), np.array(zk))
    assert F <= Fk + 0.5 * (z - t) ** 2 - 0.5 * (zk - t) ** 2 + 1e-9


def test_divergence_zero_iff_relu():
    z = np.linspace(-2, 2, 9)
    assert np.all(fenchel_divergence(np.maximum(z, 0), z) == 0)
    assert np.all(fenchel_divergence(np.maximum(z, 0) + 0.1, z) > 0)


def _problem(m=12, n=5, p=3, seed=0):
    rng = np.random.default_rng(seed)
    model = random_model(n, p, 2, kappa=0.9, seed=seed, a_fraction=1.0)
    U = rng.standard_normal((m, p))
    X = np.maximum(rng.standard_normal((m, n)), 0)
    return model, U, X, rng.standard_normal((m, 2))


def test_state_step_matches_cvxpy():
    """The X step (squared loss) against Clarabel on the same convex problem."""
    model, U, Xk, Y = _problem()
    lam, rho = 2.0, 0.5
    X, bound = state_step(model, U, Y, Xk, "squared", lam, rho, tol=1e-12, max_iter=5000)
    A, B, C, D = model.A, model.B, model.C, model.D
    s = np.linalg.eigvalsh(A + A.T)[-1]
    rho_eff = lam * (rho + max(0.0, s - 1.0))
    K = U @ B.T + model.b_x
    n = A.shape[0]
    M = 0.5 * ((lam + rho_eff) * np.eye(n) - lam * (A + A.T))  # the quadratic part, PSD
    Lc = np.linalg.cholesky(M + 1e-14 * np.eye(n))
    V = cp.Variable(Xk.shape, nonneg=True)
    obj = (cp.sum_squares(V @ C.T + U @ D.T + model.b_y - Y) + cp.sum_squares(V @ Lc)
           + 0.5 * lam * cp.sum_squares(cp.pos(V @ A.T + K)) - lam * cp.sum(cp.multiply(V, K))
           - rho_eff * cp.sum(cp.multiply(V, Xk)) + 0.5 * rho_eff * np.sum(Xk**2))
    prob = cp.Problem(cp.Minimize(obj))
    assert prob.is_dcp()
    prob.solve(solver=cp.CLARABEL)
    ours = _x_objective(model, U, Y, X, Xk, "squared", lam, rho_eff)
    assert ours == pytest.approx(prob.value, rel=1e-7, abs=1e-7)
    assert np.all(X >= 0) and np.abs(X - V.value).max() < 1e-4
    assert bound is not None and bound * len(U) >= ours - prob.value - 1e-7  # certificate is valid


def test_state_weights_step_converges_to_cvxpy_optimum():
    """MM on the (A, B, b_x) Fenchel problem: monotone, and at the Clarabel optimum in the limit."""
    model, U, X, _ = _problem(m=20, n=4, p=2, seed=1)
    lam, kappa, m, n = 1.5, 0.9, 20, 4
    start = _fenchel_weight_objective(model, U, X, lam, (0.0, 0.0))
    one, _, _ = state_weights_step(model, U, X, lam, kappa, (0.0, 0.0), tol=1e-12, inner=1, mu=1e-10)
    assert _fenchel_weight_objective(one, U, X, lam, (0.0, 0.0)) <= start
    many, gap, _ = state_weights_step(model, U, X, lam, kappa, (0.0, 0.0), tol=1e-13, inner=300, mu=1e-10)
    A, B, b = cp.Variable((n, n)), cp.Variable((n, 2)), cp.Variable(n)
    Z = X @ A.T + U @ B.T + np.ones((m, 1)) @ cp.reshape(b, (1, n), order="C")
    obj = lam / m * (0.5 * cp.sum_squares(cp.pos(Z)) - cp.sum(cp.multiply(X, Z)) + 0.5 * np.sum(X**2))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(A), axis=1) <= kappa])
    prob.solve(solver=cp.CLARABEL)
    got = _fenchel_weight_objective(many, U, X, lam, (0.0, 0.0))
    assert got == pytest.approx(prob.value, abs=1e-5)
    assert inf_norm(many.A) <= kappa * (1 + BALL_RTOL) and gap < 1e-8


def _check_fit(res, kappa, U):
    for rec in res.history:  # relaxed objective after each block step, λ fixed in the iteration
        trace = np.array(rec["relaxed_trace"])
        assert len(trace) == 4 and np.all(np.diff(trace) <= 1e-12 * max(1.0, abs(trace[0])))
        assert rec["relaxed_objective"] == pytest.approx(trace[-1], rel=1e-12)
        for key in ("fenchel_gap", "train_objective", "train_residual", "max_duality_gap", "seconds"):
            assert key in rec
    model = res.model
    assert inf_norm(model.A) <= kappa * (1 + BALL_RTOL)
    _, info = model.equilibrium(U, return_info=True, tol=1e-12)
    assert info.residual <= 1e-8 and res.summary["equilibrium_residual"] <= 1e-8
    assert res.summary["train_objective"] <= min(r["train_objective"] for r in res.history) + 1e-12


def test_fit_fenchel_regression():
    rng = np.random.default_rng(0)
    U = rng.uniform(-2, 2, (60, 1))
    Y = np.cos(2 * U[:, 0]) + 0.1 * rng.standard_normal(60)
    res = fit_fenchel(U, Y, task="regression", n_states=12, kappa=0.5, max_outer=6, seed=0)
    _check_fit(res, 0.5, U)
    assert res.summary["train_rmse"] < np.std(Y)  # better than the constant predictor
    lams = [r["lam"] for r in res.history]
    assert lams == pytest.approx([1.5**k for k in range(6)])


def test_fit_fenchel_classification():
    rng = np.random.default_rng(1)
    U = rng.standard_normal((50, 2))
    y = (U[:, 0] ** 2 + U[:, 1] > 0.5).astype(int)
    res = fit_fenchel(U, y, task="classification", n_states=8, max_outer=4, seed=1)
    _check_fit(res, 0.95, U)
    assert res.summary["train_accuracy"] >= max(np.mean(y), 1 - np.mean(y))


def test_fenchel_refuses_non_relu():
    model = random_model(4, 2, 1, seed=0, activation="tanh")
    with pytest.raises(ValueError, match="ReLU"):
        fit_fenchel(np.zeros((5, 2)), np.zeros(5), task="regression", init=model, n_states=None)
