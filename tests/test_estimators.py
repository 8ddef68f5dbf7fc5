"""scikit-learn estimators: the library's own conformance checks, plus fits that learn."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from implicit_cvx import ImplicitClassifier, ImplicitRegressor
from implicit_cvx.wellposed import BALL_RTOL, inf_norm

# Small models and few outer iterations keep the ~55 checks per estimator fast. Every check runs
# but one that scikit-learn skips by itself: check_array_api_input runs only with SCIPY_ARRAY_API=1
# and an array-API library; our estimators compute in numpy and do not claim array-API support.
FAST = dict(n_states=8, max_iter=3)
SKIPPED_BY_SKLEARN = {"check_array_api_input"}


@pytest.mark.parametrize("est", [ImplicitClassifier(**FAST), ImplicitRegressor(**FAST)],
                         ids=["classifier", "regressor"])
def test_check_estimator(est):
    results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert {r["check_name"] for r in results if r["status"] == "skipped"} <= SKIPPED_BY_SKLEARN
    assert sum(r["status"] == "passed" for r in results) >= 40


@pytest.mark.parametrize("method", ["adjoint", "fenchel", "gradient", "sim"])
def test_classifier_methods_learn_digits(method):
    d = load_digits()
    X, y = d.data[:400], d.target[:400]
    max_iter = 100 if method == "gradient" else 5  # Adam epochs vs convex outer steps
    clf = ImplicitClassifier(method=method, n_states=16, max_iter=max_iter, kappa=0.9, random_state=0)
    clf.fit(X[:300], y[:300])
    assert clf.score(X[300:], y[300:]) > 0.7
    proba = clf.predict_proba(X[300:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X[300:]))
    assert inf_norm(clf.model_.A) <= 0.9 * (1 + BALL_RTOL)


def test_regressor_fits_and_keeps_1d_targets():
    X, y = make_regression(n_samples=120, n_features=4, noise=0.1, random_state=0)
    reg = ImplicitRegressor(n_states=8, max_iter=10, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (120,)
    assert reg.score(X, y) > 0.9
    with pytest.raises(ValueError, match="method='bogus'"):
        ImplicitRegressor(method="bogus").fit(X, y)


@pytest.mark.parametrize("method", ["adjoint", "fenchel", "gradient", "sim"])
def test_binary_breast_cancer_for_every_method(method):
    """Two classes: one logit for sim (its binary MLP teacher), two for the others; predict,
    decision_function and predict_proba follow the model's own outputs."""
    X, y = load_breast_cancer(return_X_y=True)
    names = np.array(["malignant", "benign"])[y]  # string labels: classes_ are sorted names
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:400], idx[400:]
    max_iter = 60 if method == "gradient" else 5
    clf = ImplicitClassifier(method=method, n_states=8, max_iter=max_iter, random_state=0)
    clf.fit(X[tr], names[tr])
    assert clf.score(X[te], names[te]) >= 0.9
    out = clf.model_.predict(X[te])
    assert out.shape[1] == (1 if method == "sim" else 2)
    positive = out[:, 0] > 0 if out.shape[1] == 1 else out[:, 1] > out[:, 0]
    np.testing.assert_array_equal(clf.predict(X[te]), clf.classes_[positive.astype(int)])
    np.testing.assert_array_equal(clf.decision_function(X[te]) > 0, positive)
    proba = clf.predict_proba(X[te])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba[:, 1] > 0.5, positive)


@pytest.mark.slow
def test_regressor_defaults_beat_ridge_on_diabetes():
    """R² over the same 5 shuffled folds: ImplicitRegressor() ≥ Ridge() (it was 0.01 before the
    targets were standardized and early stopping became the regressor's default)."""
    X, y = load_diabetes(return_X_y=True)
    folds = KFold(5, shuffle=True, random_state=0)
    ridge = cross_val_score(Ridge(), X, y, cv=folds).mean()
    implicit = cross_val_score(ImplicitRegressor(), X, y, cv=folds).mean()
    assert implicit >= ridge, (implicit, ridge)


def test_regressor_target_scaling_is_folded_exactly():
    X, y = make_regression(n_samples=80, n_features=3, noise=1.0, random_state=1)
    y = 500.0 + 40.0 * y  # far from zero mean, unit variance
    reg = ImplicitRegressor(n_states=6, max_iter=3, early_stopping=False, random_state=0).fit(X, y)
    inner = reg.input_transform_.unfold(reg.model_)  # standardized inputs, raw-unit outputs
    U = reg.input_transform_.apply(X)
    np.testing.assert_allclose(reg.predict(X), inner.predict(U)[:, 0], rtol=1e-10)
    assert reg.target_offset_[0] == pytest.approx(y.mean()) and reg.target_scale_[0] == pytest.approx(y.std())
