"""Certified output-layer fits (convex/losses.py) against cvxpy + Clarabel on the same problems,
and the shared loss/metric/penalty functions (train/objective.py) against finite differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.convex.losses import (
    _Regularizer,
    certify,
    fit_output_layer,
    output_layer_problem,
)
from implicit_cvx.model import ImplicitModel
from implicit_cvx.train.objective import (
    loss_grad,
    loss_value,
    metrics,
    penalty_value,
    prepare_targets,
)


def _data(seed, m=40, d=4, q=3):
    """Labels from a noisy linear model, so the optimum is not W = 0."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((m, d))
    y = np.argmax(F @ rng.standard_normal((d, q)) + 0.7 * rng.standard_normal((m, q)), axis=1)
    return F, y


SETTINGS = [
    dict(lam_l1=0.02),
    dict(lam_l2=0.05),
    dict(lam_l1=np.array([0.01, 0.03, 0.0, 0.02]), balls=[(np.array([2]), 0.4)]),
    dict(lam_l1=0.005, balls=[(np.arange(4), 0.8)]),
    dict(anchor="random"),
    dict(lam_l1=0.01, lam_l2=0.01, anchor="random", balls=[(np.array([0, 1]), 0.3)]),
]


def _kwargs(setting, q, d, seed):
    kw = dict(setting)
    if kw.get("anchor") == "random":
        rng = np.random.default_rng(seed + 100)
        kw["anchor"] = (rng.standard_normal((q, d)), rng.standard_normal(q), 0.03)
    return kw


def _reference(F, y, loss, kw, q):
    reg = _Regularizer(q, F.shape[1], kw.get("lam_l1", 0.0), kw.get("lam_l2", 0.0),
                       kw.get("anchor"), kw.get("balls", ()))
    prob, theta, _ = output_layer_problem(F, y, loss, reg)
    assert prob.is_dcp()
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return prob.value, reg


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge"])
@pytest.mark.parametrize("k", range(len(SETTINGS)))
def test_matches_clarabel_and_gap_is_certified(loss, k):
    F, y = _data(k)
    q, d = 3, F.shape[1]
    kw = _kwargs(SETTINGS[k], q, d, k)
    W, b, info = fit_output_layer(F, y, loss, tol=1e-9, **kw)
    ref, reg = _reference(F, y, loss, kw, q)
    assert info.status == "optimal"
    assert abs(info.objective - ref) <= 1e-6 * abs(ref)
    # the gap bounds the true suboptimality (Clarabel's value is accurate to ~1e-10)
    assert info.objective - ref <= info.gap + 1e-9 * abs(ref)
    assert info.gap <= 1e-9 * max(1.0, abs(info.objective))
    for idx, r in kw.get("balls", ()):
        assert np.abs(W[:, idx]).sum(axis=1).max() <= r * (1 + 1e-12)
    assert b.shape == (q,) and W.shape == (q, d)


@pytest.mark.parametrize("loss", ["cross_entropy", "hinge"])
def test_gap_of_a_poor_point_bounds_its_suboptimality(loss):
    """Certify arbitrary points (not just solver output): gap ≥ P(Θ) − P* always."""
    F, y = _data(7)
    q, d = 3, F.shape[1]
    kw = dict(lam_l1=0.02, balls=[(np.array([0, 1]), 0.5)])
    ref, reg = _reference(F, y, loss, kw, q)
    rng = np.random.default_rng(0)
    Ft = np.column_stack([F, np.ones(len(F))])
    for scale in (0.0, 0.1, 1.0):
        theta = reg.project(scale * rng.standard_normal((q, d + 1)))
        Pi = rng.dirichlet(np.ones(q), size=len(y))
        primal, gap = certify(loss, Ft, y, theta, reg, Pi)
        assert primal - ref <= gap + 1e-9
        assert primal >= ref - 1e-9


def test_squared_delegates_to_row_engine_and_matches_clarabel():
    import cvxpy as cp

    rng = np.random.default_rng(3)
    F = rng.standard_normal((30, 4))
    Y = F @ rng.standard_normal((4, 2)) + 0.1 * rng.standard_normal((30, 2)) + 1.5
    W, b, info = fit_output_layer(F, Y, "squared", lam_l1=0.05, lam_l2=0.02,
                                  balls=[(np.arange(2), 0.5)], tol=1e-10)
    Wv, bv = cp.Variable((2, 4)), cp.Variable(2)
    resid = Y - F @ Wv.T - np.ones((30, 1)) @ cp.reshape(bv, (1, 2), order="C")
    obj = cp.sum_squares(resid) / 30 + 0.05 * cp.sum(cp.abs(Wv)) + 0.02 * cp.sum_squares(Wv)
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(Wv[:, :2]), axis=1) <= 0.5])
    assert prob.is_dcp()
    prob.solve(solver="CLARABEL")
    assert info.status == "optimal" and info.solver == "native"
    assert abs(info.objective - prob.value) <= 1e-6 * prob.value
    assert np.allclose(b, bv.value, atol=1e-4)


