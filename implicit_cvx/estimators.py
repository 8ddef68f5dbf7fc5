"""scikit-learn estimators: ImplicitClassifier and ImplicitRegressor.

`__init__` only stores arguments, fitted attributes end in `_`, `fit` returns self. Inputs (and a
regressor's targets) are standardized inside and the transforms are folded exactly into the
fitted model `model_`, which therefore takes raw inputs and gives outputs in the targets' units:
`model_.predict(X)` is what `predict` / `decision_function` use, saved or not.
"""

from __future__ import annotations

import textwrap

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import option_specs
from .numerics import predicted_labels
from .train.registry import METHODS
from .transform import InputTransform, fold_outputs

_DATA_OPTIONS = ("teacher", "U_test", "Y_test")  # set from the estimator's data and parameters


def _method_params_doc() -> str:
    """The `method_params` keys of every registered method, from their option declarations."""
    lines = []
    for name, cls in METHODS.items():
        keys = ", ".join(f"``{s.name}`` ({s.field.default!r})" for s in option_specs(cls.Options)
                         if s.estimator is None and s.name not in _DATA_OPTIONS)
        text = f"- ``\"{name}\"`` (``{cls.__module__}.fit_{name}``): {keys}."
        lines += textwrap.wrap(text, 92, initial_indent=" " * 8, subsequent_indent=" " * 10)
    return "\n".join(lines)


def _early_stopping_methods() -> tuple:
    """The methods that can select their model on a validation loss (the driver's early stopping)."""
    return tuple(n for n, cls in METHODS.items()
                 if "early_stopping" in {s.name for s in option_specs(cls.Options)})

_PARAMETERS = """
    Parameters
    ----------
    method : {{"adjoint", "fenchel", "gradient", "sim"}}, default="adjoint"
        Fitting method: ``"adjoint"`` alternates certified convex (C, D) and (A, B) steps toward
        adjoint targets; ``"fenchel"`` runs block-coordinate descent on the Fenchel-lifted
        problem (ReLU only); ``"gradient"`` is projected Adam with implicit gradients (the
        baseline); ``"sim"`` fits an MLP teacher and matches its states (state-driven implicit
        modeling).
    n_states : int, default=32
        Hidden states n (for ``"sim"`` the teacher's hidden layer size).
    kappa : float, default=0.95
        Well-posedness ball ‖A‖_∞ ≤ κ, 0 < κ < 1.
    include_D : bool, default=True
        Fit the direct input-output matrix D (else D = 0).
    loss : {{None, "squared", "cross_entropy", "hinge"}}, default=None
        Training loss; None is cross-entropy for the classifier, squared for the regressor.
        Not used by ``"sim"``.
    max_iter : int, default=30
        Outer iterations (``"adjoint"``, ``"fenchel"``) or epochs (``"gradient"``).
    lam_l1 : float or None, default=None
        ℓ1 weight on A, B, C, D (``"adjoint"``, ``"fenchel"``); for ``"sim"`` the ℓ1 weight λ of
        its row problems. None: the method's default (0, or 1e-3 for ``"sim"``).
    lam_l2 : float or None, default=None
        Squared ℓ2 weight on A, B, C, D (``"adjoint"``, ``"fenchel"``, ``"gradient"``); the
        ridge of ``"sim"``. None: the method's default (0).
    teacher : estimator or None, default=None
        ``"sim"`` only: an unfitted MLPClassifier / MLPRegressor to fit as the teacher; None is
        one hidden layer of ``n_states`` units, 500 iterations.
    standardize : bool, default=True
        Fit on inputs{targets} standardized with the training mean and std; the transform{s}
        {verb} folded exactly into ``model_``.
    early_stopping : bool, default={early}
        Hold out ``validation_fraction`` of the rows and return the model of least validation
        loss (methods ``"adjoint"`` and ``"gradient"``; ignored by the others and below 20
        rows). {why}
    validation_fraction : float, default=0.1
        Share of the rows held out when ``early_stopping``.
    method_params : dict or None, default=None
        Further options of the fitting method (validated: an unknown key is refused by name);
        they override the parameters above. Keys and defaults, per method:

{method_params}
    random_state : int, RandomState or None, default=None
        Seed of the initial model, the validation split and the teacher.
    verbose : bool, default=False
        Show the fit's progress: a bar on a terminal, else one line per outer iteration.
"""

