"""Sparse (k inputs changed) certificates and attack (robust/sparse.py): sound against exhaustive
enumeration of supports and corners plus dense sampling, never looser than the closed-form bound
of bounds.sparse_perturbation_bound, and the certificate equals an independent cvxpy LP optimum."""

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import random_model

from implicit_cvx.robust.sparse import (
    hull_min,
    sparse_attack,
    sparse_boxes,
    sparse_closed_form_margins,
    sparse_margin_lower_bounds,
)

DOMAIN = (0.0, 1.0)


def _true_margins(model, V, c):
    Y = model.predict(V, tol=1e-13)
    M = Y[:, [c]] - Y
    M[:, c] = np.inf
    return M


def _sparse_points(u, k, eps, rng, per_support=6):
    """Every support of size ≤ k with every corner of the clipped range, plus uniform points."""
    lo, hi = np.maximum(u - eps, DOMAIN[0]), np.minimum(u + eps, DOMAIN[1])
    pts = [u]
    for size in range(1, k + 1):
        for S in itertools.combinations(range(u.size), size):
            S = list(S)
            for corner in itertools.product(*[(lo[j], hi[j]) for j in S]):
                v = u.copy()
                v[S] = corner
                pts.append(v)
            for _ in range(per_support):
                v = u.copy()
                v[S] = rng.uniform(lo[S], hi[S])
                pts.append(v)
    return np.array(pts)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3), eps=st.sampled_from([0.05, 0.3, 1.0]),
       act=st.sampled_from(["relu", {"name": "leaky_relu", "alpha": 0.1}, "tanh"]))
def test_sparse_bounds_are_sound_and_never_looser_than_closed_form(seed, k, eps, act):
    model = random_model(seed, 5, 4, 3, activation=act)
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.0, 1.0, (4, 4))
    y = model.predict(U).argmax(axis=1)
    sm = sparse_margin_lower_bounds(model, U, y, k, eps, DOMAIN)
    closed = sparse_closed_form_margins(model, U, y, k, eps)
    assert np.all(sm.lower >= sm.box) and np.all(sm.box >= closed)
    for i in range(len(U)):
        seen = _true_margins(model, _sparse_points(U[i], k, eps, rng), y[i]).min(axis=0)
        assert np.all(seen >= sm.lower[i] - 1e-9), (i, seen, sm.lower[i])  # seen: float64, ~1e-13
    att = sparse_attack(model, U, y, k, eps, DOMAIN, margins=sm)
    changed = np.abs(att.U_adv - U) > 0
    assert np.all(changed.sum(axis=1) <= k)
    assert np.all(np.abs(att.U_adv - U) <= eps * (1 + 1e-12)) and np.all((att.U_adv >= 0) & (att.U_adv <= 1))
    worst = np.min(sm.lower, axis=1)
    assert np.all(att.adversarial_margins >= worst - 1e-9)  # an attack never beats a certificate
    assert not np.any(att.changed & (worst > 0))


def _cvxpy_sparse_lp(model, boxes, u, k, g_x, g_u, g_b, i):
    """The LP relaxation over sample i's boxes and the cardinality hull, built independently."""
    n, p = model.n_states, model.n_inputs
    x, z, d, t = cp.Variable(n), cp.Variable(n), cp.Variable(p), cp.Variable(p)
    a, b = u - boxes.ul[i], boxes.uu[i] - u
    zl, zu = boxes.zl[i], boxes.zu[i]
    s = np.where(zu > zl, (np.maximum(zu, 0) - np.maximum(zl, 0)) / np.where(zu > zl, zu - zl, 1), 0)
    c = np.maximum(np.maximum(zl, 0) - s * zl, np.maximum(zu, 0) - s * zu)
    cons = [z == model.A @ x + model.B @ (u + d) + model.b_x, x >= boxes.xl[i], x <= boxes.xu[i],
            z >= zl, z <= zu, x >= 0, x >= z, x <= cp.multiply(s, z) + c,
            d <= cp.multiply(b, t), -d <= cp.multiply(a, t), t >= 0, t <= 1, cp.sum(t) <= k]
    prob = cp.Problem(cp.Minimize(g_x @ x + g_u @ (u + d) + g_b), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return prob.value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certificate_equals_the_lp_optimum(seed):
    model = random_model(seed, 6, 5, 3)
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.1, 0.9, (2, 5))
    y = model.predict(U).argmax(axis=1)
    k, eps = 2, 0.3
    sm = sparse_margin_lower_bounds(model, U, y, k, eps, DOMAIN)
    boxes = sparse_boxes(model, U, k, eps, DOMAIN)
    for i in range(2):
        c = y[i]
        for j in range(3):
            if j == c:
                continue
            ref = _cvxpy_sparse_lp(model, boxes, U[i], k, model.C[c] - model.C[j], model.D[c] - model.D[j],
                                   model.b_y[c] - model.b_y[j], i)
            assert sm.lower[i, j] <= ref + 1e-7 * max(1, abs(ref))
            assert sm.lower[i, j] >= ref - 1e-6 * max(1, abs(ref))


def test_hull_minimum_equals_the_best_sparse_vertex():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, k = 6, int(rng.integers(1, 7))
        g, a, b = rng.normal(size=p), rng.uniform(0, 1, p), rng.uniform(0, 1, p)
        best = min(g[list(S)] @ np.where(g[list(S)] > 0, -a[list(S)], b[list(S)])
                   for size in range(k + 1) for S in itertools.combinations(range(p), size))
        assert hull_min(g, a, b, k) <= best <= hull_min(g, a, b, k) + 1e-12


def test_k_and_method_are_checked():
    model = random_model(0, 3, 2, 2)
    U = np.full((1, 2), 0.5)
    with pytest.raises(ValueError, match="k \\(the number of inputs"):
        sparse_margin_lower_bounds(model, U, [0], 3, 0.1)
    with pytest.raises(ValueError, match="'box' or 'lp'"):
        sparse_margin_lower_bounds(model, U, [0], 1, 0.1, method="sdp")
