"""Robust training with ‖S‖_∞ ≤ s in the (C, D) step: weights against explicit
inverses, the scaled fit against an independent cvxpy + Clarabel solve of the weighted-ball problem,
and the bound on the models that `adjoint` and `sim` return."""

import cvxpy as cp
import numpy as np
import pytest

from implicit_cvx.convert import from_layers
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import sensitivity_matrix
from implicit_cvx.robust.training import (
    S_RTOL,
    check_s_bound,
    fit_output_layer_s_bounded,
    reachable_states,
    s_bound_scaling,
    s_bound_weights,
    s_norm_bound,
)
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.init import random_model
from implicit_cvx.train.sim import fit_sim
from implicit_cvx.train.steps import features, output_step, relative_anchor

CLARABEL = dict(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)


def _s_inf(model) -> float:
    return float(sensitivity_matrix(model).sum(axis=1).max())


def _model_with_unreachable(seed=0):
    """n = 5, p = 3, q = 2; state 4 has no input path (zero B row, only fed by itself)."""
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1, 1, (5, 5)) * (rng.random((5, 5)) < 0.6)
    A[:, 4] = 0.0
    A[4] = 0.0
    A[4, 4] = 0.3
    A *= 0.6 / np.abs(A).sum(axis=1, keepdims=True).clip(1e-12)
    B = rng.standard_normal((5, 3))
    B[4] = 0.0
    C, D = rng.standard_normal((2, 5)), rng.standard_normal((2, 3))
    return ImplicitModel(A, B, C, D, rng.standard_normal(5), np.zeros(2))


def test_weights_match_explicit_inverse_and_unreachable_states_are_zero():
    model = _model_with_unreachable()
    absA, absB = np.abs(model.A), np.abs(model.B)
    w_ref = np.linalg.solve(np.eye(5) - absA, absB.sum(axis=1))
    w = s_bound_weights(model, include_D=False)
    assert w[4] == 0.0 and reachable_states(model.A, model.B).tolist() == [True] * 4 + [False]
    assert np.all(w >= w_ref) and np.allclose(w, w_ref, rtol=1e-10, atol=0)
    omega = s_bound_weights(model)
    assert np.array_equal(omega[5:], np.ones(3))
    # ‖S‖_∞ = max_i Σ_j ω_j|[C D]_ij| (Thm 4.3), and s_norm_bound is a tight upper bound of it
    S_ref = np.abs(model.C) @ np.linalg.solve(np.eye(5) - absA, absB) + np.abs(model.D)
    rows = np.abs(np.column_stack([model.C, model.D])) @ omega
    assert np.allclose(S_ref.sum(axis=1), rows, rtol=1e-10)
    assert S_ref.sum(axis=1).max() <= s_norm_bound(model) <= S_ref.sum(axis=1).max() * (1 + 1e-9)