_ATTRIBUTES = """
    Attributes
    ----------
    model_ : ImplicitModel
        The fitted model on RAW inputs (input standardization{t} folded in);
        its metadata records the folded transform, each feature's training range, κ, the method.
    input_transform_ : InputTransform
        The input standardization the model was fitted in (identity if ``standardize=False``).{extra}
    history_ : list of dict
        One record per outer iteration / epoch, in the fitting units.
    summary_ : dict
        The fit's summary (train loss, duality gaps, …), in the fitting units.
    n_iter_ : int
        Outer iterations (or epochs) run.
    n_features_in_ : int
        Number of input features.
"""


class _ImplicitEstimator(BaseEstimator):
    _task = ""

    def __init__(self, method="adjoint", n_states=32, kappa=0.95, include_D=True, loss=None,
                 max_iter=30, lam_l1=None, lam_l2=None, teacher=None, standardize=True,
                 early_stopping=False, validation_fraction=0.1, method_params=None,
                 random_state=None, verbose=False):
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
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.method_params = method_params
        self.random_state = random_state
        self.verbose = verbose

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return int(rs or 0)
        return int(np.random.default_rng(rs.randint(2**31)).integers(2**31))

    def _validation(self, U, Y) -> tuple:
        """(U, Y, {U_val, Y_val, early_stopping}) with the held-out rows, or as given."""
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must lie in (0, 1)")
        if not self.early_stopping or self.method not in _early_stopping_methods() or len(U) < 20:
            return U, Y, {}
        from sklearn.model_selection import train_test_split

        labels = Y if self._task == "classification" else None
        if labels is not None and np.unique(labels, return_counts=True)[1].min() < 2:
            return U, Y, {}  # a class with one row cannot be on both sides
        U, U_val, Y, Y_val = train_test_split(U, Y, test_size=self.validation_fraction,
                                              random_state=self._seed(), stratify=labels)
        return U, Y, {"U_val": U_val, "Y_val": Y_val}

    def _method_options(self, method) -> dict:
        """The method's options set by this estimator's parameters (each option declares the
        parameter that sets it), then `method_params` (validated by the method)."""
        options = {}
        for spec in option_specs(method.Options):
            value = getattr(self, spec.estimator) if spec.estimator else None
            if value is not None:
                options[spec.name] = value
        if method.name == "sim":
            options.update(teacher_hidden=[int(self.n_states)], teacher_max_iter=500)
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
        U, Y, validation = self._validation(U, Y)
        result = method.fit(U, Y, task=self._task, seed=self._seed(), progress=bool(self.verbose),
                            **{**validation, **options})
        self.history_ = result.history
        self.summary_ = result.summary
        self.n_iter_ = int(result.summary.get("outer_iterations") or len(result.history))
        return result.model

    def _fit_raw(self, X, Y):
        """Fit on standardized inputs, then fold the standardization into the model."""
        self.input_transform_ = (InputTransform.standardizer(X, "standardize (estimator fit)")
                                 if self.standardize else InputTransform.identity())
        model = self._fit_model(self.input_transform_.apply(X), Y)
        model = self.input_transform_.fold(model, train_range=(X.min(axis=0), X.max(axis=0)))
        model.metadata.update(method=self.method, kappa=self.kappa, task=self._task)
        return model

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False)
        return self.model_.predict(X)


