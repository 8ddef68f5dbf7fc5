"""Approximate models (robust/approximation.py): the model-error bound (Thm 5.1) holds on every
tested pair of models — low-rank truncations and arbitrary weight perturbations — measured with
equilibria solved to 1e-13; the truncation keeps rank ≤ r and ‖Ã‖_∞ ≤ κ."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.numerics import in_ball
from implicit_cvx.robust.approximation import low_rank_truncation, model_error_bound
from implicit_cvx.train.init import random_model

TOL = 1e-13


def measured(model, approx, U):
    X, Xa = model.equilibrium(U, tol=TOL), approx.equilibrium(U, tol=TOL)
    return np.abs(X - Xa), np.abs(model.output(X, U) - approx.output(Xa, U))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "tanh", "leaky_relu", "identity"]),
       n=st.integers(2, 12), frac=st.floats(0.1, 0.95))
def test_bound_holds_for_low_rank_truncations(seed, act, n, frac):
    model = random_model(n, 4, 3, kappa=0.9, seed=seed, activation=act, a_fraction=frac)
    U = np.random.default_rng(seed).uniform(-2, 2, (50, 4))
    for rank in sorted({1, max(1, n // 2), n}):
        approx, (L, R) = low_rank_truncation(model, rank)
        assert np.linalg.matrix_rank(approx.A) <= rank and in_ball(approx.A, 0.9)
        np.testing.assert_allclose(approx.A, L @ R.T)
        bound = model_error_bound(model, approx, U)
        dx, dy = measured(model, approx, U)
        assert np.all(dx <= bound.state) and np.all(dy <= bound.output)
        assert np.all(bound.state.max(axis=1) <= bound.state_inf)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "tanh", "sigmoid"]),
       scale=st.sampled_from([1e-8, 1e-3, 0.1, 1.0]))
def test_bound_holds_for_perturbations_of_every_weight(seed, act, scale):
    rng = np.random.default_rng(seed)
    model = random_model(6, 3, 2, kappa=0.8, seed=seed, activation=act, a_fraction=0.9)
    approx = random_model(6, 3, 2, kappa=0.8, seed=seed, activation=act, a_fraction=0.9)
    approx = approx.with_weights(**{k: getattr(model, k) + scale * rng.standard_normal(getattr(model, k).shape)
                                    for k in ("A", "B", "C", "D", "b_x", "b_y")})
    approx = approx.with_weights(A=approx.A * min(1.0, 0.8 / np.abs(approx.A).sum(axis=1).max()))
    U = rng.uniform(-1, 1, (40, 3))
    bound = model_error_bound(model, approx, U)
    dx, dy = measured(model, approx, U)
    assert np.all(dx <= bound.state) and np.all(dy <= bound.output)


def test_identical_models_get_a_bound_at_rounding_level():
    model = random_model(10, 4, 3, kappa=0.9, seed=1)
    U = np.random.default_rng(0).uniform(-1, 1, (20, 4))
    bound = model_error_bound(model, model.copy(), U)
    assert bound.state.max() < 1e-11 and bound.output.max() < 1e-11


def test_the_bound_is_not_loose_by_orders_of_magnitude():
    """A regression guard for usefulness: on random ReLU models the state bound stays within 10×
    of the worst measured error of a rank-r truncation."""
    model = random_model(20, 5, 3, kappa=0.9, seed=0)
    U = np.random.default_rng(0).uniform(-1, 1, (300, 5))
    for rank in (2, 10):
        approx, _ = low_rank_truncation(model, rank)
        dx, _ = measured(model, approx, U)
        assert model_error_bound(model, approx, U).state.max() <= 10 * dx.max()


def test_bad_inputs_are_named():
    model = random_model(5, 3, 2, seed=0)
    with pytest.raises(ValueError, match="rank must be"):
        low_rank_truncation(model, 0)
    with pytest.raises(ValueError, match="same numbers of states"):
        model_error_bound(model, random_model(6, 3, 2, seed=0), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="share the activation"):
        model_error_bound(model, random_model(5, 3, 2, seed=0, activation="tanh"), np.zeros((1, 3)))
