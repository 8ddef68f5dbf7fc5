"""Certified bounds (box, interval, lp) against sampling, PGD, dense grid search, an independent
interval bound propagation, and the LP's own optimum (weak duality)."""

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import random_model

from implicit_cvx.convert import from_layers
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import (
    METHODS,
    certify,
    input_box,
    margin_lower_bounds,
    output_bounds,
    pgd_attack,
)
from implicit_cvx.robust.certify import _boxes, margin_rows
from implicit_cvx.robust.lp import LPSolver, dual_bound

SETTINGS = settings(deadline=None, derandomize=True, max_examples=6)
BOUND_METHODS = tuple(m for m in METHODS if m != "exact")  # exact needs piecewise-linear states
LEAKY = {"name": "leaky_relu", "alpha": 0.1}
MIXED = [("relu", 3), ("tanh", 3)]


def _outputs(model, U):
    return model.output(model.equilibrium(U, tol=1e-13), U)


def _true_margins(Y, y):
    M = Y[np.arange(len(y)), y][:, None] - Y
    M[np.arange(len(y)), y] = np.inf
    return M


def _samples_in_box(rng, lo, hi, count):
    """count points per sample row: uniform, plus the corners' sign patterns."""
    t = rng.uniform(size=(count,) + lo.shape)
    t[: count // 4] = np.round(t[: count // 4])
    return lo + t * (hi - lo)


def _check_contains(model, U, y, eps, domain, points, method):
    lower, upper = output_bounds(model, U, eps, method, domain)
    mlb = margin_lower_bounds(model, U, y, eps, method, domain)
    for P in points:  # P: (m, p), one point per sample
        Y = _outputs(model, P)
        assert np.all(Y >= lower - 1e-9) and np.all(Y <= upper + 1e-9), method
        assert np.all(_true_margins(Y, y) >= mlb - 1e-9), method
    return lower, upper, mlb


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 3), st.integers(2, 3),
       st.sampled_from(["relu", "tanh", LEAKY]), st.floats(0.0, 0.6), st.booleans())
def test_bounds_contain_sampled_outputs(seed, n, p, q, activation, eps, clip):
    model = random_model(seed, n, p, q, activation=activation)
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, size=(2, p))
    y = rng.integers(0, q, size=2)
    domain = (-1.0, 1.0) if clip else None
    lo, hi = input_box(U, eps, domain)
    points = _samples_in_box(rng, lo, hi, 60)
    prev = None
    methods = METHODS if activation != "tanh" else BOUND_METHODS
    for method in methods:  # box ≤ interval ≤ linear ≤ linear_alpha ≤ lp ≤ exact
        _, _, mlb = _check_contains(model, U, y, eps, domain, points, method)
        if prev is not None:
            assert np.all(mlb >= prev - 1e-6), method
        prev = mlb


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pgd_never_beats_the_bounds(activation):
    for seed in range(3):
        model = random_model(seed, 5, 3, 3, activation=activation)
        rng = np.random.default_rng(seed)
        U = rng.uniform(-1, 1, size=(3, 3))
        y = model.predict(U).argmax(axis=1)
        eps = 0.3
        res = pgd_attack(model, U, y, eps, steps=30, loss="margin", rng=seed)
        assert np.all(np.abs(res.U_adv - U) <= eps * (1 + 1e-12))
        for method in METHODS if activation == "relu" else BOUND_METHODS:
            mlb = margin_lower_bounds(model, U, y, eps, method)
            assert np.all(res.adversarial_margins >= mlb.min(axis=1) - 1e-9), method


@pytest.mark.parametrize(("seed", "activation"), [(0, "relu"), (1, "relu"), (2, "relu"), (0, "tanh"),
                                                  (1, "tanh"), (0, LEAKY), (1, MIXED)])
