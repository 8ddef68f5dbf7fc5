"""State-driven implicit modeling against independent cvxpy + Clarabel references."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

from implicit_cvx.convert import from_layers
from implicit_cvx.model import ImplicitModel
from implicit_cvx.train.sim import fit_sim, sim_path
from implicit_cvx.train.states import teacher_states
from implicit_cvx.wellposed import BALL_RTOL, inf_norm

KAPPA = 0.9
SUMMARY_KEYS = (
    "teacher_rmse", "teacher_params", "params_fraction_of_teacher", "max_duality_gap",
    "rows_escalated", "teacher_rescaled", "train_rmse", "test_rmse", "kappa", "inf_norm_A",
    "n_states", "n_params", "nnz", "nnz_fraction", "equilibrium_residual", "seconds_by_phase",
)


@pytest.fixture(scope="module")
def small():
    """A random 4-6-5-2 ReLU teacher (outside the κ-ball, so it gets rescaled) and data."""
    rng = np.random.default_rng(3)
    sizes = [4, 6, 5, 2]
    Ws = [1.5 * rng.standard_normal((o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.5 * rng.standard_normal(o) for o in sizes[1:]]
    teacher = from_layers(Ws, bs, "relu")
    U, U_test = rng.standard_normal((60, 4)), rng.standard_normal((30, 4))
    Y = teacher.predict(U) + 0.1 * rng.standard_normal((60, 2))
    return teacher, U, Y, U_test, teacher.predict(U_test)


def _reference(R, T, lam, l2=0.0, balls=(), equality=False):
    """Row by row on the RAW data with Clarabel: (1/m)‖t − Rw‖² + λ‖w_{:-1}‖_1 + l2‖w_{:-1}‖²
    s.t. ‖w_g‖_1 ≤ r_g (or min λ‖w_{:-1}‖_1 s.t. Rw = t); the last coordinate is the bias."""
    m, d = R.shape
    total = 0.0
    for i in range(T.shape[1]):
        w = cp.Variable(d)
        pen = lam * cp.norm1(w[:-1]) + l2 * cp.sum_squares(w[:-1])
        cons = [cp.norm1(w[idx]) <= r for idx, r in balls]
        if equality:
            prob = cp.Problem(cp.Minimize(pen), cons + [R @ w == T[:, i]])
        else:
            prob = cp.Problem(cp.Minimize(cp.sum_squares(T[:, i] - R @ w) / m + pen), cons)
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        total += prob.value
    return total


def _raw_objective(R, T, W, lam, l2=0.0, equality=False):
    """The same objective evaluated at given rows W (k, d)."""
    pen = lam * np.abs(W[:, :-1]).sum() + l2 * (W[:, :-1] ** 2).sum()
    return pen if equality else pen + np.sum((T - R @ W.T) ** 2) / R.shape[0]


def _check_model(model, U, kappa=KAPPA):
    assert inf_norm(model.A) <= kappa * (1 + BALL_RTOL)
    _, info = model.equilibrium(U, return_info=True)
    assert info.converged
    assert model.metadata["method"] == "sim" and model.metadata["kappa"] == kappa


CASES = {
    "l1": dict(lam=1e-2),
    "elastic_net": dict(lam=1e-2, l2=1e-2),
    "robust": dict(lam=1e-3, beta=0.8, gamma=1.5),
    "equality": dict(lam=1e-2),
}


@pytest.mark.parametrize("formulation", sorted(CASES))
def test_rows_match_clarabel_on_raw_data(small, formulation):
    teacher, U, Y, U_test, Y_test = small
    kw = CASES[formulation]
    res = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, formulation=formulation,
                  U_test=U_test, Y_test=Y_test, **kw)
    model, s = res.model, res.summary
    _check_model(model, U)
    ts = teacher_states(teacher, U, KAPPA)
    n, p = model.n_states, model.n_inputs
    R = np.hstack([ts.X, U, np.ones((len(U), 1))])
    balls = [(np.arange(n), KAPPA)]
    if formulation == "robust":
        balls.append((np.arange(n, n + p), kw["beta"]))
    lam, l2, eq = kw["lam"], kw.get("l2", 0.0), formulation == "equality"
    ref = _reference(R, ts.Z, lam, l2, balls, eq)
    W = np.hstack([model.A, model.B, model.b_x[:, None]])
    assert abs(res.history[0]["stages"][0]["objective"] - ref) <= 1e-6 * abs(ref)
    assert abs(_raw_objective(R, ts.Z, W, lam, l2, eq) - ref) <= 1e-6 * abs(ref)
    if formulation == "robust":
        assert np.abs(model.B).sum(1).max() <= kw["beta"] * (1 + 1e-9)
        CD = np.hstack([model.C, model.D])
        assert np.abs(CD).sum(1).max() <= kw["gamma"] * (1 + 1e-9)
    if formulation in ("l1", "robust"):  # the (C, D) rows too, on the new model's states
        X_new = model.equilibrium(U)
        R_cd = np.hstack([X_new, U, np.ones((len(U), 1))])
        cd_balls = [(np.arange(n + p), kw["gamma"])] if formulation == "robust" else []
        ref_cd = _reference(R_cd, ts.Yhat, lam, 0.0, cd_balls)
        assert abs(res.history[0]["stages"][1]["objective"] - ref_cd) <= 1e-6 * abs(ref_cd)
    for key in SUMMARY_KEYS:
        assert key in s and s[key] is not None, key
    assert s["teacher_rescaled"] is True and s["n_states"] == 11
    assert s["params_fraction_of_teacher"] == model.nnz / (6 * 4 + 5 * 6 + 2 * 5 + 6 + 5 + 2)
    assert s["teacher_rmse"] == pytest.approx(np.sqrt(np.mean((teacher.predict(U_test) - Y_test) ** 2)))


def test_group_lasso_drops_states(small):
    teacher, U, Y, *_ = small
    lam, glam = 1e-3, 0.05
    res = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA,
                  formulation="group_lasso", lam=lam, group_lam=glam)
    small_model, dead = res.model, np.array(res.summary["dead_states"], dtype=int)
    assert 0 < dead.size < 11 and small_model.n_states == 11 - dead.size
    _check_model(small_model, U)
    # independent reference: the joint problem over the rows of (A, B) and (C, D) on raw data
    ts = teacher_states(teacher, U, KAPPA)
    n, m = 11, len(U)
    R, T = np.hstack([ts.X, U, np.ones((m, 1))]), np.hstack([ts.Z, ts.Yhat])
    W = cp.Variable((T.shape[1], R.shape[1]))
    obj = (cp.sum_squares(T - R @ W.T) / m + lam * cp.sum(cp.abs(W[:, :-1]))
           + glam * cp.sum(cp.norm(W[:, :n], 2, axis=0)))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(cp.abs(W[:n, :n]), axis=1) <= KAPPA])
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert abs(res.history[0]["stages"][0]["objective"] - prob.value) <= 1e-6 * prob.value
    np.testing.assert_array_equal(np.flatnonzero(np.linalg.norm(W.value[:, :n], axis=0) < 1e-6),
                                  dead)
    # dead states are read by nobody: putting them back (whatever they compute) changes nothing
    rng = np.random.default_rng(0)
    alive = np.setdiff1d(np.arange(n), dead)
    A = 0.1 * rng.standard_normal((n, n))
    A[np.ix_(alive, alive)], A[np.ix_(alive, dead)] = small_model.A, 0.0
    B = rng.standard_normal((n, 4))
    B[alive] = small_model.B
    C = np.zeros((2, n))
    C[:, alive] = small_model.C
    b_x = rng.standard_normal(n)
    b_x[alive] = small_model.b_x
    big = ImplicitModel(A, B, C, small_model.D, b_x, small_model.b_y)
    np.testing.assert_allclose(big.predict(U), small_model.predict(U), rtol=0, atol=1e-9)


def test_sim_reproduces_teacher_with_small_lambda(small):
    teacher, U, _, U_test, Y_test = small
    res = fit_sim(U, teacher=teacher, task="regression", kappa=KAPPA, lam=1e-7,
                  U_test=U_test, Y_test=Y_test)
    assert res.summary["test_rmse"] < 0.05 * np.std(Y_test)
    assert res.summary["train_rmse"] is None  # no labels given


def test_cvxpy_path_and_extra(small):
    teacher, U, Y, *_ = small
    native = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lam=1e-2)
    scs = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lam=1e-2, solver="SCS")
    _check_model(scs.model, U)
    ref = native.history[0]["stages"][0]["objective"]
    assert abs(scs.history[0]["stages"][0]["objective"] - ref) <= 1e-6 * ref
    stages = scs.history[0]["stages"]
    assert all(st["solver"] in ("scs", "scs+clarabel") for st in stages)  # the cvxpy path ran
    assert scs.summary["rows_escalated"] == sum(st["rows_escalated"] for st in stages)
    assert all(st["optimal"] == st["rows"] for st in stages)  # every row certified
    assert scs.summary["max_duality_gap"] <= 1e-6

    def nonnegative_first_state(w, i):  # a user constraint on every row: A[:, 0] ≥ 0
        return 0, [w[0] >= 0]

    ext = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lam=1e-2,
                  extra=nonnegative_first_state, solver="CLARABEL")
    _check_model(ext.model, U)
    assert ext.model.A[:, 0].min() >= -1e-8 and ext.model.C[:, 0].min() >= -1e-8


def test_parallel_backends_and_chunks_agree(small):
    teacher, U, Y, *_ = small
    kw = dict(teacher=teacher, task="regression", kappa=KAPPA, lam=1e-2)
    base = fit_sim(U, Y, **kw).history[0]["stages"]
    runs = [
        fit_sim(U, Y, n_jobs=2, backend="loky", **kw).history[0]["stages"],
        fit_sim(U, Y, chunk_size=17, **kw).history[0]["stages"],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's LocalCluster warns about ports and memory
        runs.append(fit_sim(U, Y, n_jobs=2, backend="dask", **kw).history[0]["stages"])
    for hist in runs:
        for stage, ref in zip(hist, base, strict=True):
            assert abs(stage["objective"] - ref["objective"]) <= 1e-9 * ref["objective"]


def test_path_matches_single_fits(small):
    teacher, U, Y, *_ = small
    lams = [3e-2, 1e-2, 3e-3]
    path = sim_path(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lambdas=lams)
    nnz = [r.model.nnz for r in path]
    assert nnz == sorted(nnz)  # less shrinkage, more weights (here)
    single = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lam=lams[1])
    for a, b in zip(path[1].history[0]["stages"], single.history[0]["stages"], strict=True):
        assert abs(a["objective"] - b["objective"]) <= 1e-9 * b["objective"]
    for r in path:
        _check_model(r.model, U)


def test_threshold_zeroes_small_weights(small):
    teacher, U, Y, *_ = small
    model = fit_sim(U, Y, teacher=teacher, task="regression", kappa=KAPPA, lam=1e-3,
                    threshold=1e-2).model
    for M in (model.A, model.B, model.C, model.D):
        assert np.all((M == 0) | (np.abs(M) >= 1e-2))


@pytest.mark.parametrize("kw, match", [
    (dict(formulation="lasso"), "formulation"),
    (dict(formulation="elastic_net"), "l2"),
    (dict(formulation="robust"), "beta"),
    (dict(formulation="equality", l2=1.0), "ridge"),
    (dict(solver="MOSEK"), "solver"),
    (dict(kappa=1.0), "kappa"),
    (dict(lam=-1.0), "lam"),
    (dict(task="ranking"), "task"),
])
def test_bad_options_are_refused(small, kw, match):
    teacher, U, Y, *_ = small
    with pytest.raises(ValueError, match=match):
        fit_sim(U, Y, teacher=teacher, **{"task": "regression", **kw})


def test_bad_data_is_refused(small):
    teacher, U, Y, U_test, _ = small
    with pytest.raises(ValueError, match="one target per sample"):
        fit_sim(U, Y[:5], teacher=teacher, task="regression")
    with pytest.raises(ValueError, match="U_test"):
        fit_sim(U, Y, teacher=teacher, task="regression", U_test=U_test)


def test_digits_default_config_matches_teacher():
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    U, U_test, y, y_test = train_test_split(d.data / 16, d.target, test_size=0.2, random_state=0,
                                            stratify=d.target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        teacher = MLPClassifier((64, 32), random_state=0, max_iter=100).fit(U, y)
    res = fit_sim(U, y, teacher=teacher, task="classification", U_test=U_test, Y_test=y_test)
    s = res.summary
    assert s["teacher_accuracy"] == pytest.approx(teacher.score(U_test, y_test))
    assert s["test_accuracy"] >= s["teacher_accuracy"] - 0.01
    assert s["teacher_params"] == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert res.model.metadata["classes"] == list(range(10))
    _check_model(res.model, U, kappa=0.99)


def test_path_keeps_the_steps_accepted_without_a_certificate(small):
    """accept_uncertified: a path point whose rows cannot reach the tolerance says which steps."""
    teacher, U, Y, *_ = small
    kw = dict(teacher=teacher, task="regression", kappa=KAPPA, tol=1e-30,
              accept_uncertified=True)
    path = sim_path(U, Y, lambdas=[1e-2], **kw)
    single = fit_sim(U, Y, lam=1e-2, **kw)
    assert path[0].history[0]["uncertified"] == single.history[0]["uncertified"]
    assert path[0].history[0]["uncertified"]  # non-empty: the steps are listed
