"""Robust training on both steps: ‖b_i‖_1 ≤ β in the (A, B) step (adjoint option `beta`; SIM's
robust formulation), next to the (C, D) constraints (‖S‖_∞ ≤ s, or ‖c_i‖_1 + ‖d_i‖_1 ≤ γ), whose
product bounds the ℓ∞ Lipschitz constant by γ·max(1, β/(1 − κ))."""

import cvxpy as cp
import numpy as np
import pytest

from implicit_cvx.config import make_options
from implicit_cvx.robust import s_norm_bound
from implicit_cvx.train.adjoint import AdjointOptions, StateStep, fit_adjoint
from implicit_cvx.train.fit import config_schema
from implicit_cvx.train.init import random_model
from implicit_cvx.train.sim import fit_sim


def _data(seed=0, m=60, p=4):
    rng = np.random.default_rng(seed)
    U = rng.uniform(0, 1, (m, p))
    y = (U[:, 0] + U[:, 1] ** 2 > 0.8).astype(int) + (U[:, 2] > 0.6)
    return U, y


def test_state_step_with_the_b_ball_equals_independent_clarabel_solve():
    rng = np.random.default_rng(1)
    n, p, m, kappa, beta = 4, 3, 25, 0.6, 0.3
    model = random_model(n, p, 2, kappa, 1)
    U = rng.standard_normal((m, p))
    X = model.equilibrium(U, tol=1e-13)
    V = 0.3 * rng.standard_normal((m, n)) / m
    step = StateStep.of(model, X, U, V, kappa=kappa, lam_l1=0.0, lam_l2=0.0, anchor_mu=1e-2, beta=beta)
    sol = step.solve(2.0, tol=1e-11, n_jobs=1, backend="serial")
    R = np.column_stack([X, U, np.ones(m)])  # regressors [X, U, 1]; targets Z − ηmV
    Z = R @ step.Wk.T
    W = cp.Variable((n, n + p + 1))
    obj = cp.sum_squares(Z - 2.0 * m * V - R @ W.T) / m + step.mu * cp.sum_squares(W - step.Wk)
    cons = [cp.sum(cp.abs(W[:, :n]), axis=1) <= kappa, cp.sum(cp.abs(W[:, n:n + p]), axis=1) <= beta]
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    assert abs(np.sum(sol.objective) - prob.value) <= 1e-7 * max(1.0, abs(prob.value))
    assert np.abs(sol.W[:, n:n + p]).sum(axis=1).max() >= beta * (1 - 1e-6)  # the ball is active
    assert np.abs(sol.W[:, n:n + p]).sum(axis=1).max() <= beta * (1 + 1e-12)


def test_adjoint_keeps_both_balls_and_the_sensitivity_bound():
    U, y = _data()
    kappa, beta, s = 0.8, 0.5, 3.0
    res = fit_adjoint(U, y, task="classification", n_states=8, kappa=kappa, max_outer=4, seed=0,
                      lam_l2=1e-3, beta=beta, s_bound=s)
    model = res.model
    assert np.abs(model.B).sum(axis=1).max() <= beta * (1 + 1e-12)
    assert res.summary["inf_norm_B"] <= beta * (1 + 1e-12) and res.summary["beta"] == beta
    assert s_norm_bound(model) <= s * (1 + 1e-9)
    assert all(r["status_AB"] == "optimal" and r["accepted"] for r in res.history)


def test_beta_reaches_options_and_configs():
    opts = make_options(AdjointOptions, {"beta": 0.25})
    assert opts.beta == 0.25
    assert "beta" in config_schema("adjoint")["adjoint"]
    with pytest.raises(ValueError, match="beta"):
        make_options(AdjointOptions, {"beta": -1.0})


def test_sim_robust_bounds_the_lipschitz_constant_by_gamma_max_one_beta_over_one_minus_kappa():
    rng = np.random.default_rng(3)
    from implicit_cvx.convert import from_layers

    Ws = [1.5 * rng.standard_normal((6, 4)), 1.5 * rng.standard_normal((2, 6))]
    teacher = from_layers(Ws, [0.5 * rng.standard_normal(6), np.zeros(2)], "relu")
    U = rng.standard_normal((60, 4))
    kappa, beta, gamma = 0.9, 0.8, 1.5
    model = fit_sim(U, teacher.predict(U), teacher=teacher, task="regression", kappa=kappa,
                    formulation="robust", lam=1e-3, beta=beta, gamma=gamma).model
    assert s_norm_bound(model) <= gamma * max(1.0, beta / (1 - kappa)) * (1 + 1e-9)