def test_bounds_contain_the_grid_worst_case_on_tiny_models(seed, activation):
    """n ≤ 6, p = 2: a 61×61 grid over each input box finds the (near) true worst case."""
    model = random_model(seed, 6, 2, 3, activation=activation)
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, size=(2, 2))
    y = model.predict(U).argmax(axis=1)
    eps = 0.4
    lo, hi = input_box(U, eps)
    t = np.linspace(0.0, 1.0, 61)
    T = np.stack(np.meshgrid(t, t), axis=-1).reshape(-1, 2)
    for i in range(U.shape[0]):
        G = lo[i] + T * (hi[i] - lo[i])
        Y = _outputs(model, G)
        worst_margin = _true_margins(Y, np.full(len(G), y[i])).min(axis=0)
        for method in METHODS if activation in ("relu", LEAKY) else BOUND_METHODS:
            lower, upper = output_bounds(model, U[i : i + 1], eps, method)
            mlb = margin_lower_bounds(model, U[i : i + 1], y[i : i + 1], eps, method)
            assert np.all(Y.min(axis=0) >= lower[0] - 1e-10), method
            assert np.all(Y.max(axis=0) <= upper[0] + 1e-10), method
            assert np.all(worst_margin >= mlb[0] - 1e-10), method


def test_lp_is_strictly_tighter_than_interval_somewhere():
    gains = []
    for seed in range(4):
        model = random_model(seed, 6, 3, 3)
        rng = np.random.default_rng(seed)
        U = rng.uniform(-1, 1, size=(2, 3))
        y = model.predict(U).argmax(axis=1)
        b, i, lp = (margin_lower_bounds(model, U, y, 0.2, m) for m in ("box", "interval", "lp"))
        finite = np.isfinite(b)
        assert np.all(i[finite] >= b[finite] - 1e-8) and np.all(lp[finite] >= i[finite] - 1e-8)
        gains.append((lp[finite] - i[finite]).max())
    assert max(gains) > 1e-3


def _ibp(weights, biases, lo, hi):
    """Plain interval bound propagation through a ReLU network (last layer linear):
    the bounds of the last hidden layer, and of the outputs."""
    for W, b in zip(weights[:-1], biases[:-1], strict=True):
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        lo, hi = (np.maximum(lo @ Wp.T + hi @ Wn.T + b, 0), np.maximum(hi @ Wp.T + lo @ Wn.T + b, 0))
    W, b = weights[-1], biases[-1]
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    return lo, hi, lo @ Wp.T + hi @ Wn.T + b, hi @ Wp.T + lo @ Wn.T + b


def test_interval_equals_ibp_on_a_feedforward_network():
    rng = np.random.default_rng(7)
    dims = [4, 8, 6, 5, 3]
    weights = [rng.normal(size=(dims[k + 1], dims[k])) / np.sqrt(dims[k]) for k in range(4)]
    biases = [0.3 * rng.normal(size=d) for d in dims[1:]]
    model = from_layers(weights, biases, "relu")
    U = rng.uniform(0, 1, size=(5, 4))
    y = model.predict(U).argmax(axis=1)
    eps = 0.1
    lo, hi = input_box(U, eps, (0.0, 1.0))
    hl, hu, ol, ou = _ibp(weights, biases, lo, hi)
    lower, upper = output_bounds(model, U, eps, "interval", (0.0, 1.0))
    np.testing.assert_allclose(lower, ol, atol=1e-10)
    np.testing.assert_allclose(upper, ou, atol=1e-10)
    W = weights[-1]
    for i in range(len(U)):  # margins folded through the last layer, then IBP on the last box
        G = W[y[i]] - W
        ref = np.maximum(G, 0) @ hl[i] + np.minimum(G, 0) @ hu[i] + biases[-1][y[i]] - biases[-1]
        mlb = margin_lower_bounds(model, U[i : i + 1], y[i : i + 1], eps, "interval", (0.0, 1.0))[0]
        mask = np.arange(3) != y[i]
        np.testing.assert_allclose(mlb[mask], ref[mask], atol=1e-10)


