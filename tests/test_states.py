"""Teacher states and rescaling into the κ-ball."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from implicit_cvx.convert import from_layers
from implicit_cvx.model import ImplicitModel
from implicit_cvx.train.states import rescale_into_ball, teacher_states
from implicit_cvx.wellposed import inf_norm


def _mlp(cls, hidden, seed=0, activation="relu"):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((60, 5))
    y = (U[:, 0] + U[:, 1] ** 2 > 0.5).astype(int) + (U[:, 2] > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = cls(hidden_layer_sizes=hidden, activation=activation, max_iter=200,
                  random_state=seed).fit(U, y if cls is MLPClassifier else y.astype(float))
    return est, U


def _forward(est, U):
    """Independent reference: sklearn's layers by hand; per-layer pre-activations and logits."""
    h, pre = U, []
    for W, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True):
        z = h @ W + b
        pre.append(z)
        h = np.maximum(z, 0)
    return pre, h @ est.coefs_[-1] + est.intercepts_[-1]


def test_states_of_sklearn_classifier_match_its_layers():
    est, U = _mlp(MLPClassifier, (7, 4))
    ts = teacher_states(est, U)
    pre, logits = _forward(est, U)
    np.testing.assert_allclose(ts.Z, np.hstack(pre[::-1]), atol=1e-12)  # x_L first
    np.testing.assert_allclose(ts.X, np.maximum(ts.Z, 0), atol=0)
    np.testing.assert_allclose(ts.Yhat, logits, atol=1e-12)
    np.testing.assert_array_equal(np.argmax(ts.Yhat, 1), est.predict(U))
    assert ts.rescaled is False and ts.U.shape == (60, 5)


def test_rescaling_preserves_predictions_and_enters_ball():
    est, U = _mlp(MLPRegressor, (9, 6, 5), seed=1)
    plain = teacher_states(est, U)
    assert inf_norm(plain.model.A) > 0.5
    ts = teacher_states(est, U, kappa=0.5)
    assert ts.rescaled
    assert inf_norm(ts.model.A) <= 0.5
    np.testing.assert_allclose(ts.Yhat, plain.Yhat, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ts.Yhat[:, 0], est.predict(U), atol=1e-9)
    # per-unit positive scalings: X_rescaled = X · diag(s), s > 0
    active = plain.X > 1e-8
    s = np.max(np.where(active, ts.X / np.where(active, plain.X, 1), 0), axis=0)
    assert np.all(s[active.any(axis=0)] > 0)
    np.testing.assert_allclose(ts.X, plain.X * s, atol=1e-9)
    np.testing.assert_allclose(ts.Z, ts.X @ ts.model.A.T + U @ ts.model.B.T + ts.model.b_x,
                               atol=1e-12)


def test_no_rescaling_inside_ball_keeps_model():
    rng = np.random.default_rng(0)
    model = from_layers([rng.standard_normal((4, 3)), 0.1 * rng.uniform(-1, 1, (3, 4)),
                         rng.standard_normal((2, 3))])
    same, changed = rescale_into_ball(model, 0.5)
    assert not changed and same is model
    ts = teacher_states(model, rng.standard_normal((6, 3)), kappa=0.5)
    assert not ts.rescaled
    np.testing.assert_array_equal(ts.model.A, model.A)


@settings(deadline=None, derandomize=True, max_examples=15)
@given(seed=st.integers(0, 10_000), kappa=st.floats(0.05, 0.99),
       act=st.sampled_from(["relu", {"name": "leaky_relu", "alpha": 0.2}]))
def test_rescaling_random_networks(seed, kappa, act):
    rng = np.random.default_rng(seed)
    sizes = [4, 6, 5, 3, 2]
    Ws = [3 * rng.standard_normal((o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [rng.standard_normal(o) for o in sizes[1:]]
    teacher = from_layers(Ws, bs, act)
    U = rng.standard_normal((20, 4))
    plain = teacher_states(teacher, U)
    ts = teacher_states(teacher, U, kappa=kappa)
    assert inf_norm(ts.model.A) <= kappa
    scale = max(1.0, np.abs(plain.Yhat).max())
    np.testing.assert_allclose(ts.Yhat, plain.Yhat, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(plain.Yhat, teacher.predict(U), rtol=0, atol=1e-9 * scale)


def test_refuses_non_homogeneous_rescaling():
    rng = np.random.default_rng(0)
    teacher = from_layers([5 * rng.standard_normal((4, 3)), 5 * rng.standard_normal((2, 4)),
                           rng.standard_normal((1, 2))], None, "tanh")
    U = rng.standard_normal((5, 3))
    teacher_states(teacher, U)  # fine without rescaling
    with pytest.raises(ValueError, match="positively homogeneous"):
        teacher_states(teacher, U, kappa=0.9)


def test_bad_teachers_are_refused():
    rng = np.random.default_rng(0)
    cyclic = ImplicitModel(0.3 * np.ones((3, 3)), rng.standard_normal((3, 2)),
                           rng.standard_normal((1, 3)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="feed-forward"):
        teacher_states(cyclic, rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="fitted"):
        teacher_states(MLPClassifier(), rng.standard_normal((4, 2)))
    est, U = _mlp(MLPClassifier, (3,))
    with pytest.raises(ValueError, match="kappa"):
        teacher_states(est, U, kappa=1.5)
    with pytest.raises(ValueError, match="shape"):
        teacher_states(est, U[:, :2])
