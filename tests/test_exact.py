"""Exact verification: the mixed-integer program's optimum equals the worst case found by
enumerating every activation pattern (one LP each) and a dense grid; each sample ends certified,
falsified with a checked counterexample, or unknown when time runs out."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog
from test_bounds import random_model

from implicit_cvx.robust import (
    certify,
    input_box,
    margin_lower_bounds,
    margin_range,
    margin_rows,
    tighten,
)
from implicit_cvx.robust.certify import _boxes

LEAKY = {"name": "leaky_relu", "alpha": 0.2}


def _pattern_minimum(model, lo, hi, gx, gu, gb, beta):
    """min gxᵀx + guᵀu + gb over the equilibria of inputs in [lo, hi], by brute force: for each
    activation pattern S (slope 1 on S, β elsewhere) the equilibrium x = Λ(Ax + Bu + b) is
    x = (I − ΛA)⁻¹Λ(Bu + b), affine in u, valid where z = Ax + Bu + b has the pattern's signs;
    one LP in u per pattern."""
    n = model.n_states
    best = np.inf
    for pattern in itertools.product((0.0, 1.0), repeat=n):
        on = np.array(pattern, dtype=bool)
        lam = np.where(on, 1.0, beta)
        R = np.linalg.solve(np.eye(n) - lam[:, None] * model.A, np.diag(lam))
        M, v = R @ model.B, R @ model.b_x  # x = M u + v
        Zu, zc = model.A @ M + model.B, model.A @ v + model.b_x  # z = Zu u + zc
        sign = np.where(on, -1.0, 1.0)  # on: z ≥ 0 ⇔ −z ≤ 0; off: z ≤ 0
        res = linprog(gx @ M + gu, A_ub=sign[:, None] * Zu, b_ub=-sign * zc,
                      bounds=list(zip(lo, hi, strict=True)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + gx @ v + gb)
    return best


@pytest.mark.parametrize(("seed", "activation", "beta"), [(0, "relu", 0.0), (1, "relu", 0.0), (3, LEAKY, 0.2)])
def test_exact_margin_equals_the_activation_pattern_enumeration(seed, activation, beta):
    model = random_model(seed, 5, 2, 3, kappa=0.9, activation=activation, spread=0.5)
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, size=(2, 2))
    y = model.predict(U).argmax(axis=1)
    eps = 0.5
    boxes = tighten(model, _boxes(model, U, eps, "interval", None))
    Gx, Gu, gb, skip = margin_rows(model, y)
    lo, hi = input_box(U, eps)
    t = np.linspace(0, 1, 101)
    grid = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    compared = 0
    for i in range(len(U)):
        G = lo[i] + grid * (hi[i] - lo[i])
        X = model.equilibrium(G, tol=1e-13)
        for j in np.flatnonzero(~skip[i]):
            out = margin_range(model, boxes, i, Gx[i, j], Gu[i, j], gb[i, j])
            ref = _pattern_minimum(model, lo[i], hi[i], Gx[i, j], Gu[i, j], gb[i, j], beta)
            assert out.finished
            assert out.lower <= ref + 1e-9
            assert abs(out.value - ref) <= 1e-6 and abs(out.lower - ref) <= 1e-6
            assert (X @ Gx[i, j] + G @ Gu[i, j] + gb[i, j]).min() >= ref - 1e-9  # the grid agrees
            compared += 1
    assert compared == 4


def test_exact_bounds_are_the_tightest_and_sound():
    model = random_model(5, 6, 3, 3)
    rng = np.random.default_rng(5)
    U = rng.uniform(-1, 1, size=(3, 3))
    y = model.predict(U).argmax(axis=1)
    lp = margin_lower_bounds(model, U, y, 0.3, "lp")
    ex = margin_lower_bounds(model, U, y, 0.3, "exact")
    assert np.all(ex >= lp - 1e-9) and np.any(ex > lp + 1e-3)
    lo, hi = input_box(U, 0.3)
    for i in range(len(U)):
        P = lo[i] + rng.uniform(size=(2000, 3)) * (hi[i] - lo[i])
        Y = model.predict(P, tol=1e-13)
        margins = Y[:, y[i]][:, None] - Y
        finite = np.isfinite(ex[i])
        assert np.all(margins[:, finite] >= ex[i, finite] - 1e-9)


def test_certify_exact_decides_every_sample_with_checked_counterexamples():
    model = random_model(6, 8, 3, 4, kappa=0.9)
    rng = np.random.default_rng(6)
    U = rng.uniform(-1, 1, size=(30, 3))
    y = model.predict(U).argmax(axis=1)
    y[:3] = (y[:3] + 1) % 4  # three clean errors
    eps = [0.05, 0.2]
    res = certify(model, U, y, eps, "exact")
    lp = certify(model, U, y, eps, "lp")
    assert res.falsified is not None and lp.falsified is None and lp.unknown is None
    for k, e in enumerate(eps):
        assert res.unknown[e] == 0.0
        assert res.certified_accuracy[e] + res.falsified[e] == pytest.approx(1.0)
        assert res.certified_accuracy[e] >= lp.certified_accuracy[e]
        assert set(np.flatnonzero(lp.certified[:, k])) <= set(np.flatnonzero(res.certified[:, k]))
        falsified = np.flatnonzero(res.status[:, k] == "falsified")
        assert set(range(3)) <= set(falsified) and 0.0 < res.falsified[e] < 1.0
        for i in falsified[falsified >= 3]:  # a counterexample inside the ball, label changed
            u = res.counterexamples[i, k]
            assert np.all(np.abs(u - U[i]) <= e)
            logits = model.predict(u[None], tol=1e-13)[0]
            assert logits[y[i]] <= np.delete(logits, y[i]).max()
    assert np.all(res.certified[:, 1] <= res.certified[:, 0])
    assert np.all((res.status[:, 0] == "falsified") <= (res.status[:, 1] == "falsified"))


def test_out_of_time_samples_are_unknown():
    model = random_model(8, 8, 3, 3)
    U = np.random.default_rng(8).uniform(-1, 1, size=(6, 3))
    y = model.predict(U).argmax(axis=1)
    res = certify(model, U, y, [0.4], "exact", time_limit=0.0)
    undecided = ~res.certified[:, 0]
    assert undecided.any() and np.all(res.status[undecided, 0] == "unknown")
    assert res.unknown[0.4] == pytest.approx(undecided.mean())
    assert np.all(np.isnan(res.counterexamples))


def test_exact_refuses_smooth_activations():
    model = random_model(9, 4, 2, 2, activation="tanh")
    with pytest.raises(ValueError, match="relu"):
        certify(model, np.zeros((1, 2)), [0], [0.5], "exact")
