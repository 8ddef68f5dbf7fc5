"""Sensitivity and perturbation bounds (paper §4) against explicit inverses, exact rational
arithmetic and brute-force sampling of equilibria."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import (
    lipschitz_bound,
    residual_widening,
    sensitivity_matrix,
    sparse_perturbation_bound,
    state_bounds,
)
from implicit_cvx.robust.bounds import resolvent_upper

SETTINGS = settings(deadline=None, derandomize=True, max_examples=15)
ACTS = ["relu", "tanh"]


def random_model(seed, n, p, q, kappa=0.8, activation="relu", spread=0.0):
    """‖A‖_∞ = kappa, then A ← diag(s) A diag(s)⁻¹ with log s ~ N(0, spread²): λ_pf(|A|) ≤ kappa
    is unchanged while ‖A‖_∞ may exceed 1."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    s = np.exp(spread * rng.normal(size=n))
    A = A * s[:, None] / s[None, :]
    return ImplicitModel(A, rng.normal(size=(n, p)), rng.normal(size=(q, n)),
                         0.3 * rng.normal(size=(q, p)), 0.3 * rng.normal(size=n),
                         rng.normal(size=q), activation)


def explicit_inverse(model):
    n = model.n_states
    return np.linalg.inv(np.eye(n) - np.abs(model.A))


def states(model, U):
    return model.equilibrium(U, tol=1e-13)


sizes = st.tuples(st.integers(0, 10_000), st.integers(1, 8), st.integers(1, 5), st.integers(1, 4))


@SETTINGS
@given(sizes, st.floats(0.05, 0.95), st.sampled_from([0.0, 2.0]))
def test_sensitivity_matrix_matches_explicit_inverse(dims, kappa, spread):
    model = random_model(*dims, kappa=kappa, spread=spread)
    ref = np.abs(model.C) @ explicit_inverse(model) @ np.abs(model.B) + np.abs(model.D)
    S = sensitivity_matrix(model)
    assert S.shape == ref.shape
    assert np.all(S >= ref - 1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(S, ref, rtol=1e-8, atol=1e-12)


def test_resolvent_upper_is_verified_in_exact_arithmetic():
    rng = np.random.default_rng(3)
    M = np.abs(rng.normal(size=(4, 4)))
    M *= 0.97 / M.sum(axis=1, keepdims=True)
    R = np.abs(rng.normal(size=(4, 2)))
    R[1] = 0.0
    Y = resolvent_upper(M, R)
    F = [[Fraction(v) for v in row] for row in M]
    for col in range(R.shape[1]):
        y = [Fraction(v) for v in Y[:, col]]
        for i in range(4):  # (I − M)Y ≥ R exactly, hence Y ≥ (I − M)⁻¹R
            assert y[i] - sum(F[i][j] * y[j] for j in range(4)) >= Fraction(R[i, col])
    np.testing.assert_allclose(Y, np.linalg.solve(np.eye(4) - M, R), rtol=1e-9)


def test_sparse_weights_give_the_dense_results():
    model = random_model(1, 7, 4, 3)
    sparse = model.with_weights(**{k: sp.csr_matrix(getattr(model, k)) for k in "ABCD"})
    np.testing.assert_allclose(sensitivity_matrix(sparse), sensitivity_matrix(model), rtol=1e-12)
    np.testing.assert_allclose(state_bounds(sparse, 0.1), state_bounds(model, 0.1), rtol=1e-12)
    assert sparse_perturbation_bound(sparse, 2, 0.3).value == pytest.approx(
        sparse_perturbation_bound(model, 2, 0.3).value, rel=1e-12)


def test_pf_at_least_one_is_refused():
    model = random_model(0, 4, 2, 2)
    bad = model.with_weights(A=np.eye(4) * 1.01)
    for fn in (sensitivity_matrix, lipschitz_bound, lambda m: state_bounds(m, 0.1),
               lambda m: residual_widening(m, 1e-9)):
        with pytest.raises(ValueError, match="λ_pf"):
            fn(bad)


@SETTINGS
@given(sizes, st.sampled_from(ACTS), st.floats(0.01, 1.0))
def test_state_bounds_contain_sampled_equilibria(dims, activation, scale):
    model = random_model(*dims, activation=activation)
    rng = np.random.default_rng(dims[0])
    u0 = rng.normal(size=(1, model.n_inputs))
    sigma = scale * rng.uniform(0.0, 1.0, size=model.n_inputs)
    U = u0 + sigma * rng.uniform(-1, 1, size=(200, model.n_inputs))
    U[:20] = u0 + sigma * rng.choice([-1.0, 1.0], size=(20, model.n_inputs))  # corners
    dev = np.abs(states(model, U) - states(model, u0))
    bound = state_bounds(model, sigma)
    assert np.all(dev <= bound + 1e-11)
    np.testing.assert_allclose(bound, explicit_inverse(model) @ np.abs(model.B) @ sigma, rtol=1e-8, atol=1e-14)
    per_sample = state_bounds(model, np.vstack([sigma, 2 * sigma]))
    np.testing.assert_allclose(per_sample[1], 2 * bound, rtol=1e-8)


def test_state_bounds_are_attained_by_a_nonnegative_linear_model():
    """φ = identity, A ≥ 0, B ≥ 0: x(u₀ + σ) − x(u₀) = (I − A)⁻¹Bσ exactly."""
    rng = np.random.default_rng(5)
    A = np.abs(rng.normal(size=(5, 5)))
    A *= 0.6 / A.sum(axis=1, keepdims=True)
    model = ImplicitModel(A, np.abs(rng.normal(size=(5, 3))), np.ones((1, 5)), np.zeros((1, 3)),
                          activation="identity")
    u0, sigma = rng.normal(size=(1, 3)), np.array([0.1, 0.2, 0.05])
    dev = states(model, u0 + sigma) - states(model, u0)
    np.testing.assert_allclose(dev[0], state_bounds(model, sigma), rtol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from(ACTS))
def test_residual_widening_contains_the_true_equilibrium(dims, activation):
    model = random_model(*dims, activation=activation)
    rng = np.random.default_rng(dims[0])
    U = rng.normal(size=(6, model.n_inputs))
    X = states(model, U)
    X_hat = X + 1e-3 * rng.normal(size=X.shape)  # a poorly converged "solution"
    Z = X_hat @ model.A.T + U @ model.B.T + model.b_x
    r = np.abs(X_hat - model.activation.value(Z)).max(axis=1)
    W = residual_widening(model, r)
    assert W.shape == X.shape
    assert np.all(np.abs(X_hat - X) <= W * (1 + 1e-9))  # tight when φ is locally linear
    np.testing.assert_allclose(residual_widening(model, 1.0), explicit_inverse(model).sum(axis=1), rtol=1e-8)


def _brute_delta(model, k, sigma):
    """max_i s_k(σ_u ∘ |B|ᵀe_i) by enumerating every k-subset of inputs."""
    W = np.abs(model.B) * sigma
    return max(W[:, list(c)].sum(axis=1).max() for c in itertools.combinations(range(W.shape[1]), k))


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 5), st.sampled_from(ACTS))
def test_sparse_perturbation_bound_is_sound(seed, n, p, activation):
    model = random_model(seed, n, p, 2, activation=activation)
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, p + 1))
    sigma = rng.uniform(0.1, 1.0, size=p)
    bound = sparse_perturbation_bound(model, k, sigma)
    assert bound.delta == pytest.approx(_brute_delta(model, k, sigma), rel=1e-12)
    assert bound.componentwise.max() <= bound.scalar * (1 + 1e-9)
    u0 = rng.normal(size=(1, p))
    U = np.repeat(u0, 300, axis=0)
    for row in U:
        idx = rng.choice(p, size=k, replace=False)
        row[idx] += sigma[idx] * rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 1.0, size=k)
    dev = np.abs(states(model, U) - states(model, u0))
    assert np.all(dev <= bound.componentwise + 1e-11)
    assert dev.max() <= bound.value + 1e-11