def _reference_lp(model, boxes, i, gx, gu):
    """The triangle LP written independently in cvxpy (ReLU states), solved with Clarabel."""
    n, p = model.n_states, model.n_inputs
    x, z, u = cp.Variable(n), cp.Variable(n), cp.Variable(p)
    zl, zu = boxes.zl[i], boxes.zu[i]
    cons = [z == model.A @ x + model.B @ u + model.b_x, u >= boxes.ul[i], u <= boxes.uu[i],
            x >= boxes.xl[i], x <= boxes.xu[i], z >= zl, z <= zu]
    for k in range(n):
        if zl[k] >= 0:
            cons.append(x[k] == z[k])
        elif zu[k] <= 0:
            cons.append(x[k] == 0)
        else:
            cons += [x[k] >= 0, x[k] >= z[k], x[k] <= zu[k] * (z[k] - zl[k]) / (zu[k] - zl[k])]
    prob = cp.Problem(cp.Minimize(gx @ x + gu @ u), cons)
    prob.solve(solver=cp.CLARABEL)
    return prob.value


def test_lp_certificate_is_weak_duality():
    """At HiGHS's multipliers the certificate equals the LP optimum of an independent cvxpy
    formulation; at any other multipliers it stays below it."""
    model = random_model(3, 5, 3, 3)
    rng = np.random.default_rng(3)
    U = rng.uniform(-1, 1, size=(1, 3))
    boxes = _boxes(model, U, 0.3, "interval", None)
    lp = LPSolver(model, boxes, 0)
    Gx, Gu, gb, _ = margin_rows(model, np.array([0]))
    cert = lp.lower_bound(Gx[0, 1], Gu[0, 1], gb[0, 1])
    optimum = _reference_lp(model, boxes, 0, Gx[0, 1], Gu[0, 1]) + gb[0, 1]
    assert cert <= optimum + 1e-7
    assert cert == pytest.approx(optimum, abs=1e-6)
    c = lp.formulation.cost(Gx[0, 1], Gu[0, 1])
    for _ in range(20):
        y = rng.normal(size=lp.formulation.G.shape[0]) * 3
        assert dual_bound(lp.formulation, c, gb[0, 1], y) <= optimum + 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_eps_zero_certifies_exactly_the_clean_correct_samples(method):
    model = random_model(11, 6, 3, 4, activation="relu")
    rng = np.random.default_rng(11)
    U = rng.uniform(-1, 1, size=(12, 3))
    y = rng.integers(0, 4, size=12)
    res = certify(model, U, y, [0.0, 0.05], method)
    safe = np.abs(res.clean_margins) > 1e-8
    assert res.correct.any() and (~res.correct).any()
    np.testing.assert_array_equal(res.certified[safe, 0], res.correct[safe])
    assert res.certified_accuracy[0.0] <= res.clean_accuracy
    assert res.certified_accuracy[0.05] <= res.certified_accuracy[0.0]


def test_ties_count_as_misclassified():
    C = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # classes 0 and 1 always tie
    model = ImplicitModel(np.zeros((2, 2)), np.eye(2), C, np.zeros((3, 2)))
    res = certify(model, np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 2], [0.0])
    np.testing.assert_array_equal(res.correct, [False, True])
    np.testing.assert_array_equal(res.certified[:, 0], [False, True])


def test_certify_reports_units_accuracies_and_unsorted_eps():
    model = random_model(5, 6, 3, 3)
    model.metadata["preprocessing"] = {"kind": "scale", "offset": 0.0, "scale": 1 / 16}
    rng = np.random.default_rng(5)
    U = rng.uniform(0, 1, size=(10, 3))
    y = model.predict(U).argmax(axis=1)
    res = certify(model, U, y, [0.2, 0.0, 0.05], "interval", domain=(0, 1))
    assert res.eps == (0.2, 0.0, 0.05) and res.clean_accuracy == 1.0
    assert "normalized" in res.eps_units and res.preprocessing["kind"] == "scale"
    acc = res.certified_accuracy
    assert acc[0.0] == 1.0 and acc[0.2] <= acc[0.05] <= acc[0.0]
    assert res.certified.shape == (10, 3) and np.all(res.certified[:, 0] <= res.certified[:, 2])
    np.testing.assert_array_equal(res.predictions, y)


