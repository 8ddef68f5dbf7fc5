"""Approximate models and their certified error: low-rank A and the model-error bound (paper §5.3,
Thm 5.1).

For two models M = (A, B, C, D, b_x, b_y) and M̃ with the same componentwise non-expansive φ and
λ_pf(|A|) < 1, at the same input u, with x̃ the computed state of M̃ (residual r̃ = max|x̃ −
φ(Ãx̃ + B̃u + b̃_x)|) and x the exact state of M:
    |x − x̃| ≤ |φ(Ax + Bu + b_x) − φ(Ãx̃ + B̃u + b̃_x)| + r̃ ≤ |A||x − x̃| + |A − Ã||x̃| + |B − B̃||u|
              + |b_x − b̃_x| + r̃𝟙,
so |x − x̃| ≤ σ := (I − |A|)⁻¹(|A − Ã||x̃| + |B − B̃||u| + |b_x − b̃_x| + r̃𝟙) because (I − |A|)⁻¹ ≥ 0,
and |ŷ − ŷ̃| ≤ |C|σ + |C − C̃||x̃| + |D − D̃||u| + |b_y − b̃_y|. In the ∞-norm (‖A‖_∞ < 1):
‖x − x̃‖_∞ ≤ (‖A − Ã‖_∞‖x̃‖_∞ + ‖B − B̃‖_∞‖u‖_∞ + ‖b_x − b̃_x‖_∞ + r̃)/(1 − ‖A‖_∞). Only the cheap model
M̃ is evaluated: the bound says how far the original model can be without running it.
Every step rounds outward (verified resolvent, γ_k dot-product error bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import check_kappa, inf_norm, pre_activation
from .bounds import absolute, dense, gamma, require_pf_below_one, resolvent_upper

__all__ = ["ModelErrorBound", "low_rank_truncation", "model_error_bound"]


@dataclass(frozen=True)
class ModelErrorBound:
    """Certified bounds between the exact outputs of `model` and the computed ones of `approx`.

    Attributes
    ----------
    state : ndarray, shape (m, n)
        Componentwise bounds of |x − x̃|.
    output : ndarray, shape (m, q)
        Componentwise bounds of |ŷ − ŷ̃|.
    state_inf : ndarray, shape (m,)
        The ∞-norm form of the state bound (inf when ‖A‖_∞ ≥ 1), never tighter than
        state.max(1).
    residual : ndarray, shape (m,)
        r̃ per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> approx, _ = robust.low_rank_truncation(model, 1, kappa=0.9)
    >>> robust.model_error_bound(model, approx, U).state_inf.round(4)
    array([0.5 , 0.4 , 0.32])
    """

    state: np.ndarray
    output: np.ndarray
    state_inf: np.ndarray
    residual: np.ndarray


def _up(x):
    return np.nextafter(x, np.inf)


def _state_residual(approx, U: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per-sample upper bound of max_i |x̃_i − φ(Ãx̃ + B̃u + b̃_x)_i|, rounding included."""
    Z = pre_activation(approx, X, U)
    PZ = approx.activation.value(Z)
    mag = np.abs(X) @ dense(absolute(approx.A)).T + np.abs(U) @ dense(absolute(approx.B)).T + np.abs(approx.b_x)
    err = gamma(approx.n_states + approx.n_inputs + 2) * mag + 4 * np.spacing(np.abs(PZ) + np.abs(X))
    return _up((np.abs(X - PZ) + err).max(axis=1, initial=0.0))


def _check_pair(model, approx) -> None:
    shapes = ("n_states", "n_inputs", "n_outputs")
    if any(getattr(model, s) != getattr(approx, s) for s in shapes):
        raise ValueError("model and approx must have the same numbers of states, inputs and outputs; got "
                         f"{[getattr(model, s) for s in shapes]} and {[getattr(approx, s) for s in shapes]}")
    if not model.activation.componentwise or not approx.activation.componentwise:
        raise ValueError("the model-error bound needs componentwise activations (|φ(a) − φ(b)| ≤ |a − b| "
                         "per state); block activations mix states")
    if model.activation != approx.activation:
        raise ValueError(f"model and approx must share the activation, got {model.activation!r} and "
                         f"{approx.activation!r}")