def _reference(F, y, loss, omega, s, lam, lam_l2, anchor):
    """The weighted-ball fit stated directly (original coordinates) and solved by Clarabel:
    mean loss + Σλ_j|W_ij| + λ2‖WΩ̂‖² + μ‖([W b] − [W0 b0])diag(ω̂, 1)‖² s.t. |W|ω ≤ s."""
    m, d = F.shape
    q = anchor[0].shape[0]
    W, b = cp.Variable((q, d)), cp.Variable(q)
    Yhat = F @ W.T + np.ones((m, 1)) @ cp.reshape(b, (1, q), order="C")
    if loss == "squared":
        data = cp.sum_squares(y - Yhat) / m
    else:
        E = np.eye(q)[y]
        data = (cp.sum(cp.log_sum_exp(Yhat, axis=1)) - cp.sum(cp.multiply(E, Yhat))) / m
    hat = np.where(omega > 0, omega / omega.max(), 1.0)
    W0, b0, mu = anchor
    obj = (data + cp.sum(cp.abs(W) @ lam) + lam_l2 * cp.sum_squares(W @ np.diag(hat))
           + mu * (cp.sum_squares((W - W0) @ np.diag(hat)) + cp.sum_squares(b - b0)))
    prob = cp.Problem(cp.Minimize(obj), [cp.abs(W) @ omega <= s])
    assert prob.is_dcp()
    prob.solve(**CLARABEL)
    return prob.value


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_s_bounded_fit_matches_clarabel_on_the_weighted_problem(loss):
    rng = np.random.default_rng(1)
    m, d, q = 50, 6, 3
    F = rng.standard_normal((m, d))
    omega = np.array([2.0, 0.5, 0.0, 1.3, 1.0, 1.0])  # column 2: an unreachable state (free)
    W_true = 2 * rng.standard_normal((q, d))
    if loss == "squared":
        y = F @ W_true.T + 0.1 * rng.standard_normal((m, q))
    else:
        y = np.argmax(F @ W_true.T + 0.3 * rng.standard_normal((m, q)), axis=1)
    lam = np.array([1e-3, 2e-3, 1e-3, 0.0, 1e-3, 5e-4])
    anchor = (0.1 * rng.standard_normal((q, d)), 0.1 * rng.standard_normal(q), 1e-2)
    s = 1.5
    W, b, info = fit_output_layer_s_bounded(F, y, loss, omega, s, lam_l1=lam, lam_l2=1e-2,
                                            anchor=anchor, tol=1e-10)
    assert info.status == "optimal"
    ref = _reference(F, y, loss, omega, s, lam, 1e-2, anchor)
    assert abs(info.objective - ref) <= 1e-6 * abs(ref)
    rows = np.abs(W) @ omega
    assert np.all(rows <= s * (1 + S_RTOL)) and rows.max() >= 0.99 * s  # the bound is active
    # the reported objective is the original-coordinate objective at the returned (W, b)
    if loss == "cross_entropy":
        Z = F @ W.T + b
        data = np.mean(np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(m), y])
        hat = np.where(omega > 0, omega / omega.max(), 1.0)
        pen = (np.abs(W) @ lam).sum() + 1e-2 * np.sum((W * hat) ** 2) + 1e-2 * (
            np.sum(((W - anchor[0]) * hat) ** 2) + np.sum((b - anchor[1]) ** 2))
        assert abs(data + pen - info.objective) <= 1e-10 * abs(info.objective)


def test_small_weights_are_floored_soundly():
    sc = s_bound_scaling(np.array([1.0, 1e-6, 0.0]), 2.0)
    assert sc.cols.tolist() == [0, 1] and np.allclose(sc.scale, [1.0, 1e-3, 1.0])
    rng = np.random.default_rng(0)
    F, y = rng.standard_normal((30, 3)), rng.integers(0, 2, 30)
    W, _, _ = fit_output_layer_s_bounded(F, y, "cross_entropy", np.array([1.0, 1e-6, 0.0]), 2.0,
                                         lam_l2=1e-3, max_iter=100, accept_uncertified=True)
    # an uncertified iterate (100 FISTA steps) is still inside the ball: sound at any iterate
    assert np.all(np.abs(W[:, :2]) @ np.array([1.0, 1e-3]) <= 2.0 * (1 + 1e-12))


def test_output_step_bounds_the_sensitivity_matrix():
    rng = np.random.default_rng(2)
    model = random_model(6, 4, 3, 0.6, seed=2)
    U = rng.uniform(0, 1, (40, 4))
    y = rng.integers(0, 3, 40)
    X = model.equilibrium(U, tol=1e-12)
    kw = dict(include_D=True, lam_l1=0.0, lam_l2=1e-3, tol=1e-9,
              mu=relative_anchor(features(X, U, True), 1e-2))
    free, _ = output_step(model, X, U, y, "cross_entropy", **kw)
    s = 0.3 * _s_inf(free)
    bounded, info = output_step(model, X, U, y, "cross_entropy", s_bound=s, **kw)
    assert info.status == "optimal"
    assert _s_inf(bounded) <= s * (1 + S_RTOL) and _s_inf(bounded) >= 0.99 * s
    assert check_s_bound(bounded, s) <= s * (1 + S_RTOL)
    with pytest.raises(RuntimeError, match="exceeds the bound"):
        check_s_bound(free, s)


