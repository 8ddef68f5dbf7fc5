"""scikit-learn estimators: ImplicitClassifier and ImplicitRegressor.

`__init__` only stores arguments, fitted attributes end in `_`, `fit` returns self. Inputs (and a
regressor's targets) are standardized inside and the transforms are folded exactly into the
fitted model `model_`, which therefore takes raw inputs and gives outputs in the targets' units:
`model_.predict(X)` is what `predict` / `decision_function` use, saved or not.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .train.objective import predicted_labels
from .transform import InputTransform, fold_outputs

METHODS = ("adjoint", "fenchel", "gradient", "sim")
_EARLY_STOPPING_METHODS = ("adjoint", "gradient")  # the methods that select on validation loss

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
    loss : {{"squared", "cross_entropy", "hinge"}} or None, default=None
        Training loss; None is cross-entropy for the classifier, squared for the regressor.
        Not used by ``"sim"``.
    max_iter : int, default=30
        Outer iterations (``"adjoint"``, ``"fenchel"``) or epochs (``"gradient"``).
    lam_l1 : float, default=0.0
        ℓ1 weight on A, B, C, D (``"adjoint"``); for ``"sim"`` the ℓ1 weight λ of its row
        problems (0 means its default 1e-3).
    lam_l2 : float, default=0.0
        Squared ℓ2 weight on A, B, C, D (``"adjoint"``, ``"gradient"``).
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
        Further keyword arguments of the fitting function; they override the above. Keys:

        - ``"adjoint"`` (``train.adjoint.fit_adjoint``): ``anchor_mu`` (1e-2), ``eta`` (1.0),
          ``batch_size`` (None: full batch), ``min_rel_decrease`` (1e-7), ``tol`` (1e-9),
          ``output_tol`` (1e-8), ``init`` ("random" | "data" | ImplicitModel), ``patience`` (10),
          ``activation`` ("relu"), ``s_bound`` (None), ``n_jobs`` (1), ``backend`` ("serial"),
          ``progress`` (False).
        - ``"fenchel"`` (``train.fenchel.fit_fenchel``): ``lam`` (1.0), ``lam_growth`` (1.5),
          ``rho`` (1.0), ``lam_l1`` / ``lam_l2`` (0.0), ``ab_inner`` (5), ``x_iter`` (300),
          ``anchor_mu``, ``init``, ``tol`` (1e-9), ``n_jobs``, ``backend``, ``progress``.
        - ``"gradient"`` (``train.gradient.fit_gradient``): ``lr`` (3e-3), ``batch_size``
          (None), ``optimizer`` ("adam"), ``patience`` (10), ``time_budget`` (None), ``init``,
          ``activation``, ``tol`` (1e-10), ``progress``.
        - ``"sim"`` (``train.sim.fit_sim``): ``formulation`` ("l1" | "elastic_net" |
          "equality" | "robust" | "group_lasso"), ``lam``, ``l2`` (0.0), ``beta``, ``gamma``,
          ``s_bound``, ``group_lam`` (0.0), ``solver`` ("native" | "SCS" | "CLARABEL"),
          ``threshold`` (1e-8), ``chunk_size``, ``tol`` (1e-9), ``n_jobs``, ``backend``,
          ``progress``.
    random_state : int, RandomState or None, default=None
        Seed of the initial model, the validation split and the teacher.
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
                 max_iter=30, lam_l1=0.0, lam_l2=0.0, teacher=None, standardize=True,
                 early_stopping=False, validation_fraction=0.1, method_params=None,
                 random_state=None):
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

    def _default_teacher(self):
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if self._task == "classification" else MLPRegressor
        return cls(hidden_layer_sizes=(self.n_states,), max_iter=500, random_state=self._seed())

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return int(rs or 0)
        return int(np.random.default_rng(rs.randint(2**31)).integers(2**31))

    def _validation(self, U, Y) -> tuple:
        """(U, Y, {U_val, Y_val, early_stopping}) with the held-out rows, or as given."""
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must lie in (0, 1)")
        if not self.early_stopping or self.method not in _EARLY_STOPPING_METHODS or len(U) < 20:
            return U, Y, {}
        from sklearn.model_selection import train_test_split

        labels = Y if self._task == "classification" else None
        if labels is not None and np.unique(labels, return_counts=True)[1].min() < 2:
            return U, Y, {}  # a class with one row cannot be on both sides
        U, U_val, Y, Y_val = train_test_split(U, Y, test_size=self.validation_fraction,
                                              random_state=self._seed(), stratify=labels)
        return U, Y, {"U_val": U_val, "Y_val": Y_val, "early_stopping": True}

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
        U, Y, validation = self._validation(U, Y)
        kwargs.update(validation, **(self.method_params or {}))
        result = fit(U, Y, **kwargs)
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
        """Logits (m, K); for two classes one score (m,), positive for ``classes_[1]``: the
        single logit, or the difference of the two."""
        logits = self._outputs(X)
        if logits.shape[1] == 1:
            return logits[:, 0]
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """softmax of the logits; for one logit z, (1 − σ(z), σ(z))."""
        logits = self._outputs(X)
        if logits.shape[1] == 1:
            logits = np.hstack([np.zeros_like(logits), logits])  # softmax(0, z) = (1 − σ(z), σ(z))
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
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
                 max_iter=30, lam_l1=0.0, lam_l2=0.0, teacher=None, standardize=True,
                 early_stopping=True, validation_fraction=0.1, method_params=None,
                 random_state=None):
        super().__init__(method=method, n_states=n_states, kappa=kappa, include_D=include_D,
                         loss=loss, max_iter=max_iter, lam_l1=lam_l1, lam_l2=lam_l2,
                         teacher=teacher, standardize=standardize, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, method_params=method_params,
                         random_state=random_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
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
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out