def model_error_bound(model, approx, U, X_approx=None) -> ModelErrorBound:
    """Certified |x − x̃| and |ŷ − ŷ̃| between the exact model and an approximation (Thm 5.1).

    At the rows of U, between the exact states/outputs of `model` and the computed ones of
    `approx` (see the module docstring).

    Parameters
    ----------
    model : ImplicitModel
        The exact model.
    approx : ImplicitModel
        The approximation (same sizes).
    U : array_like, shape (m, p)
        Inputs.
    X_approx : ndarray, shape (m, n), optional
        approx's states at U (default: computed here to 1e-12); their residual is accounted
        for.

    Returns
    -------
    ModelErrorBound
        The bounds.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> approx, _ = robust.low_rank_truncation(model, 1, kappa=0.9)
    >>> bound = robust.model_error_bound(model, approx, U)
    >>> gap = np.abs(model.predict(U) - approx.predict(U))
    >>> bound.output.round(4)[0], bool(np.all(gap <= bound.output))
    (array([0.4167, 0.4167]), True)
    """
    _check_pair(model, approx)
    require_pf_below_one(model.A)
    U = model.check_inputs(U)
    X = approx.equilibrium(U, tol=1e-12) if X_approx is None else np.asarray(X_approx, dtype=float)
    r = _state_residual(approx, U, X)
    dA, dB = dense(absolute(model.A - approx.A)), dense(absolute(model.B - approx.B))
    dC, dD = dense(absolute(model.C - approx.C)), dense(absolute(model.D - approx.D))
    n, p = model.n_states, model.n_inputs
    absX, absU = np.abs(X), np.abs(U)
    rhs = absX @ dA.T + absU @ dB.T + np.abs(model.b_x - approx.b_x)
    rhs = _up(_up(rhs * (1 + gamma(n + p + 2))) + r[:, None])
    state = _up(resolvent_upper(absolute(model.A), rhs.T).T)
    out = state @ dense(absolute(model.C)).T + absX @ dC.T + absU @ dD.T + np.abs(model.b_y - approx.b_y)
    output = _up(out * (1 + gamma(2 * n + p + 3)))
    norm = inf_norm(model.A)
    if norm < 1:
        num = (inf_norm(dA) * absX.max(axis=1, initial=0.0) + inf_norm(dB) * absU.max(axis=1, initial=0.0)
               + np.abs(model.b_x - approx.b_x).max(initial=0.0) + r)
        state_inf = _up(num * (1 + gamma(n + p + 4)) / (1 - norm) * (1 + gamma(2)))
    else:
        state_inf = np.full(U.shape[0], np.inf)
    return ModelErrorBound(state, output, state_inf, r)


def low_rank_truncation(model, rank: int, kappa: float | None = None):
    """`model` with A replaced by its rank-r truncated SVD, scaled into the ℓ1 ball of radius κ.

    Each row is scaled down into the ball (default κ: the model's, else ‖A‖_∞) — row scaling
    keeps the rank ≤ r and the model well-posed (‖Ã‖_∞ ≤ κ < 1).

    Parameters
    ----------
    model : ImplicitModel
        The model.
    rank : int
        The rank r.
    kappa : float, optional
        The ball's radius.

    Returns
    -------
    approx : ImplicitModel
        The approximate model.
    factors : (L, R)
        Ã = L Rᵀ, L and R of shape (n, r).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> approx, (L, R) = robust.low_rank_truncation(model, 1, kappa=0.9)
    >>> approx.A.round(4), L.shape
    (array([[0. , 0.5],
           [0. , 0. ]]), (2, 1))
    """
    n = model.n_states
    if isinstance(rank, bool) or int(rank) != rank or not 1 <= rank <= n:
        raise ValueError(f"rank must be an integer in 1..{n} (the number of states), got {rank!r}")
    kappa = check_kappa(model.metadata.get("kappa", inf_norm(model.A)) if kappa is None else kappa)
    U_, s, Vt = np.linalg.svd(dense(model.A))
    L, R = U_[:, :rank] * s[:rank], Vt[:rank].T
    rows = np.abs(L @ R.T).sum(axis=1)
    L = L * np.minimum(1.0, kappa * (1 - 1e-12) / np.maximum(rows, 1e-300))[:, None]
    approx = model.with_weights(A=L @ R.T)
    approx.metadata["low_rank"] = {"rank": int(rank), "kappa": kappa}
    return approx, (L, R)