def test_unpenalized_classification_fit_is_refused():
    F, y = _data(0)
    with pytest.raises(ValueError, match="unpenalized"):
        fit_output_layer(F, y, "cross_entropy")


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(Y=np.array([0.5] * 40)), "integer labels"),
        (dict(lam_l1=-1.0), "lam_l1"),
        (dict(balls=[(np.array([9]), 1.0)]), "ball 0"),
        (dict(anchor=(np.zeros((2, 4)), np.zeros(2), 1.0)), "labels go up to"),
        (dict(loss="logistic"), "unknown loss"),
    ],
)
def test_bad_input_is_named(bad, match):
    F, y = _data(0)
    kw = dict(Y=y, loss="cross_entropy", lam_l2=0.1)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        fit_output_layer(F, kw.pop("Y"), kw.pop("loss"), **kw)


# ---- objective.py ------------------------------------------------------------------------------
@settings(deadline=None, derandomize=True, max_examples=15)
@given(st.sampled_from(["squared", "cross_entropy", "hinge"]), st.integers(0, 10_000))
def test_loss_grad_matches_finite_differences(loss, seed):
    rng = np.random.default_rng(seed)
    m, q = 6, 3
    Yhat = rng.standard_normal((m, q))
    Y = rng.standard_normal((m, q)) if loss == "squared" else rng.integers(0, q, m)
    G = loss_grad(loss, Yhat, Y)
    h = 1e-6
    fd = np.zeros_like(Yhat)
    for i in range(m):
        for j in range(q):
            E = np.zeros_like(Yhat)
            E[i, j] = h
            fd[i, j] = (loss_value(loss, Yhat + E, Y) - loss_value(loss, Yhat - E, Y)) / (2 * h)
    # random points are away from the hinge's kinks with probability one
    assert np.allclose(G, fd, atol=1e-7)


def test_loss_values_against_definitions():
    Yhat = np.array([[2.0, 0.0, -1.0], [0.0, 0.5, 0.2]])
    y = np.array([0, 2])
    ce = np.mean([np.log(np.exp(Yhat[i]).sum()) - Yhat[i, y[i]] for i in range(2)])
    hinge = np.mean([max(0.0, max(1 + Yhat[0, 1] - 2, 1 + Yhat[0, 2] - 2)),
                     max(0.0, 1 + 0.5 - 0.2, 1 + 0.0 - 0.2)])
    assert np.isclose(loss_value("cross_entropy", Yhat, y), ce)
    assert np.isclose(loss_value("hinge", Yhat, y), hinge)
    assert np.isclose(loss_value("squared", Yhat[:, :1], [1.0, 0.0]), (1.0 + 0.0) / 2)
    assert metrics("classification", Yhat, y) == {"accuracy": 0.5}  # argmax 0 and 1
    assert np.isclose(metrics("regression", Yhat[:, :1], [1.0, 0.0])["rmse"], np.sqrt(0.5))


def test_penalty_ignores_biases_and_bad_targets_are_named():
    rng = np.random.default_rng(0)
    A, B, C, D = (rng.standard_normal(s) for s in ((3, 3), (3, 2), (2, 3), (2, 2)))
    model = ImplicitModel(0.1 * A, B, C, D, b_x=np.ones(3), b_y=np.ones(2))
    l1 = sum(np.abs(M).sum() for M in (0.1 * A, B, C, D))
    l2 = sum((M**2).sum() for M in (0.1 * A, B, C, D))
    assert np.isclose(penalty_value(model, 0.3, 0.7), 0.3 * l1 + 0.7 * l2)
    with pytest.raises(ValueError, match="labels must be integers"):
        prepare_targets("cross_entropy", np.array([0, 1.5]))
    with pytest.raises(ValueError, match="K ≥ 2 logits"):
        loss_value("cross_entropy", np.zeros((2, 1)), np.array([0, 0]))