def test_adjoint_with_s_bound_keeps_its_certified_bound():
    rng = np.random.default_rng(4)
    U = rng.uniform(0, 1, (60, 5))
    y = (U[:, 0] + U[:, 1] > U[:, 2] + 0.4).astype(int) + (U[:, 3] > 0.7)
    s = 2.0
    res = fit_adjoint(U, y, task="classification", loss="cross_entropy", n_states=6, kappa=0.5,
                      lam_l2=1e-3, max_outer=4, s_bound=s, seed=0)
    assert _s_inf(res.model) <= s * (1 + S_RTOL)
    assert res.summary["sensitivity_inf_norm"] <= s * (1 + S_RTOL)
    assert res.summary["final_output_fit"]["status"] == "optimal"
    assert all(r["status_CD"] == "optimal" for r in res.history)
    with pytest.raises(ValueError, match="s_bound"):
        fit_adjoint(U, y, task="classification", n_states=4, max_outer=1, s_bound=-1.0)


def test_sim_with_s_bound_matches_clarabel_and_bounds_s():
    rng = np.random.default_rng(3)
    sizes = [4, 6, 5, 2]
    Ws = [1.5 * rng.standard_normal((o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    teacher = from_layers(Ws, [0.5 * rng.standard_normal(o) for o in sizes[1:]], "relu")
    U = rng.standard_normal((60, 4))
    free = fit_sim(U, teacher=teacher, task="regression", kappa=0.9, lam=1e-3)
    s = 0.5 * _s_inf(free.model)
    res = fit_sim(U, teacher=teacher, task="regression", kappa=0.9, lam=1e-3, s_bound=s,
                  threshold=0.0)
    model = res.model
    assert _s_inf(model) <= s * (1 + S_RTOL) and res.summary["sensitivity_inf_norm"] <= s * (1 + S_RTOL)
    # the (C, D) stage against Clarabel on raw regressors [X', U, 1] with the weighted ball
    X = model.equilibrium(U, tol=1e-13)
    R, T = np.column_stack([X, U, np.ones(60)]), teacher.predict(U)
    omega = np.append(s_bound_weights(model), 0.0)
    total = 0.0
    for i in range(T.shape[1]):
        w = cp.Variable(R.shape[1])
        prob = cp.Problem(cp.Minimize(cp.sum_squares(T[:, i] - R @ w) / 60 + 1e-3 * cp.norm1(w[:-1])),
                          [np.abs(omega) @ cp.abs(w) <= s])
        prob.solve(**CLARABEL)
        total += prob.value
    W = np.column_stack([model.C, model.D, model.b_y])
    ours = np.sum((T - R @ W.T) ** 2) / 60 + 1e-3 * np.abs(W[:, :-1]).sum()
    assert abs(ours - total) <= 1e-6 * total
    with pytest.raises(ValueError, match="give one of them"):
        fit_sim(U, teacher=teacher, task="regression", formulation="robust", gamma=1.0, s_bound=s)


@pytest.mark.parametrize("bad, match", [(0.0, "s_bound"), (np.inf, "s_bound"), ("x", "s_bound")])
def test_bad_s_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        s_bound_scaling(np.ones(3), bad)


def test_bad_weights_and_shapes_are_refused():
    F, y = np.ones((5, 3)), np.array([0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="nonnegative"):
        s_bound_scaling(np.array([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="every weight is 0"):
        s_bound_scaling(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"features F must be \(m, 2\)"):
        fit_output_layer_s_bounded(F, y, "cross_entropy", np.ones(2), 1.0, lam_l2=1e-3)
