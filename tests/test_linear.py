"""Linear bound propagation through the fixed point: equal to an independent CROWN on feed-forward
networks, sound for any slopes and multipliers (weak duality), sound and tighter than the interval
boxes on cyclic models, and optimized slopes that only improve the bounds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import random_model

from implicit_cvx.convert import from_layers
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import input_box, margin_lower_bounds, margin_rows, output_bounds
from implicit_cvx.robust import linear as lin
from implicit_cvx.robust.certify import _boxes

SETTINGS = settings(deadline=None, derandomize=True, max_examples=8)
LEAKY = {"name": "leaky_relu", "alpha": 0.1}


# ---- an independent CROWN (Zhang et al., 2018), plain numpy, layer by layer -----------------------
def _act(z, beta):
    return np.maximum(z, beta * z)


def _ibp(weights, biases, lo, hi, beta):
    """Interval bounds of every hidden pre-activation."""
    out = []
    for W, b in zip(weights[:-1], biases[:-1], strict=True):
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        zl, zu = lo @ Wp.T + hi @ Wn.T + b, hi @ Wp.T + lo @ Wn.T + b
        out.append((zl, zu))
        lo, hi = _act(zl, beta), _act(zu, beta)
    return out


def _backsub(weights, biases, bounds, Lam, const, lo, hi, beta):
    """Lower bound of Lam·h_K + const, h_K the post-activation of hidden layer K = len(bounds),
    over lo ≤ x ≤ hi: each activation is replaced by its lower linear bound where its coefficient
    is ≥ 0 (slope 1 if u ≥ −l else β, through 0) and by its upper chord where it is < 0, then the
    layer's affine map is folded in, down to the input (one sample; Lam (r, n_K))."""
    for k in range(len(bounds) - 1, -1, -1):
        l, u = bounds[k]
        active, inactive = l >= 0, u <= 0
        unstable = ~active & ~inactive
        width = np.where(unstable, u - l, 1.0)
        s = np.where(unstable, (u - beta * l) / width, np.where(active, 1.0, beta))
        t = np.where(unstable, beta * l - s * l, 0.0)
        a = np.where(unstable, np.where(u >= -l, 1.0, beta), np.where(active, 1.0, beta))
        slope = np.where(Lam >= 0, a, s)
        const = const + np.where(Lam >= 0, 0.0, Lam * t).sum(axis=1)
        Lam = Lam * slope
        const = const + Lam @ biases[k]
        Lam = Lam @ weights[k]
    return const + np.minimum(Lam * lo, Lam * hi).sum(axis=1)


def crown(weights, biases, lo, hi, spec, spec_const, beta=0.0):
    """CROWN lower bounds of spec·h_last + spec_const for one sample (lo, hi (p,)): intermediate
    bounds by CROWN itself layer by layer, each intersected with interval bound propagation."""
    ibp = _ibp(weights, biases, lo[None], hi[None], beta)
    bounds = []
    for k, W in enumerate(weights[:-1]):
        l_ibp, u_ibp = ibp[k][0][0], ibp[k][1][0]
        if k == 0:
            bounds.append((l_ibp, u_ibp))
            continue
        lower = _backsub(weights, biases, bounds, W, biases[k], lo, hi, beta)
        upper = -_backsub(weights, biases, bounds, -W, -biases[k], lo, hi, beta)
        bounds.append((np.maximum(lower, l_ibp), np.minimum(upper, u_ibp)))
    return _backsub(weights, biases, bounds, spec, spec_const, lo, hi, beta)


def _network(seed, dims):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(dims[k + 1], dims[k])) / np.sqrt(dims[k]) for k in range(len(dims) - 1)]
    biases = [0.3 * rng.normal(size=d) for d in dims[1:]]
    return weights, biases