def test_domain_clipping_shrinks_the_box_and_tightens_bounds():
    U = np.array([[0.0, 0.5, 1.0]])
    lo, hi = input_box(U, 0.2, (0, 1))
    np.testing.assert_allclose(lo, [[0.0, 0.3, 0.8]])
    np.testing.assert_allclose(hi, [[0.2, 0.7, 1.0]])
    model = random_model(2, 5, 3, 3)
    y = model.predict(U).argmax(axis=1)
    clipped = margin_lower_bounds(model, U, y, 0.2, "interval", (0, 1))
    free = margin_lower_bounds(model, U, y, 0.2, "interval")
    assert np.all(clipped >= free - 1e-12)
    with pytest.raises(ValueError, match="outside the domain"):
        input_box(U + 2, 0.1, (0, 1))


def test_sparse_model_matches_dense():
    model = random_model(6, 6, 3, 3)
    sparse = model.with_weights(**{k: sp.csr_matrix(getattr(model, k)) for k in "ABCD"})
    U = np.random.default_rng(6).uniform(-1, 1, size=(2, 3))
    y = np.array([0, 1])
    for method in METHODS:
        np.testing.assert_allclose(margin_lower_bounds(sparse, U, y, 0.1, method),
                                   margin_lower_bounds(model, U, y, 0.1, method), rtol=1e-7, atol=1e-9)


def test_bad_arguments_are_refused():
    model = random_model(0, 3, 2, 3)
    U = np.zeros((2, 2))
    with pytest.raises(ValueError, match="method"):
        certify(model, U, [0, 1], [0.1], method="crown")
    with pytest.raises(ValueError, match="eps"):
        output_bounds(model, U, -0.1)
    with pytest.raises(ValueError, match="labels"):
        margin_lower_bounds(model, U, [0, 1, 2], 0.1)
    with pytest.raises(ValueError, match="class indices"):
        certify(model, U, [0, 3], [0.1])
    with pytest.raises(ValueError, match="eps_list"):
        certify(model, U, [0, 1], [])


@pytest.mark.parametrize("method", METHODS)
def test_a_sloppy_equilibrium_is_covered_by_the_residual_widening(method, monkeypatch):
    """Starting points with residual ~1e-3 (a solver stopped early) still give sound bounds."""
    model = random_model(8, 6, 3, 3)
    U = np.random.default_rng(8).uniform(-1, 1, size=(3, 3))
    exact = _outputs(model, U)
    solve = ImplicitModel.equilibrium

    def sloppy(self, U, **kw):
        X, info = solve(self, U, **kw)
        return X + 1e-3 * np.random.default_rng(0).normal(size=X.shape), info

    monkeypatch.setattr(ImplicitModel, "equilibrium", sloppy)
    lower, upper = output_bounds(model, U, 0.0, method)
    assert np.all(lower <= exact) and np.all(exact <= upper)
    if method == "box":  # the refined methods shrink the widened box back towards the point
        assert np.all(upper - lower > 1e-4)


# ---- block activations ----------------------------------------------------------------------------
def _block_model(seed, kind):
    from implicit_cvx.activations import MaxPoolBlock
    from implicit_cvx.convert import Conv2d
    from implicit_cvx.network import Flatten, Linear, MaxPool2d, from_sequential

    rng = np.random.default_rng(seed)
    if kind == "cnn":
        return from_sequential([Conv2d(rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2)), "relu",
                                MaxPool2d(2), Flatten(), Linear(rng.normal(size=(3, 8)))], (1, 6, 6))
    if kind == "softmax":  # a cyclic softmax block; its majorant J = ¼𝟙𝟙ᵀ gives λ_pf(J|A|) = 0.9
        A = rng.normal(size=(4, 4))
        A *= 0.9 / np.abs(A).sum(axis=1, keepdims=True)
        return ImplicitModel(A, rng.normal(size=(4, 3)), rng.normal(size=(3, 4)),
                             np.zeros((3, 3)), rng.normal(size=4), activation="softmax")
    pool = MaxPoolBlock((1, 1, 2), (1, 2))  # x_0 = max(z_0, z_1) with z_0 = 0, z_1 = u
    return ImplicitModel(np.zeros((2, 2)), [[0.0], [1.0]], [[1.0, 0.0]], np.zeros((1, 1)),
                         activation=pool)