def test_sparse_bound_with_all_inputs_is_the_state_bound():
    model = random_model(2, 6, 4, 2)
    sigma = np.array([0.1, 0.3, 0.2, 0.05])
    np.testing.assert_allclose(sparse_perturbation_bound(model, 4, sigma).componentwise,
                               state_bounds(model, sigma), rtol=1e-12)
    for k in (0, 5, 1.5):
        with pytest.raises(ValueError, match="k"):
            sparse_perturbation_bound(model, k, sigma)


@SETTINGS
@given(sizes, st.sampled_from(ACTS), st.floats(0.1, 0.95))
def test_lipschitz_bounds_are_ordered_and_sound(dims, activation, kappa):
    model = random_model(*dims, kappa=kappa, activation=activation)
    L = lipschitz_bound(model)
    assert L.sensitivity_bound <= L.rescaled_bound * (1 + 1e-9)
    assert L.sensitivity_bound <= L.inf_norm_bound * (1 + 1e-9)
    absA, absB = np.abs(model.A), np.abs(model.B)  # ‖S‖_∞ from a dense inverse, independently
    S = np.abs(model.C) @ np.linalg.inv(np.eye(model.n_states) - absA) @ absB + np.abs(model.D)
    exact = S.sum(axis=1).max()
    assert exact <= L.sensitivity_bound <= exact * (1 + 1e-9) + 1e-15
    rng = np.random.default_rng(dims[0])
    U0 = rng.normal(size=(50, model.n_inputs))
    U1 = U0 + rng.uniform(-0.3, 0.3, size=U0.shape)
    ratio = np.abs(model.predict(U1, tol=1e-13) - model.predict(U0, tol=1e-13)).max(axis=1) / np.abs(U1 - U0).max(axis=1)
    assert ratio.max() <= L.value * (1 + 1e-9)


def test_rescaling_rescues_the_scalar_lipschitz_bound():
    """‖A‖_∞ ≥ 1 but λ_pf(|A|) < 1: eq. 4.8 fails on A itself but holds after rescaling."""
    model = random_model(4, 6, 3, 2, kappa=0.5, spread=2.0)
    assert np.abs(model.A).sum(axis=1).max() > 1
    L = lipschitz_bound(model)
    assert L.inf_norm_bound == np.inf
    assert np.isfinite(L.rescaled_bound) and L.sensitivity_bound <= L.rescaled_bound
