"""SIM architecture formulations (train/sim.py): input selection by (B; D) column groups and
low-rank A, against independent cvxpy + Clarabel solves of the same convex problems on raw data."""

import cvxpy as cp
import numpy as np
import pytest

from implicit_cvx.convert import from_layers
from implicit_cvx.train.sim import fit_sim
from implicit_cvx.train.states import teacher_states
from implicit_cvx.wellposed import BALL_RTOL, inf_norm

KAPPA = 0.9
TIGHT = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)


@pytest.fixture(scope="module")
def teacher_data():
    """A 6-8-5-2 ReLU teacher whose inputs 4 and 5 are unused, and data."""
    rng = np.random.default_rng(11)
    sizes = [6, 8, 5, 2]
    Ws = [1.5 * rng.standard_normal((o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    Ws[0][:, 4:] = 0.0
    bs = [0.5 * rng.standard_normal(o) for o in sizes[1:]]
    teacher = from_layers(Ws, bs, "relu")
    U = rng.standard_normal((80, 6))
    return teacher, U, teacher.predict(U)


def test_input_selection_drops_unused_inputs_and_matches_clarabel(teacher_data):
    teacher, U, Y = teacher_data
    lam, glam = 1e-3, 0.02
    res = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA,
                  formulation="input_selection", lam=lam, group_lam=glam)
    model, s = res.model, res.summary
    dead = np.array(s["dead_inputs"], dtype=int)
    assert {4, 5} <= set(dead.tolist()) and s["n_inputs_kept"] == 6 - dead.size
    assert model.metadata["sim"]["kept_inputs"] == np.setdiff1d(np.arange(6), dead).tolist()
    assert np.all(model.B[:, dead] == 0) and np.all(model.D[:, dead] == 0)
    assert inf_norm(model.A) <= KAPPA * (1 + BALL_RTOL)
    assert s["certificate"] == "duality gap" and 0 <= s["max_duality_gap"] <= 1e-9 * max(1, res.history[0]["stages"][0]["objective"])
    V = U.copy()
    V[:, dead] = 100.0  # the kept model ignores the dropped inputs
    np.testing.assert_allclose(model.predict(V), model.predict(U), atol=1e-10)
    # independent reference: the joint problem over (A, B) and (C, D) rows on raw data
    ts = teacher_states(teacher, U, KAPPA)
    n, m = ts.Z.shape[1], len(U)
    R, T = np.hstack([ts.X, U, np.ones((m, 1))]), np.hstack([ts.Z, ts.Yhat])
    W = cp.Variable((T.shape[1], R.shape[1]))
    obj = (cp.sum_squares(T - R @ W.T) / m + lam * cp.sum(cp.abs(W[:, :-1]))
           + glam * cp.sum(cp.norm(W[:, n:n + 6], 2, axis=0)))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(W[:n, :n]), axis=1) <= KAPPA])
    prob.solve(solver="CLARABEL", **TIGHT)
    stage = res.history[0]["stages"][0]
    assert stage["objective"] - prob.value <= stage["duality_gap"] + 1e-7 * prob.value
    assert abs(stage["objective"] - prob.value) <= 1e-6 * prob.value


def _rows_reference(R, Z, lam, radius, d_ball):
    """Σ_i min (1/m)‖z_i − Rw‖² + λ‖w_{:-1}‖_1 s.t. ‖w_{:d_ball}‖_1 ≤ radius, by Clarabel."""
    m = len(R)
    W = cp.Variable((Z.shape[1], R.shape[1]))
    obj = cp.sum_squares(Z - R @ W.T) / m + lam * cp.sum(cp.abs(W[:, :-1]))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(W[:, :d_ball]), axis=1) <= radius])
    prob.solve(solver="CLARABEL", **TIGHT)
    return prob.value, W.value


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_a_is_rank_r_in_the_ball_and_its_refit_matches_clarabel(teacher_data, rank):
    teacher, U, Y = teacher_data
    lam = 1e-3
    res = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, formulation="low_rank",
                  lam=lam, rank=rank)
    model, s = res.model, res.summary
    assert np.linalg.matrix_rank(model.A, tol=1e-10) <= rank and s["rank"] == rank
    assert inf_norm(model.A) <= KAPPA * (1 + BALL_RTOL)
    # reference: the l1 fit of (A, B), its top right singular vectors scaled to unit ℓ1 columns,
    # then the rows of (L, B, b_x) on [XR, U, 1] with ‖l_i‖_1 ≤ κ
    ts = teacher_states(teacher, U, KAPPA)
    n, m = ts.Z.shape[1], len(U)
    _, W_full = _rows_reference(np.hstack([ts.X, U, np.ones((m, 1))]), ts.Z, lam, KAPPA, n)
    R = np.linalg.svd(W_full[:, :n])[2][:rank].T
    R /= np.abs(R).sum(axis=0)
    ref, _ = _rows_reference(np.hstack([ts.X @ R, U, np.ones((m, 1))]), ts.Z, lam, KAPPA, rank)
    assert abs(res.history[0]["stages"][0]["objective"] - ref) <= 1e-6 * ref


def test_options_are_checked():
    with pytest.raises(ValueError, match="needs rank"):
        fit_sim(np.zeros((3, 2)), np.zeros(3), task="regression", formulation="low_rank")
    with pytest.raises(ValueError, match="needs group_lam"):
        fit_sim(np.zeros((3, 2)), np.zeros(3), task="regression", formulation="input_selection")
