"""Method `adjoint`: monotone true objective, certified steps, feasible final model,
and the (A, B) step against an independent cvxpy + Clarabel solve of the same row problem."""

import numpy as np
import pytest

from implicit_cvx.equilibrium import equilibrium_residual
from implicit_cvx.train.adjoint import StateStep, fit_adjoint
from implicit_cvx.train.init import random_model
from implicit_cvx.train.objective import loss_value, metrics
from implicit_cvx.train.runlog import RunLog


def _regression(seed=0, m=40):
    rng = np.random.default_rng(seed)
    U = rng.uniform(-2, 2, (m, 2))
    y = np.sin(2 * U[:, 0]) + 0.5 * U[:, 1] ** 2 + 0.05 * rng.standard_normal(m)
    return U, y


def _init(n, p, q, seed, kappa=0.5, include_D=True):
    model = random_model(n, p, q, kappa, seed, include_D=include_D)
    return model.with_weights(b_x=np.random.default_rng(seed).standard_normal(n))


def _check_run(res, U, kappa, monotone=True):
    objs = [r["objective"] for r in res.history]
    assert not monotone or all(b <= a for a, b in zip(objs, objs[1:], strict=False))
    for r in res.history:  # "optimal" = every certified gap within its relative tolerance
        assert r["status_AB"] == "optimal" and r["status_CD"] == "optimal"
        assert r["max_gap_AB"] <= 1e-6 and r["max_gap_CD"] <= 1e-6
    model = res.model
    assert np.abs(model.A).sum(axis=1).max() <= kappa * (1 + 1e-12)
    assert equilibrium_residual(model, U, model.equilibrium(U, tol=1e-12)) <= 1e-8
    assert model.metadata["method"] == "adjoint" and model.metadata["kappa"] == kappa


@pytest.mark.parametrize("penalties", [dict(), dict(lam_l1=1e-3, lam_l2=1e-3)])
def test_regression_objective_never_increases_and_steps_are_certified(penalties):
    U, y = _regression()
    res = fit_adjoint(U, y, task="regression", n_states=8, kappa=0.5, max_outer=6,
                      init=_init(8, 2, 1, 0), **penalties)
    _check_run(res, U, 0.5)
    assert len(res.history) == 6 and all(r["accepted"] for r in res.history)
    assert res.history[-1]["objective"] < 0.5 * res.history[0]["objective"]
    s = res.summary
    assert {"train_loss", "outer_iterations", "max_duality_gap", "train_rmse"} <= set(s)
    assert s["outer_iterations"] == len(res.history)


def _row_problem_reference(step, R, V, eta, lam_l1, lam_l2):
    """The same (A, B, b_x) row problems, stated independently in cvxpy and solved by Clarabel."""
    import cvxpy as cp

    n, m = step.n, step.m
    d = step.Wk.shape[1]
    W = cp.Variable((n, d))
    Zt = R @ step.Wk.T - eta * m * V
    fit = cp.sum_squares(Zt - R @ W.T) / m
    AB = W[:, :-1]
    obj = fit + 2 * eta * (lam_l1 * cp.sum(cp.abs(AB)) + lam_l2 * cp.sum_squares(AB))
    obj = obj + step.mu * cp.sum_squares(W - step.Wk)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(W[:, :n]), axis=1) <= step.kappa])
    assert prob.is_dcp()
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return W.value, prob.value


@pytest.mark.parametrize("lam_l1, lam_l2", [(0.0, 0.0), (0.02, 0.01)])
def test_state_step_equals_independent_clarabel_solve(lam_l1, lam_l2):
    rng = np.random.default_rng(1)
    n, p, m = 4, 3, 25
    model = _init(n, p, 2, 1, kappa=0.6)
    U = rng.standard_normal((m, p))
    X = model.equilibrium(U, tol=1e-13)
    V = 0.3 * rng.standard_normal((m, n)) / m
    step = StateStep.of(model, X, U, V, kappa=0.6, lam_l1=lam_l1, lam_l2=lam_l2, anchor_mu=1e-2)
    sol = step.solve(2.0, tol=1e-11, n_jobs=1, backend="serial")
    R = np.column_stack([X, U, np.ones(m)])
    W_ref, val_ref = _row_problem_reference(step, R, V, 2.0, lam_l1, lam_l2)
    assert np.abs(sol.W - W_ref).max() <= 1e-5
    assert abs(np.sum(sol.objective) - val_ref) <= 1e-7 * max(1.0, abs(val_ref))
    # the new A must press on the ball somewhere for the test to exercise the constraint
    assert np.abs(sol.W[:, :n]).sum(axis=1).max() >= 0.6 * (1 - 1e-6)