@pytest.mark.parametrize("kind", ["cnn", "softmax"])
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 0.5))
def test_block_activation_bounds_contain_sampled_outputs(kind, seed, eps):
    model = _block_model(seed, kind)
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, size=(2, model.n_inputs))
    y = rng.integers(0, model.n_outputs, size=2)
    lo, hi = input_box(U, eps)
    points = _samples_in_box(rng, lo, hi, 40)
    for method in BLOCK_METHODS:
        _check_contains(model, U, y, eps, None, points, method)
    with pytest.raises(ValueError, match="block activations.*use method 'interval'"):
        output_bounds(model, U, eps, "linear")


BLOCK_METHODS = ("box", "interval")  # the linear relaxations are for componentwise activations


def test_block_start_box_covers_states_that_read_other_states():
    """x_0 = max(0, u): the componentwise box would keep x_0 fixed (|B_0| = 0); the
    block-aware one must cover max(0, u) over u ∈ [0.2, 0.8]."""
    model = _block_model(0, "pool")
    for method in BLOCK_METHODS:
        lower, upper = output_bounds(model, np.array([[0.5]]), 0.3, method)
        assert lower[0, 0] <= 0.2 and upper[0, 0] >= 0.8, method


def test_unbounded_gates_are_refused_by_the_bounds():
    model = ImplicitModel(np.zeros((2, 2)), np.eye(2), [[1.0, 0.0]], np.zeros((1, 2)),
                          activation="gate")  # x = u_0 · u_1: no Lipschitz constant
    with pytest.raises(ValueError, match="no finite Lipschitz constant"):
        output_bounds(model, np.zeros((1, 2)), 0.1, "interval")



# ---- one-logit models, per-feature radii and domains, result fields --------------------------------
def _one_logit_pair(seed):
    """A one-output model (class 1 iff ŷ > 0) and the two-output model with logits (0, ŷ): their
    margins coincide for every input."""
    base = random_model(seed, 6, 3, 1)
    two = base.with_weights(C=np.vstack([np.zeros(6), base.C]), D=np.vstack([np.zeros(3), base.D]),
                            b_y=np.array([0.0, base.b_y[0]]))
    return base, two


@pytest.mark.parametrize("method", METHODS)
def test_one_logit_models_match_their_two_logit_twin(method):
    one, two = _one_logit_pair(12)
    rng = np.random.default_rng(12)
    U = rng.uniform(-1, 1, size=(16, 3))
    y = (one.predict(U)[:, 0] > 0).astype(int)
    y[:2] = 1 - y[:2]  # two clean errors
    a = certify(one, U, y, [0.0, 0.1, 0.3], method)
    b = certify(two, U, y, [0.0, 0.1, 0.3], method)
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.status, b.status)
    assert a.clean_accuracy == b.clean_accuracy < 1.0
    mlb = margin_lower_bounds(one, U, y, 0.1, method)
    ref = margin_lower_bounds(two, U, y, 0.1, method)
    assert mlb.shape == (16, 1)
    np.testing.assert_allclose(mlb[:, 0], ref[np.arange(16), 1 - y], atol=1e-6)
    lo, hi = input_box(U, 0.1)
    for P in _samples_in_box(rng, lo, hi, 40):  # sound: (2y − 1)ŷ never below the bound
        assert np.all((2 * y - 1) * _outputs(one, P)[:, 0] >= mlb[:, 0] - 1e-9)