@pytest.mark.parametrize(("dims", "activation", "beta", "eps"), [
    ([5, 12, 10, 8, 6, 4], "relu", 0.0, 0.05),
    ([5, 12, 10, 8, 6, 4], "relu", 0.0, 0.2),
    ([6, 10, 9, 7, 3], LEAKY, 0.1, 0.1),
])
def test_linear_equals_crown_on_feedforward_networks(dims, activation, beta, eps):
    """On a converted feed-forward network (strictly triangular A), every margin bound of
    "linear" equals CROWN to 1e-9."""
    weights, biases = _network(len(dims) + int(10 * eps), dims)
    model = from_layers(weights, biases, activation)
    rng = np.random.default_rng(1)
    U = rng.uniform(0, 1, size=(6, dims[0]))
    y = model.predict(U).argmax(axis=1)
    lo, hi = input_box(U, eps, (0.0, 1.0))
    mlb = margin_lower_bounds(model, U, y, eps, "linear", (0.0, 1.0))
    W, b = weights[-1], biases[-1]
    unstable = 0
    for i in range(len(U)):
        spec = W[y[i]] - W
        ref = crown(weights, biases, lo[i], hi[i], spec, b[y[i]] - b, beta)
        mask = np.arange(len(b)) != y[i]
        np.testing.assert_allclose(mlb[i, mask], ref[mask], rtol=0, atol=1e-9)
        l, u = _ibp(weights, biases, lo[i : i + 1], hi[i : i + 1], beta)[-1]
        unstable += int(np.sum((l < 0) & (u > 0)))
    assert unstable > 0  # the comparison exercised unstable neurons in the last hidden layer
    # and it is strictly tighter than the interval bounds somewhere
    assert np.any(mlb > margin_lower_bounds(model, U, y, eps, "interval", (0.0, 1.0)) + 1e-6)


# ---- weak duality: any slopes and any multipliers give a valid bound ----------------------------
def _sampled_equilibria(model, lo, hi, rng, count=200):
    """Inputs drawn in the box (a quarter of them at corners) with their equilibria (x, z)."""
    t = rng.uniform(size=(count,) + lo.shape)
    t[: count // 4] = np.round(t[: count // 4])
    P = lo + t * (hi - lo)
    X = model.equilibrium(P, tol=1e-13)
    Z = X @ model.A.T + P @ model.B.T + model.b_x
    return P, X, Z


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 4), st.floats(0.01, 0.6),
       st.sampled_from(["relu", LEAKY, "tanh", [("relu", 2), ("tanh", 4)]]), st.floats(0.0, 1.5))
def test_any_slopes_and_multipliers_give_a_valid_bound(seed, n, p, eps, activation, spread):
    """For random objectives, random multipliers ν and random lower slopes in [β, 1], the
    evaluated bound is below the objective at every sampled equilibrium — on cyclic models,
    including ones with ‖A‖_∞ > 1 (λ_pf(|A|) < 1 after a diagonal similarity)."""
    n = max(n, 2) if isinstance(activation, list) else n
    if isinstance(activation, list):
        activation = [("relu", 1), ("tanh", n - 1)]
    model = random_model(seed, n, p, 2, activation=activation, spread=spread)
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, size=(1, p))
    boxes = lin.tighten(model, _boxes(model, U, eps, "interval", None))
    rel = lin.relaxation(model, boxes)
    K = 6
    C, D, e = rng.normal(size=(1, K, n)), rng.normal(size=(1, K, p)), rng.normal(size=(1, K))
    N = rng.normal(size=(1, K, n)) * rng.choice([0.0, 1.0, 5.0], size=(1, K, 1))
    alpha = rel.floor[:, None, :] + rng.uniform(size=(1, K, n)) * (1 - rel.floor[:, None, :])
    lo = (np.where(rel.free[:, None, :], alpha, rel.lower_slope[:, None, :]), rel.lower_icpt[:, None, :])
    up = (rel.upper_slope[:, None, :], rel.upper_icpt[:, None, :])
    bound = lin._evaluate(model, boxes, lo, up, N, C, D, e)[0]
    P, X, Z = _sampled_equilibria(model, boxes.ul[0], boxes.uu[0], rng)
    assert np.all((Z >= boxes.zl - 1e-9) & (Z <= boxes.zu + 1e-9))  # tightened boxes are sound
    assert np.all((X >= boxes.xl - 1e-9) & (X <= boxes.xu + 1e-9))
    values = X @ C[0].T + P @ D[0].T + e[0]
    assert np.all(values >= bound - 1e-9)
    # the optimized multipliers too, and the slope optimization only improves on them
    plain = lin.linear_lower_bounds(model, boxes, C, D, e)[0]
    best = lin.optimize_slopes(model, boxes, C, D, e, iterations=8)[0]
    assert np.all(values >= best - 1e-9) and np.all(best >= plain)