def test_tiny_step_returns_current_weights_even_with_l1():
    rng = np.random.default_rng(2)
    n, p, m = 5, 3, 30
    model = _init(n, p, 2, 2)
    U = rng.standard_normal((m, p))
    X = model.equilibrium(U, tol=1e-13)
    V = rng.standard_normal((m, n)) / m
    step = StateStep.of(model, X, U, V, kappa=0.5, lam_l1=0.5, lam_l2=0.5, anchor_mu=1e-3)
    sol = step.solve(1e-12, tol=1e-12, n_jobs=1, backend="serial")
    assert np.abs(sol.W - step.Wk).max() <= 1e-8


def test_digits_subset_classification():
    from sklearn.datasets import load_digits

    d = load_digits()
    U, y = d.data / 16.0, d.target
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:300], idx[300:800]
    res = fit_adjoint(U[tr], y[tr], task="classification", n_states=16, include_D=False,
                      kappa=0.95, max_outer=4, lam_l2=1e-3,
                      init=_init(16, 64, 10, 0, 0.95, include_D=False))
    _check_run(res, U[tr], 0.95)
    acc = metrics("classification", res.model.predict(U[te]), y[te])["accuracy"]
    assert acc >= 0.85
    assert res.model.metadata["classes"] == list(range(10))
    assert np.all(res.model.D == 0)


def test_hinge_loop_is_monotone_and_certified():
    rng = np.random.default_rng(3)
    U = rng.standard_normal((30, 3))
    y = (U[:, 0] * U[:, 1] > 0).astype(int)
    res = fit_adjoint(U, y, task="classification", loss="hinge", n_states=6, kappa=0.8,
                      lam_l2=1e-3, max_outer=3, init=_init(6, 3, 2, 3, 0.8))
    _check_run(res, U, 0.8)
    assert res.history[-1]["objective"] < res.history[0]["objective"]


def test_data_subset_steps_decrease_their_subset_objective_and_are_certified():
    U, y = _regression(seed=6, m=60)
    res = fit_adjoint(U, y, task="regression", n_states=8, kappa=0.5, max_outer=8, batch_size=20,
                      eta=0.5, init=_init(8, 2, 1, 6))
    assert len(res.history) == 8  # a subset step that cannot decrease does not stop the run
    _check_run(res, U, 0.5, monotone=False)  # the full-data objective may rise between subsets
    for r in res.history:
        assert r["batch_size"] == 20 and r["eta"] <= 0.5  # every iteration starts from the given η
        assert r["batch_objective"] < r["batch_objective_before"] or not r["accepted"]
    assert sum(r["accepted"] for r in res.history) >= 6
    start = loss_value("squared", _init(8, 2, 1, 6).predict(U), y[:, None])  # full data, at init
    assert res.history[-1]["objective"] < 0.5 * start
    # batch_size ≥ m is the full-batch reference, draw for draw
    full = fit_adjoint(U, y, task="regression", n_states=8, kappa=0.5, max_outer=3, init=_init(8, 2, 1, 6))
    same = fit_adjoint(U, y, task="regression", n_states=8, kappa=0.5, max_outer=3, batch_size=60,
                       init=_init(8, 2, 1, 6))
    np.testing.assert_array_equal(full.model.A, same.model.A)


