"""scikit-learn estimators: the library's own conformance checks, plus fits that learn."""

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_regression
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