def test_fixed_point_solver_matches_a_direct_solve():
    """With one slope per state (no sign dependence), W = C(I − ΛA)⁻¹ exactly, for the chord
    iteration on a cyclic A and the back-substitution on a triangular one."""
    rng = np.random.default_rng(0)
    for A, triangular in ((random_model(0, 7, 2, 2).A, False), (np.triu(rng.normal(size=(7, 7)), 1), True)):
        lam = rng.uniform(size=(3, 1, 7))
        solver = lin._Solver(A, lam[:, 0, :], triangular)
        C = rng.normal(size=(3, 5, 7))
        W = solver.solve(C, lam, lam)
        for s in range(3):
            ref = np.linalg.solve((np.eye(7) - lam[s, 0][:, None] * A).T, C[s].T).T
            np.testing.assert_allclose(W[s], ref, rtol=0, atol=1e-8)


def test_sign_dependent_fixed_point_holds():
    """The multipliers solve ν = Λ_w(c + Aᵀν) with the slope chosen by the sign of w."""
    model = random_model(4, 8, 3, 3, kappa=0.95)
    U = np.random.default_rng(4).uniform(-1, 1, size=(2, 3))
    boxes = _boxes(model, U, 0.3, "interval", None)
    rel = lin.relaxation(model, boxes)
    assert rel.free.any()
    C = np.random.default_rng(5).normal(size=(2, 4, 8))
    lo, up = rel.lower_slope[:, None, :], rel.upper_slope[:, None, :]
    W = lin._solver(model, rel, False).solve(C, lo, up)
    N = np.where(W >= 0, lo, up) * W
    np.testing.assert_allclose(W, C + N @ model.A, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", LEAKY])
def test_tightened_boxes_are_sound_and_inside_the_interval_boxes(activation):
    model = random_model(2, 10, 3, 3, kappa=0.9, activation=activation, spread=1.0)
    rng = np.random.default_rng(2)
    U = rng.uniform(-1, 1, size=(4, 3))
    interval = _boxes(model, U, 0.25, "interval", None)
    tight = lin.tighten(model, interval)
    for k in ("zl", "xl"):
        assert np.all(getattr(tight, k) >= getattr(interval, k))
    for k in ("zu", "xu"):
        assert np.all(getattr(tight, k) <= getattr(interval, k))
    assert np.sum(tight.zu - tight.zl) < 0.95 * np.sum(interval.zu - interval.zl)
    for i in range(len(U)):
        P, X, Z = _sampled_equilibria(model, interval.ul[i], interval.uu[i], rng, 400)
        assert np.all((Z >= tight.zl[i] - 1e-10) & (Z <= tight.zu[i] + 1e-10))
        assert np.all((X >= tight.xl[i] - 1e-10) & (X <= tight.xu[i] + 1e-10))


def test_linear_bounds_outputs_and_margins_soundly_on_a_cyclic_model():
    model = random_model(7, 12, 4, 3, kappa=0.95)
    rng = np.random.default_rng(7)
    U = rng.uniform(-1, 1, size=(3, 4))
    y = model.predict(U).argmax(axis=1)
    lower, upper = output_bounds(model, U, 0.1, "linear")
    il, iu = output_bounds(model, U, 0.1, "interval")
    assert np.all(lower >= il) and np.all(upper <= iu)
    mlb = margin_lower_bounds(model, U, y, 0.1, "linear")
    Gx, Gu, gb, skip = margin_rows(model, y)
    lo, hi = input_box(U, 0.1)
    for i in range(len(U)):
        P, X, _ = _sampled_equilibria(model, lo[i], hi[i], rng, 400)
        Y = X @ model.C.T + P @ model.D.T + model.b_y
        assert np.all(Y >= lower[i] - 1e-9) and np.all(Y <= upper[i] + 1e-9)
        margins = X @ Gx[i].T + P @ Gu[i].T + gb[i]
        assert np.all(margins[:, ~skip[i]] >= mlb[i, ~skip[i]] - 1e-9)


def test_models_beyond_the_perron_frobenius_condition_are_refused():
    A = np.array([[0.0, 1.2], [1.2, 0.0]])  # λ_pf(|A|) = 1.2: (I − |A|)⁻¹ is not nonnegative
    model = ImplicitModel(A, np.eye(2), np.eye(2), np.zeros((2, 2)), activation="tanh")
    with pytest.raises(ValueError, match="λ_pf"):
        margin_lower_bounds(model, np.zeros((1, 2)), [0], 0.1, "linear")