def test_full_every_evaluates_less_but_takes_the_same_certified_steps(tmp_path):
    U, y = _regression(seed=7, m=60)
    kw = dict(task="regression", n_states=8, kappa=0.5, max_outer=6, batch_size=20, eta=0.5,
              init=_init(8, 2, 1, 7))
    every = fit_adjoint(U, y, **kw)
    sparse = fit_adjoint(U, y, full_every=3, **kw)
    for r in sparse.history:  # every step certified, the subset's objective never rises
        assert r["status_AB"] == "optimal" and r["status_CD"] == "optimal"
        assert r["batch_objective"] < r["batch_objective_before"] or not r["accepted"]
    full = [r["objective"] is not None for r in sparse.history]
    assert full == [False, False, True, False, False, True]
    for a, b in zip(every.history, sparse.history, strict=True):  # the same subsets, the same steps
        assert np.isclose(a["batch_objective"], b["batch_objective"], rtol=1e-7)
        if b["objective"] is not None:
            assert np.isclose(a["objective"], b["objective"], rtol=1e-7)
        else:  # the subset's own record, at its exact states
            assert b["equilibrium_residual"] <= 1e-10
            assert np.isclose(b["batch_loss"], b["batch_objective"], rtol=1e-9)
    np.testing.assert_allclose(sparse.model.A, every.model.A, atol=1e-7)
    # stale states at the end are solved again before the final (C, D) refit on all rows
    odd = fit_adjoint(U, y, full_every=4, **kw)
    np.testing.assert_allclose(odd.model.C, every.model.C, atol=1e-7)
    assert odd.summary["train_residual"] <= 1e-10
    # a resumed run with stale states continues the same run
    fit_adjoint(U, y, full_every=4, **{**kw, "max_outer": 5}, run=RunLog(tmp_path))
    resumed = fit_adjoint(U, y, full_every=4, **kw, run=RunLog(tmp_path, resume=True))
    np.testing.assert_allclose(resumed.model.A, every.model.A, atol=1e-7)


@pytest.mark.parametrize("batch_size", [None, 15])
def test_resume_continues_the_same_run(tmp_path, batch_size):
    U, y = _regression(seed=4)
    kw = dict(task="regression", n_states=6, kappa=0.5, min_rel_decrease=0.0, init=_init(6, 2, 1, 4),
              batch_size=batch_size)
    full = fit_adjoint(U, y, max_outer=4, **kw)
    assert len(full.history) == 4
    fit_adjoint(U, y, max_outer=2, run=RunLog(tmp_path), **kw)
    resumed = fit_adjoint(U, y, max_outer=4, run=RunLog(tmp_path, resume=True), **kw)
    assert [r["iteration"] for r in resumed.history] == [0, 1, 2, 3]
    assert np.isclose(resumed.history[-1]["objective"], full.history[-1]["objective"], rtol=1e-6)
    np.testing.assert_allclose(resumed.model.A, full.model.A, atol=1e-9)  # same subsets drawn


def test_early_stopping_returns_the_best_validation_model():
    U, y = _regression(seed=5, m=60)
    res = fit_adjoint(U[:40], y[:40], task="regression", n_states=10, kappa=0.5, max_outer=8,
                      U_val=U[40:], Y_val=y[40:], early_stopping=True, patience=2,
                      min_rel_decrease=0.0, init=_init(10, 2, 1, 5))
    val = [r["val_loss"] for r in res.history]
    best = int(np.argmin(val))
    bad, expected = 0, 8  # replay the rule: stop after `patience` = 2 iterations without a new best
    for i, v in enumerate(val):
        bad = 0 if v == min(val[: i + 1]) and v < min(val[:i], default=np.inf) else bad + 1
        if bad == 2:
            expected = i + 1
            break
    assert len(val) == expected and res.summary["best_val_iteration"] == best
    pred = res.model.predict(U[40:])[:, 0]
    # the returned model is the best one, then refit (C, D) on the training set only
    assert np.mean((pred - y[40:]) ** 2) <= 1.5 * val[best]


@pytest.mark.parametrize("bad, match", [(dict(anchor_mu=0.0), "anchor_mu"), (dict(eta=-1.0), "eta"),
                                        (dict(kappa=1.5), "kappa"), (dict(lam_l1=-1.0), "lam_l1"),
                                        (dict(batch_size=1), "batch_size")])
def test_bad_arguments_are_named(bad, match):
    U, y = _regression(m=10)
    with pytest.raises(ValueError, match=match):
        fit_adjoint(U, y, task="regression", n_states=3, **bad)
