"""Attack protocol: k, fraction validation, rankings, success-rate definition, PGD; one-logit models and per-feature domains."""

import numpy as np
import pytest
from test_bounds import explicit_inverse, random_model

from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust import (
    attack_k,
    gradient_attack,
    margin_lower_bounds,
    pgd_attack,
    sensitivity_attack,
)


def test_k_is_max_one_round_fraction_times_p():
    assert attack_k(0.001, 784) == 1
    assert attack_k(0.01, 784) == 8
    assert attack_k(0.1, 784) == 78
    assert attack_k(0.3, 784) == 235
    assert attack_k(1.0, 784) == 784
    assert attack_k(0.5, 3) == 2  # 1.5 rounds up
    for bad in (0, -0.1, 1.5, float("nan"), "ten"):
        with pytest.raises(ValueError, match="fraction"):
            attack_k(bad, 10)


def _independent_success(model, U, y, U_adv):
    Y, Ya = model.predict(U, tol=1e-13), model.predict(U_adv, tol=1e-13)
    M = Y[np.arange(len(y)), y][:, None] - Y
    M[np.arange(len(y)), y] = np.inf
    correct = M.min(axis=1) > 0
    changed = correct & (Ya.argmax(axis=1) != Y.argmax(axis=1))
    return correct, changed, changed.sum() / correct.sum()


def test_sensitivity_attack_perturbs_the_top_columns_of_S():
    model = random_model(0, 6, 8, 3)
    rng = np.random.default_rng(0)
    U = rng.uniform(0, 1, size=(40, 8))
    y = rng.integers(0, 3, size=40)  # many misclassified samples: they must not count
    res = sensitivity_attack(model, U, y, fraction=0.25, domain=(0, 1), rng=1)
    S = np.abs(model.C) @ explicit_inverse(model) @ np.abs(model.B) + np.abs(model.D)
    assert res.k == 2 and res.kind == "sensitivity" and res.fraction == 0.25
    assert set(res.indices.tolist()) == set(np.argsort(-S.sum(axis=0))[:2].tolist())
    untouched = np.setdiff1d(np.arange(8), res.indices)
    np.testing.assert_array_equal(res.U_adv[:, untouched], U[:, untouched])
    assert np.all((res.U_adv >= 0) & (res.U_adv <= 1))
    assert np.all(res.U_adv[:, res.indices] != U[:, res.indices])
    correct, changed, rate = _independent_success(model, U, y, res.U_adv)
    np.testing.assert_array_equal(res.correct, correct)
    np.testing.assert_array_equal(res.changed, changed)
    assert 0 < res.n_correct < 40 and res.success_rate == pytest.approx(rate)
    again = sensitivity_attack(model, U, y, fraction=0.25, domain=(0, 1), rng=1)
    np.testing.assert_array_equal(again.U_adv, res.U_adv)


def _ce_gradient_fd(model, u, label, h=1e-6):
    def loss(v):
        z = model.predict(v[None, :], tol=1e-14)[0]
        return np.log(np.exp(z - z.max()).sum()) + z.max() - z[label]

    return np.array([(loss(u + h * e) - loss(u - h * e)) / (2 * h) for e in np.eye(u.size)])


def test_gradient_attack_ranks_inputs_by_the_loss_gradient():
    model = random_model(2, 6, 7, 3, activation="tanh")
    rng = np.random.default_rng(2)
    U = rng.uniform(0, 1, size=(4, 7))
    y = model.predict(U).argmax(axis=1)
    res = gradient_attack(model, U, y, fraction=3 / 7, domain=(0, 1), rng=0)
    assert res.k == 3 and res.indices.shape == (4, 3)
    for i in range(4):
        g = np.abs(_ce_gradient_fd(model, U[i], y[i]))
        assert set(res.indices[i].tolist()) == set(np.argsort(-g)[:3].tolist())
        untouched = np.setdiff1d(np.arange(7), res.indices[i])
        np.testing.assert_array_equal(res.U_adv[i, untouched], U[i, untouched])
    assert res.success_rate == pytest.approx(_independent_success(model, U, y, res.U_adv)[2])


