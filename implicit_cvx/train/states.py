"""Teacher states for state-driven implicit modeling (paper §6): run a feed-forward network
on U and record its pre-activations Z, post-activations X = φ(Z) and outputs Ŷ, all layers stacked
in the implicit ordering x = (x_L, …, x_1), optionally after rescaling it into ‖A‖_∞ ≤ κ (§3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..convert import from_sklearn
from ..model import ImplicitModel
from ..numerics import check_kappa, in_ball
from ..structure import block_structure
from ..wellposed import rescale


@dataclass
class TeacherStates:
    """Data of the SIM fit: inputs U (m, p), pre-activations Z (m, n), states X = φ(Z) (m, n),
    outputs Ŷ (m, q) of `model` (the possibly rescaled teacher); `rescaled` says if it changed."""

    U: np.ndarray
    Z: np.ndarray
    X: np.ndarray
    Yhat: np.ndarray
    model: ImplicitModel
    rescaled: bool


def _dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M, dtype=float)


def train_teacher(U, Y, task: str, hidden, max_iter: int, seed=None):
    """A scikit-learn MLP (hidden layer sizes `hidden`) fitted to (U, Y): SIM's default teacher."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if task == "classification" else MLPRegressor
    est = cls(hidden_layer_sizes=tuple(int(h) for h in hidden), max_iter=int(max_iter),
              random_state=None if seed is None else int(seed))
    Y = np.asarray(Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(U, Y[:, 0] if Y.ndim == 2 and Y.shape[1] == 1 else Y)
    return est


def teacher_model(teacher) -> ImplicitModel:
    """The teacher as an ImplicitModel with an acyclic (feed-forward) A, dense weights.

    Accepts a fitted scikit-learn MLPClassifier / MLPRegressor (converted with
    `convert.from_sklearn`) or an ImplicitModel whose A is triangular after a permutation.
    """
    if not isinstance(teacher, ImplicitModel):
        if not hasattr(teacher, "coefs_"):
            raise ValueError(
                f"teacher must be a fitted sklearn MLPClassifier/MLPRegressor or an ImplicitModel "
                f"with a feed-forward (triangular) A, got {type(teacher).__name__}; fit it first"
            )
        teacher = from_sklearn(teacher)
    A = _dense(teacher.A)
    if not block_structure(A).is_triangular:
        raise ValueError(
            f"teacher A (shape {A.shape}) has cycles: SIM needs a feed-forward teacher whose A is "
            "triangular after a permutation (convert a network with convert.from_layers)"
        )
    return ImplicitModel(A, _dense(teacher.B), _dense(teacher.C), _dense(teacher.D),
                         teacher.b_x, teacher.b_y, teacher.activation, teacher.metadata)


def rescale_into_ball(model: ImplicitModel, kappa: float) -> tuple[ImplicitModel, bool]:
    """(model, False) when ‖A‖_∞ ≤ κ already; otherwise the equivalent model
    (SAS⁻¹, SB, Sb_x, CS⁻¹, D, b_y) inside the κ-ball (`wellposed.rescale`, positive
    homogeneity of φ; for a feed-forward A the scale factors propagate layer by layer) and True."""
    kappa = check_kappa(kappa)
    if in_ball(model.A, kappa):
        return model, False
    return rescale(model, kappa), True


def teacher_states(teacher, U, kappa: float | None = None) -> TeacherStates:
    """Run a feed-forward teacher on U (m, p) and stack its layers' (Z, X = φ(Z), Ŷ).

    With `kappa`, first rescale the teacher so that ‖A‖_∞ ≤ κ; predictions are unchanged and the
    states are those of the rescaled teacher (what the SIM rows are fitted to).
    """
    model = teacher_model(teacher)
    rescaled = False
    if kappa is not None:
        model, rescaled = rescale_into_ball(model, kappa)
    states = partition_states(model, U)
    states.rescaled = rescaled
    return states


def partition_states(model: ImplicitModel, U) -> TeacherStates:
    """(Z, X, Ŷ) of a feed-forward teacher `model` (as from teacher_model, already rescaled) on
    the rows U: the per-partition part of teacher_states."""
    U = model.check_inputs(U)
    X_eq = model.equilibrium(U, method="reproducible")
    Z = X_eq @ model.A.T + U @ model.B.T + model.b_x
    X = model.phi(Z)  # exact for a feed-forward A: the level sweep already solved it
    gap = float(np.max(np.abs(X - X_eq), initial=0.0))
    if gap > 1e-9 * max(1.0, float(np.max(np.abs(X), initial=0.0))):
        raise RuntimeError(f"teacher states are not a fixed point (max |φ(Z) − X| = {gap:.3g})")
    return TeacherStates(U, Z, X, model.output(X, U), model, False)
