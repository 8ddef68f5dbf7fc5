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

from .data import preprocess

METHODS = ("adjoint", "fenchel", "gradient", "sim")


class _ImplicitEstimator(BaseEstimator):
    _task = ""

    def __init__(self, method="adjoint", n_states=32, kappa=0.95, include_D=True, loss=None,
                 max_iter=30, lam_l1=0.0, lam_l2=0.0, teacher=None, standardize=True,
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

    def _default_teacher(self):
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if self._task == "classification" else MLPRegressor
        return cls(hidden_layer_sizes=(self.n_states,), max_iter=500, random_state=self._seed())

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return int(rs or 0)
        return int(np.random.default_rng(rs.randint(2**31)).integers(2**31))

    def _fit_model(self, U, Y):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.method == "sim":
            from .train.sim import fit_sim

            teacher = clone(self.teacher) if self.teacher is not None else self._default_teacher()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                teacher.fit(U, Y if Y.ndim == 1 or Y.shape[1] > 1 else Y[:, 0])
            kwargs = dict(teacher=teacher, task=self._task, kappa=self.kappa,
                          include_D=self.include_D, lam=self.lam_l1 or 1e-3)
            fit = fit_sim
        else:
            kwargs = dict(task=self._task, loss=self.loss, n_states=self.n_states,
                          kappa=self.kappa, include_D=self.include_D, seed=self._seed())
            if self.method == "adjoint":
                from .train.adjoint import fit_adjoint as fit

                kwargs.update(max_outer=self.max_iter, lam_l1=self.lam_l1, lam_l2=self.lam_l2)
            elif self.method == "fenchel":
                from .train.fenchel import fit_fenchel as fit

                kwargs.update(max_outer=self.max_iter)
            else:
                from .train.gradient import fit_gradient as fit

                kwargs.update(epochs=self.max_iter, lam_l2=self.lam_l2)
        kwargs.update(self.method_params or {})
        result = fit(U, Y, **kwargs)
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