def test_pgd_reaches_the_exact_worst_case_of_a_linear_model():
    """φ = identity, A = 0: ŷ = Wu + c with W = CB + D; the worst margin over the ε-ball is
    min_j m_j − ε‖w_y − w_j‖₁, which PGD (margin loss) attains and the LP bound equals."""
    rng = np.random.default_rng(4)
    B, C, D = rng.normal(size=(5, 4)), rng.normal(size=(3, 5)), rng.normal(size=(3, 4))
    model = ImplicitModel(np.zeros((5, 5)), B, C, D, rng.normal(size=5), rng.normal(size=3),
                          activation="identity")
    U = rng.uniform(-1, 1, size=(6, 4))
    y = model.predict(U).argmax(axis=1)
    eps = 0.05
    W = C @ B + D
    Y = model.predict(U)
    exact = np.array([min(Y[i, y[i]] - Y[i, j] - eps * np.abs(W[y[i]] - W[j]).sum()
                          for j in range(3) if j != y[i]) for i in range(6)])
    res = pgd_attack(model, U, y, eps, steps=20, loss="margin", rng=0)
    np.testing.assert_allclose(res.adversarial_margins, exact, atol=1e-9)
    lp = margin_lower_bounds(model, U, y, eps, "lp").min(axis=1)
    assert np.all(lp <= exact + 1e-9)
    np.testing.assert_allclose(lp, exact, atol=1e-6)


def test_pgd_stays_in_the_clipped_ball_and_counts_successes():
    model = random_model(3, 6, 5, 3)
    rng = np.random.default_rng(3)
    U = rng.uniform(0, 1, size=(30, 5))
    y = model.predict(U).argmax(axis=1)
    y[:5] = (y[:5] + 1) % 3  # misclassified: never counted
    res = pgd_attack(model, U, y, eps=0.3, steps=10, domain=(0, 1), rng=0)
    assert np.all(np.abs(res.U_adv - U) <= 0.3 + 1e-12)
    assert np.all((res.U_adv >= 0) & (res.U_adv <= 1))
    assert not res.changed[:5].any() and res.n_correct == 25
    assert res.success_rate == pytest.approx(_independent_success(model, U, y, res.U_adv)[2])
    zero = pgd_attack(model, U, y, eps=0.0, steps=3, domain=(0, 1), rng=0)
    assert zero.success_rate == 0.0
    np.testing.assert_array_equal(zero.U_adv, U)


def test_attack_arguments_are_validated():
    model = random_model(0, 3, 4, 2)
    U, y = np.full((2, 4), 0.5), np.array([0, 1])
    with pytest.raises(ValueError, match="fraction"):
        sensitivity_attack(model, U, y, fraction=0.0)
    with pytest.raises(ValueError, match="domain"):
        sensitivity_attack(model, U, y, fraction=0.5, domain=(1, 0))
    with pytest.raises(ValueError, match="loss"):
        pgd_attack(model, U, y, eps=0.1, loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        pgd_attack(model, U, y, eps=0.1, steps=0)


def test_one_logit_attacks_flip_the_sign_and_count_like_a_two_logit_twin():
    """A one-output model (class 1 iff ŷ > 0) attacked by PGD and the gradient attack behaves as
    the two-output model with logits (0, ŷ), whose cross-entropy gradient is the same."""
    one = random_model(5, 6, 4, 1, activation="tanh")
    two = one.with_weights(C=np.vstack([np.zeros(6), one.C]), D=np.vstack([np.zeros(4), one.D]),
                           b_y=np.array([0.0, one.b_y[0]]))
    rng = np.random.default_rng(5)
    U = rng.uniform(0, 1, size=(40, 4))
    y = (one.predict(U)[:, 0] > 0).astype(int)
    for attack in (lambda m: pgd_attack(m, U, y, eps=0.2, steps=15, domain=(0, 1), rng=1),
                   lambda m: gradient_attack(m, U, y, fraction=0.5, domain=(0, 1), rng=1)):
        a, b = attack(one), attack(two)
        np.testing.assert_allclose(a.U_adv, b.U_adv, atol=1e-9)
        np.testing.assert_array_equal(a.changed, b.changed)
        np.testing.assert_allclose(a.adversarial_margins, b.adversarial_margins, atol=1e-9)
    assert a.n_correct == 40
    flipped = (one.predict(b.U_adv)[:, 0] > 0).astype(int) != y
    np.testing.assert_array_equal(b.changed, flipped)


def test_pgd_with_per_feature_radii_and_domains():
    model = random_model(6, 5, 3, 3)
    rng = np.random.default_rng(6)
    U = rng.uniform(0, 1, size=(20, 3))
    y = model.predict(U).argmax(axis=1)
    eps = np.array([0.3, 0.0, 0.1])
    domain = ([0.0, -np.inf, 0.2], [1.0, np.inf, 0.9])
    U[:, 2] = np.clip(U[:, 2], 0.2, 0.9)
    res = pgd_attack(model, U, y, eps=eps, steps=10, domain=domain, rng=0)
    assert np.all(np.abs(res.U_adv - U) <= eps)
    np.testing.assert_array_equal(res.U_adv[:, 1], U[:, 1])
    assert np.all((res.U_adv[:, 0] >= 0) & (res.U_adv[:, 0] <= 1))
    assert np.all((res.U_adv[:, 2] >= 0.2) & (res.U_adv[:, 2] <= 0.9))
    assert res.eps == eps.tolist()
