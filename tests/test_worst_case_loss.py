"""Certified worst-case loss (robust/loss.py): an upper bound of the loss at every input of the
ball, checked against dense sampling, box corners and PGD on small random models."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import random_model

from implicit_cvx.numerics import cross_entropy, hinge
from implicit_cvx.robust import pgd_attack
from implicit_cvx.robust.certify import input_box
from implicit_cvx.robust.loss import worst_case_loss, worst_case_loss_bounds

LOSS = {"cross_entropy": cross_entropy, "hinge": hinge}


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), q=st.integers(2, 6), scale=st.sampled_from([1e-3, 1.0, 30.0, 800.0]),
       loss=st.sampled_from(sorted(LOSS)))
def test_bound_from_margins_dominates_every_logit_vector_with_larger_margins(seed, q, scale, loss):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, q, size=20)
    lower = scale * rng.normal(size=(20, q))
    bound = worst_case_loss(lower, y, loss)
    for _ in range(5):  # logits whose margins ŷ_y − ŷ_j are ≥ the lower bounds
        margins = lower + np.abs(scale * rng.normal(size=lower.shape)) * rng.integers(0, 2, size=lower.shape)
        margins[np.arange(20), y] = 0.0
        Y = -margins  # ŷ_y = 0, ŷ_j = −m_j
        assert np.all(LOSS[loss](Y, y) <= bound)
    tight = -lower.copy()
    tight[np.arange(20), y] = 0.0  # margins exactly at their bounds: the bound is attained
    np.testing.assert_allclose(bound, LOSS[loss](tight, y), rtol=1e-12, atol=1e-12 * scale)


def _ball_losses(model, U, y, eps, domain, loss, rng):
    """The largest loss seen per sample: uniform points, box corners, PGD (ce and margin)."""
    lo, hi = input_box(U, eps, domain)
    worst = LOSS[loss](model.predict(U, tol=1e-13), y)
    for k in range(60):
        t = rng.uniform(size=U.shape)
        if k % 2:
            t = np.round(t)
        V = lo + t * (hi - lo)
        worst = np.maximum(worst, LOSS[loss](model.predict(V, tol=1e-13), y))
    for kind in ("ce", "margin"):
        adv = pgd_attack(model, U, y, eps, steps=30, domain=domain, rng=rng, loss=kind).U_adv
        worst = np.maximum(worst, LOSS[loss](model.predict(adv, tol=1e-13), y))
    return worst


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.0, 0.05, 0.3]),
       method=st.sampled_from(["interval", "lp"]), loss=st.sampled_from(sorted(LOSS)))
def test_worst_case_loss_is_sound_against_sampling_and_pgd(seed, eps, method, loss):
    model = random_model(seed, 5, 3, 3, activation="relu")
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.2, 0.8, (6, 3))
    y = model.predict(U).argmax(axis=1)
    y[::3] = (y[::3] + 1) % 3  # some misclassified samples too
    res = worst_case_loss_bounds(model, U, y, eps, loss=loss, method=method, domain=(0.0, 1.0))
    seen = _ball_losses(model, U, y, eps, (0.0, 1.0), loss, rng)
    assert np.all(seen <= res.per_sample + 1e-9)  # seen: float64 equilibria, ~1e-13
    assert res.mean >= res.per_sample.mean() and np.all(res.clean <= res.per_sample + 1e-9)
    if eps == 0:  # a point ball: the bound equals the loss up to the equilibrium residual
        np.testing.assert_allclose(res.per_sample, res.clean, atol=1e-8)


def test_lp_is_never_looser_than_interval():
    model = random_model(3, 6, 4, 3)
    U = np.random.default_rng(0).uniform(0, 1, (5, 4))
    y = model.predict(U).argmax(axis=1)
    a = worst_case_loss_bounds(model, U, y, 0.1, method="interval", domain=(0, 1))
    b = worst_case_loss_bounds(model, U, y, 0.1, method="lp", domain=(0, 1))
    assert np.all(b.per_sample <= a.per_sample * (1 + 1e-12)) and b.method == "lp"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="loss must be"):
        worst_case_loss(np.zeros((2, 3)), [0, 1], "squared")
    with pytest.raises(ValueError, match="margin_lower must be"):
        worst_case_loss(np.zeros((2, 1)), [0, 1])
    assert np.isinf(worst_case_loss(np.array([[np.inf, -np.inf]]), [0])[0])