class ImplicitClassifier(ClassifierMixin, _ImplicitEstimator):
    __doc__ = (
        """An implicit-model classifier: x = φ(Ax + Bu + b_x), logits ŷ = Cx + Du + b_y.

    Methods ``"adjoint"``, ``"fenchel"``, ``"gradient"`` fit K logits for K classes (two for a
    binary problem); ``"sim"`` copies its teacher's outputs, which for a binary MLPClassifier is
    ONE logit (class ``classes_[1]`` iff ŷ > 0). Every output form is handled by ``predict``,
    ``decision_function`` and ``predict_proba``.
"""
        + _PARAMETERS.format(targets="", s="", verb="is", early="False",
                             method_params=_method_params_doc(),
                             why="Off by default: the classification defaults fit well as is.")
        + _ATTRIBUTES.format(t="", extra="""
    classes_ : ndarray of shape (n_classes,)
        Class labels; ``model_.metadata["classes"]`` holds them too.""")
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from implicit_cvx import ImplicitClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = ImplicitClassifier(n_states=8, max_iter=5, random_state=0).fit(X[:400], y[:400])
    >>> clf.score(X[400:], y[400:]) > 0.9
    True
"""
    )

    _task = "classification"

    def fit(self, X, y):
        """Fit the model to labelled samples; the input standardization is folded into ``model_``.

        Parameters
        ----------
        X : array_like, shape (m, p)
            Training inputs.
        y : array_like, shape (m,)
            Class labels (at least two classes).

        Returns
        -------
        ImplicitClassifier
            self, fitted.

        Raises
        ------
        ValueError
            If y has a single class, or X and y are invalid.
        RowFitError
            If a convex step cannot be certified (unless ``accept_uncertified`` in method_params).

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from implicit_cvx import ImplicitClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = ImplicitClassifier(n_states=4, max_iter=3, random_state=0).fit(X, y)
        >>> clf.classes_, clf.n_iter_
        (array([0, 1, 2]), 3)
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "ImplicitClassifier needs samples of at least 2 classes; y has one class "
                f"({self.classes_.tolist()})"
            )
        self.model_ = self._fit_raw(X, self.label_encoder_.transform(y))
        self.model_.metadata["classes"] = self.classes_.tolist()
        return self

    def decision_function(self, X):
        """Logits (m, K); for two classes one score (m,), positive for ``classes_[1]``.

        For two classes the score is the single logit, or the difference of the two.

        Parameters
        ----------
        X : array_like, shape (m, p)
            Raw inputs.

        Returns
        -------
        ndarray, shape (m, K) or (m,)
            The scores.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from implicit_cvx import ImplicitClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = ImplicitClassifier(n_states=4, max_iter=3, random_state=0).fit(X, y)
        >>> clf.decision_function(X[:2]).shape
        (2, 3)
        """
        logits = self._outputs(X)
        if logits.shape[1] == 1:
            return logits[:, 0]
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """softmax of the logits; for one logit z, (1 − σ(z), σ(z)).

        Parameters
        ----------
        X : array_like, shape (m, p)
            Raw inputs.

        Returns
        -------
        ndarray, shape (m, K)
            Class probabilities, rows summing to 1, columns in the order of ``classes_``.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from implicit_cvx import ImplicitClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = ImplicitClassifier(n_states=4, max_iter=3, random_state=0).fit(X, y)
        >>> clf.predict_proba(X[:2]).round(3)
        array([[0.997, 0.003, 0.   ],
               [0.983, 0.017, 0.   ]])
        """
        logits = self._outputs(X)
        if logits.shape[1] == 1:
            logits = np.hstack([np.zeros_like(logits), logits])  # softmax(0, z) = (1 − σ(z), σ(z))
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The class of the largest logit (one logit: ``classes_[1]`` iff it is > 0).

        Parameters
        ----------
        X : array_like, shape (m, p)
            Raw inputs.

        Returns
        -------
        ndarray, shape (m,)
            Predicted labels, from ``classes_``.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from implicit_cvx import ImplicitClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = ImplicitClassifier(n_states=4, max_iter=3, random_state=0).fit(X, y)
        >>> clf.predict(X[:3]), round(clf.score(X, y), 3)
        (array([0, 0, 0]), 0.987)
        """
        labels = predicted_labels(self._outputs(X))  # checks that the estimator is fitted first
        return self.classes_[labels]


class ImplicitRegressor(RegressorMixin, _ImplicitEstimator):
    __doc__ = (
        """An implicit-model regressor with squared loss; 1-D or 2-D targets.

    Targets are standardized inside as well (with ``standardize``), so that the loss, penalties
    and step sizes mean the same whatever the targets' unit (diabetes targets have std 77).
