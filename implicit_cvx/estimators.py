"""scikit-learn estimators: ImplicitClassifier and ImplicitRegressor.

`__init__` only stores arguments, fitted attributes end in `_`, `fit` returns self (DESIGN §10).
The fitted implicit model is `model_`; inputs are standardized inside (stored in the model's
metadata as its preprocessing) unless `standardize=False`.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import option_specs
from .data import preprocess
from .train.registry import METHODS


class _ImplicitEstimator(BaseEstimator):
    _task = ""

    def __init__(self, method="adjoint", n_states=32, kappa=0.95, include_D=True, loss=None,
                 max_iter=30, lam_l1=None, lam_l2=None, teacher=None, standardize=True,
                 method_params=None, random_state=None):
        self.method = method
        self.n_states = n_states
        self.kappa = kappa
        self.include_D = include_D
        self.loss = loss
        self.max_iter = max_iter
        self.lam_l1 = lam_l1
        self.lam_l2 = lam_l2
        self.teacher = teacher
        self.standardize = standardize
        self.method_params = method_params
        self.random_state = random_state

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return int(rs or 0)
        return int(np.random.default_rng(rs.randint(2**31)).integers(2**31))

    def _method_options(self, method) -> dict:
        """The method's options set by this estimator's parameters (registered mapping), then
        `method_params` (validated by the method: unknown keys are refused by name)."""
        options = {}
        for spec in option_specs(method.Options):
            value = getattr(self, spec.estimator) if spec.estimator else None
            if value is not None:
                options[spec.name] = value
        if method.name == "sim":
            options.setdefault("teacher_hidden", [int(self.n_states)])
            options.setdefault("teacher_max_iter", 500)
        return {**options, **(self.method_params or {})}

    def _fit_model(self, U, Y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {tuple(METHODS)}")
        method = METHODS[self.method]
        options = self._method_options(method)
        if self.method == "sim" and self.teacher is not None:
            teacher = clone(self.teacher)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                teacher.fit(U, Y if Y.ndim == 1 or Y.shape[1] > 1 else Y[:, 0])
            options["teacher"] = teacher
        result = method.fit(U, Y, task=self._task, seed=self._seed(), **options)
        self.model_ = result.model
        self.history_ = result.history
        self.summary_ = result.summary
        self.n_iter_ = int(result.summary.get("outer_iterations") or len(result.history))

    def _prepare(self, X, fitting: bool):
        if fitting:
            if self.standardize:
                mean, std = X.mean(axis=0), X.std(axis=0)
                std[std == 0] = 1.0
                self.preprocessing_ = {"kind": "standardize", "offset": mean.tolist(),
                                       "scale": (1.0 / std).tolist()}
            else:
                self.preprocessing_ = {"kind": "none"}
        return preprocess(self.preprocessing_, X)

    def _finish(self):
        self.model_.metadata.update(preprocessing=self.preprocessing_, method=self.method,
                                    kappa=self.kappa, task=self._task)

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False)
        return self.model_.predict(self._prepare(X, fitting=False))


class ImplicitClassifier(ClassifierMixin, _ImplicitEstimator):
    """An implicit-model classifier; softmax cross-entropy by default, K logits for K classes."""

    _task = "classification"

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "ImplicitClassifier needs samples of at least 2 classes; y has one class "
                f"({self.classes_.tolist()})"
            )
        self._fit_model(self._prepare(X, fitting=True), self.label_encoder_.transform(y))
        self._finish()
        self.model_.metadata["classes"] = self.classes_.tolist()
        return self

    def decision_function(self, X):
        """Logits (m, K); for two classes the logit difference (m,), positive for classes_[1]."""
        logits = self._outputs(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        logits = self._outputs(X)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        logits = self._outputs(X)
        return self.classes_[np.argmax(logits, axis=1)]


class ImplicitRegressor(RegressorMixin, _ImplicitEstimator):
    """An implicit-model regressor with squared loss; 1-D or 2-D targets."""

    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        Y = y.reshape(len(y), -1).astype(float)
        self._fit_model(self._prepare(X, fitting=True), Y)
        self._finish()
        return self

    def predict(self, X):
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out