def test_one_logit_labels_must_be_zero_or_one():
    one, _ = _one_logit_pair(13)
    with pytest.raises(ValueError, match="0..1"):
        certify(one, np.zeros((2, 3)), [0, 2], [0.1])


def test_per_feature_radii_and_domains():
    U = np.array([[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]])
    lo, hi = input_box(U, [0.1, 0.0, 0.3], ([0.0, -np.inf, 0.0], [1.0, np.inf, 1.1]))
    np.testing.assert_allclose(lo, [[0.0, 0.5, 0.7], [0.1, 0.2, 0.0]])
    np.testing.assert_allclose(hi, [[0.1, 0.5, 1.1], [0.3, 0.2, 0.5]])
    assert np.all(lo[:, 1] == U[:, 1]) and np.all(hi[:, 1] == U[:, 1])  # radius 0: not perturbed
    with pytest.raises(ValueError, match="outside the domain"):
        input_box(U, 0.1, ([0.0, 0.6, 0.0], 1.0))
    with pytest.raises(ValueError, match="one radius per input feature"):
        input_box(U, [0.1, 0.2], None)
    with pytest.raises(ValueError, match="lo < hi"):
        input_box(U, 0.1, ([0.0, 1.0, 0.0], [1.0, 1.0, 1.1]))
    model = random_model(14, 6, 3, 3)
    y = model.predict(U).argmax(axis=1)
    scale = np.array([1.0, 0.0, 2.0])
    res = certify(model, U, y, [0.05, 0.1], "linear", ([0.0, -np.inf, 0.0], [1.0, np.inf, 1.1]),
                  eps_scale=scale)
    for k, e in enumerate((0.05, 0.1)):
        mlb = margin_lower_bounds(model, U, y, e * scale, "linear", ([0.0, -np.inf, 0.0], [1.0, np.inf, 1.1]))
        np.testing.assert_array_equal(res.certified[:, k], mlb.min(axis=1) > 0)
    assert res.eps_scale == scale.tolist() and res.domain == ([0.0, -np.inf, 0.0], [1.0, np.inf, 1.1])


@pytest.mark.parametrize("method", BOUND_METHODS)
def test_bound_methods_report_status_but_no_falsified_share(method):
    model = random_model(15, 6, 3, 3)
    rng = np.random.default_rng(15)
    U = rng.uniform(-1, 1, size=(10, 3))
    y = model.predict(U).argmax(axis=1)
    y[0] = (y[0] + 1) % 3
    res = certify(model, U, y, [0.0, 0.2], method)
    assert res.falsified is None and res.unknown is None and res.counterexamples is None
    assert res.status[0, 0] == res.status[0, 1] == "falsified"  # a clean error
    np.testing.assert_array_equal(res.status == "certified", res.certified)
    assert set(np.unique(res.status)) <= {"certified", "falsified", "unknown"}
    finite = np.isfinite(res.margin_bounds)
    assert np.all((res.margin_bounds[finite] > 0) == res.certified[finite])


def test_boxes_of_all_radii_at_once_equal_one_radius_at_a_time():
    """Started around the samples (not the clipped boxes' midpoints), the refined boxes agree."""
    from implicit_cvx.robust.certify import _boxes_per_eps

    model = random_model(16, 6, 3, 3)
    U = np.random.default_rng(16).uniform(0, 1, size=(5, 3))
    X = model.equilibrium(U, tol=1e-12)
    together = _boxes_per_eps(model, U, [0.01, 0.1, 0.3], "interval", (0, 1), X)
    for e, boxes in zip([0.01, 0.1, 0.3], together, strict=True):
        alone = _boxes(model, U, e, "interval", (0, 1))  # started around the box midpoints
        for k in ("ul", "uu", "xl", "xu", "zl", "zu"):
            np.testing.assert_allclose(getattr(boxes, k), getattr(alone, k), rtol=0, atol=1e-10)