"""
        + _PARAMETERS.format(
            targets=" (and targets)", s="s", verb="are", early="True",
            method_params=_method_params_doc(),
            why="On by default: small tabular data sets are overfitted\n        otherwise (see "
                "experiments/regression_defaults.py).")
        + _ATTRIBUTES.format(t=" and the target scaling", extra="""
    target_offset_, target_scale_ : ndarray of shape (n_outputs,)
        The target standardization y = offset + scale ⊙ ŷ folded into ``model_``'s outputs.""")
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from implicit_cvx import ImplicitRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = ImplicitRegressor(n_states=8, max_iter=5, random_state=0).fit(X[:350], y[:350])
    >>> reg.score(X[350:], y[350:]) > 0.3
    True
"""
    )

    _task = "regression"

    def __init__(self, method="adjoint", n_states=32, kappa=0.95, include_D=True, loss=None,
                 max_iter=30, lam_l1=None, lam_l2=None, teacher=None, standardize=True,
                 early_stopping=True, validation_fraction=0.1, method_params=None,
                 random_state=None, verbose=False):
        super().__init__(method=method, n_states=n_states, kappa=kappa, include_D=include_D,
                         loss=loss, max_iter=max_iter, lam_l1=lam_l1, lam_l2=lam_l2,
                         teacher=teacher, standardize=standardize, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, method_params=method_params,
                         random_state=random_state, verbose=verbose)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Fit the model; input and target standardizations are folded into ``model_``.

        Parameters
        ----------
        X : array_like, shape (m, p)
            Training inputs.
        y : array_like, shape (m,) or (m, q)
            Targets.

        Returns
        -------
        ImplicitRegressor
            self, fitted.

        Raises
        ------
        ValueError
            If X or y are invalid.
        RowFitError
            If a convex step cannot be certified (unless ``accept_uncertified`` in method_params).

        Examples
        --------
        >>> from sklearn.datasets import load_diabetes
        >>> from implicit_cvx import ImplicitRegressor
        >>> X, y = load_diabetes(return_X_y=True)
        >>> reg = ImplicitRegressor(n_states=4, max_iter=3, random_state=0).fit(X[:100], y[:100])
        >>> reg.model_.n_states, reg.target_scale_.round(1)
        (4, array([68.8]))
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self._y_1d = y.ndim == 1
        Y = y.reshape(len(y), -1).astype(float)
        offset, scale = np.zeros(Y.shape[1]), np.ones(Y.shape[1])
        if self.standardize:
            offset, scale = Y.mean(axis=0), Y.std(axis=0)
            scale[scale == 0] = 1.0
        self.target_offset_, self.target_scale_ = offset, scale
        self.model_ = fold_outputs(self._fit_raw(X, (Y - offset) / scale), offset, scale)
        return self

    def predict(self, X):
        """Predicted targets at the equilibrium, in the targets' units.

        Parameters
        ----------
        X : array_like, shape (m, p)
            Raw inputs.

        Returns
        -------
        ndarray, shape (m,) or (m, q)
            Predictions, 1-D when the model was fitted on 1-D targets.

        Examples
        --------
        >>> from sklearn.datasets import load_diabetes
        >>> from implicit_cvx import ImplicitRegressor
        >>> X, y = load_diabetes(return_X_y=True)
        >>> reg = ImplicitRegressor(n_states=4, max_iter=3, random_state=0).fit(X[:100], y[:100])
        >>> reg.predict(X[:2]).round(1)
        array([222.1,  95.6])
        """
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out
