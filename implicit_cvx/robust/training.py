"""Robust training: a certified bound ‖S‖_∞ ≤ s in the (C, D) step (paper Thm 4.3).

For fixed (A, B), row i of S = |C|(I − |A|)⁻¹|B| + |D| sums to |c_i|ᵀw + ‖d_i‖_1 with
w = (I − |A|)⁻¹|B|𝟙 ≥ 0, so ‖S‖_∞ ≤ s is one WEIGHTED ℓ1 ball per output row on (c_i, d_i) with
weights ω = (w, 𝟙) — convex in (C, D), not in A. The engine has unweighted balls, so the fit is
solved in scaled coordinates W̃ = WΩ̂ (Ω̂ = diag(ω̂), ω̂ = ω/τ, τ = max ω): features F/ω̂,
ℓ1 penalties λ_j/ω̂_j, one unweighted ball of radius s/τ. States unreachable from the input
(w_j = 0 exactly, found on the sparsity graph) are left out of the ball; reachable weights are
floored at WEIGHT_FLOOR·τ for conditioning, which only tightens the constraint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..convex.losses import fit_output_layer
from .bounds import absolute, gamma, require_pf_below_one, resolvent_upper, sensitivity_matrix

__all__ = [
    "SBoundScaling",
    "S_RTOL",
    "WEIGHT_FLOOR",
    "check_s_bound",
    "check_s_value",
    "fit_output_layer_s_bounded",
    "reachable_states",
    "s_bound_scaling",
    "s_bound_weights",
    "s_norm_bound",
]

S_RTOL = 1e-9  # ‖S‖_∞ ≤ s(1 + S_RTOL) is what a fit with s_bound = s guarantees
RADIUS_MARGIN = 1e-9  # the ball radius is s(1 − RADIUS_MARGIN): room for the verified S
WEIGHT_FLOOR = 1e-3  # reachable weights below WEIGHT_FLOOR·max ω are raised to it (sound)


def check_s_value(s) -> float:
    """s as a finite positive float (a ValueError naming s otherwise)."""
    try:
        value = float(s)
    except (TypeError, ValueError):
        raise ValueError(f"s_bound must be a number > 0 (the bound on ‖S‖_∞), got {s!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"s_bound must be finite and > 0 (the bound on ‖S‖_∞), got {s!r}")
    return value


def reachable_states(A, B) -> np.ndarray:
    """Boolean (n,): states whose equilibrium depends on the input (a path u → x_j in |B|, |A|)."""
    absA, absB = absolute(A), absolute(B)
    hit = np.asarray(absB.sum(axis=1)).ravel() > 0
    while True:
        new = hit | (np.asarray(absA @ hit.astype(float)).ravel() > 0)
        if np.array_equal(new, hit):
            return hit
        hit = new


def s_bound_weights(model, include_D: bool = True) -> np.ndarray:
    """ω = (w, 𝟙_p) (or w when D is not fitted), w = (I − |A|)⁻¹|B|𝟙, so ‖S‖_∞ ≤ max_i Σ_j ω_j|[C D]_ij|.

    w is a verified upper bound that is exactly 0 on unreachable states (Thm 4.3).

    Parameters
    ----------
    model : ImplicitModel
        A model with λ_pf(|A|) < 1.
    include_D : bool, default=True
        Append the p ones of the D columns.

    Returns
    -------
    ndarray, shape (n + p,) or (n,)
        ω.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.s_bound_weights(model).round(4)
    array([3.0556, 2.1111, 1.    , 1.    ])
    """
    require_pf_below_one(model.A)
    rhs = np.asarray(absolute(model.B).sum(axis=1)).ravel()
    w = resolvent_upper(absolute(model.A), rhs)
    w = np.where(reachable_states(model.A, model.B), w, 0.0)
    return np.concatenate([w, np.ones(model.n_inputs)]) if include_D else w


@dataclass(frozen=True)
class SBoundScaling:
    """The change of variables W̃ = WΩ̂ that turns Σ_j ω_j|W_ij| ≤ s into one unweighted ℓ1 ball.

    scale: ω̂ (d,) = max(ω, floor·τ)/τ on the ball columns, 1 elsewhere; radius = s(1 − margin)/τ.
    Arrays with more than d columns (a trailing bias) keep their extra columns unscaled.
    """

    scale: np.ndarray
    cols: np.ndarray
    radius: float

    def _full(self, width: int) -> np.ndarray:
        d = self.scale.size
        if width < d:
            raise ValueError(f"expected at least {d} columns (one per weight), got {width}")
        return np.concatenate([self.scale, np.ones(width - d)])

    def features(self, F) -> np.ndarray:
        """F Ω̂⁻¹: regressors of the scaled problem."""
        F = np.asarray(F, dtype=float)
        return F / self._full(F.shape[-1])

    def penalty(self, lam) -> np.ndarray:
        """λ_j/ω̂_j (λ scalar or per column)."""
        lam = np.asarray(lam, dtype=float)
        width = self.scale.size if lam.ndim == 0 else lam.shape[-1]
        return lam / self._full(width)

    def to_scaled(self, W) -> np.ndarray:
        W = np.asarray(W, dtype=float)
        return W * self._full(W.shape[-1])

    def from_scaled(self, Wt) -> np.ndarray:
        Wt = np.asarray(Wt, dtype=float)
        return Wt / self._full(Wt.shape[-1])

    @property
    def ball(self) -> tuple:
        """(column indices, radius): the unweighted ℓ1 ball of the scaled problem."""
        return self.cols, self.radius


def s_bound_scaling(weights, s) -> SBoundScaling:
    """The scaling for ‖S‖_∞ ≤ s with per-column weights ω (`s_bound_weights`).

    Zero weights (unreachable states) stay out of the ball.

    Parameters
    ----------
    weights : array_like, shape (d,)
        ω, finite and ≥ 0, not all 0.
    s : float
        The bound, > 0.

    Returns
    -------
    SBoundScaling
        scale (d,), the ball's columns and radius.

    Raises
    ------
    ValueError
        If the weights or s are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import robust
    >>> scaling = robust.s_bound_scaling(np.array([2.0, 1.0, 0.0]), 1.0)
    >>> scaling.scale, scaling.cols
    (array([1. , 0.5, 1. ]), array([0, 1]))
    """
    s = check_s_value(s)
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 1 or not np.all(np.isfinite(weights) & (weights >= 0)):
        raise ValueError(f"weights must be a finite nonnegative (d,) array, got shape {weights.shape}")
    cols = np.flatnonzero(weights > 0)
    if cols.size == 0:
        raise ValueError("every weight is 0: no output depends on the input, nothing to bound")
    tau = float(weights.max())
    scale = np.ones_like(weights)
    scale[cols] = np.maximum(weights[cols], WEIGHT_FLOOR * tau) / tau
    return SBoundScaling(scale, cols, s * (1 - RADIUS_MARGIN) / tau)


def fit_output_layer_s_bounded(F, Y, loss: str, weights, s, *, lam_l1=0.0, lam_l2: float = 0.0,
                               anchor=None, warm_start=None, **solver_options):
    """Certified output fit with Σ_j ω_j|W_ij| ≤ s on every row, hence ‖S‖_∞ ≤ s.

    Solved in the scaled coordinates W̃ = WΩ̂ (module docstring); the ℓ1 penalties are exact, the
    ridge λ2 and the anchor μ are measured in the ball's metric, λ2‖WΩ̂‖² and μ‖(Θ − Θ0)Ω̂‖²
    (Ω̂ ≤ I: never stronger than asked).

    Parameters
    ----------
    F : array_like, shape (m, d)
        Features (states and inputs).
    Y : array_like
        Targets: (m,) / (m, q) for "squared", labels 0..K−1 otherwise.
    loss : str
        The loss: "squared", "cross_entropy" or "hinge".
    weights : array_like, shape (d,)
        ω (`s_bound_weights`).
    s : float
        The bound on the weighted row sums.
    lam_l1 : float or array_like of shape (d,), default=0.0
        ℓ1 weight, scalar or per column.
    lam_l2 : float, default=0.0
        Ridge weight.
    anchor : (W0, b0, mu), optional
        Proximal term μ‖(Θ − Θ0)Ω̂‖².
    warm_start : (W, b), optional
        Starting point.
    **solver_options
        Passed to `convex.losses.fit_output_layer` (tol, max_iter, n_jobs, ...).

    Returns
    -------
    W : ndarray, shape (q, d)
    b : ndarray, shape (q,)
    info : OutputFitInfo
        The certified fit (objective, duality gap, status, solver).

    Raises
    ------
    ValueError
        If F, lam_l1, the weights or s are invalid.
    RowFitError
        If no solver certifies the fit.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import robust
    >>> rng = np.random.default_rng(0)
    >>> F = rng.normal(size=(30, 3))
    >>> Y = F @ [[1.0], [-2.0], [0.5]]
    >>> W, b, info = robust.fit_output_layer_s_bounded(F, Y, "squared", np.ones(3), 1.5)
    >>> W.round(4), round(float(np.abs(W).sum()), 6), info.status
    (array([[ 0.4813, -1.0187,  0.    ]]), 1.5, 'optimal')
    """
    sc = s_bound_scaling(weights, s)
    F = np.asarray(F, dtype=float)
    if F.ndim != 2 or F.shape[1] != sc.scale.size:
        raise ValueError(f"features F must be (m, {sc.scale.size}) to match the weights, got {F.shape}")
    lam = np.asarray(lam_l1, dtype=float)
    if lam.ndim and lam.shape != sc.scale.shape:
        raise ValueError(f"lam_l1 must be a scalar or shape ({sc.scale.size},), got {lam.shape}")
    if anchor is not None:
        W0, b0, mu = anchor
        anchor = (sc.to_scaled(W0), b0, mu)
    if warm_start is not None:
        warm_start = (sc.to_scaled(warm_start[0]), warm_start[1])
    Wt, b, info = fit_output_layer(
        sc.features(F), Y, loss, lam_l1=sc.penalty(lam), lam_l2=lam_l2, anchor=anchor,
        balls=[sc.ball], warm_start=warm_start, **solver_options)
    W = sc.from_scaled(Wt)
    row_sums = np.abs(W) @ np.asarray(weights, dtype=float)
    if np.any(row_sums > check_s_value(s) * (1 + S_RTOL)):
        raise RuntimeError(f"S-bounded fit left a weighted row sum {row_sums.max():.17g} > s = {s}; "
                           "this is a bug")
    return W, b, info


def s_norm_bound(model) -> float:
    """A verified upper bound of ‖S‖_∞ (Thm 4.3).

    The smaller of the row sums of `sensitivity_matrix` and max_i |c_i|ᵀw + ‖d_i‖_1 with the
    verified w of `s_bound_weights`.

    Parameters
    ----------
    model : ImplicitModel
        A model with λ_pf(|A|) < 1.

    Returns
    -------
    float
        The bound.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> round(robust.s_norm_bound(model), 4)
    5.1667
    """
    n, p = model.n_states, model.n_inputs
    rows = np.asarray(absolute(model.C) @ s_bound_weights(model, include_D=False)).ravel()
    rows = rows + np.asarray(absolute(model.D).sum(axis=1)).ravel()
    weighted = float(np.nextafter(rows.max(initial=0.0) * (1 + gamma(n + p + 2)), np.inf))
    return min(weighted, float(sensitivity_matrix(model).sum(axis=1).max(initial=0.0)))


def check_s_bound(model, s) -> float:
    """The verified ‖S‖_∞ bound of `s_norm_bound`; RuntimeError if it exceeds s(1 + S_RTOL).

    Parameters
    ----------
    model : ImplicitModel
        The model.
    s : float
        The promised bound.

    Returns
    -------
    float
        The verified bound.

    Raises
    ------
    RuntimeError
        If the bound exceeds s(1 + S_RTOL).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> round(robust.check_s_bound(model, 6.0), 4)
    5.1667
    >>> robust.check_s_bound(model, 5.0)
    Traceback (most recent call last):
    ...
    RuntimeError: ‖S‖_∞ = 5.16... exceeds the bound s = 5.0 ...
    """
    s = check_s_value(s)
    value = s_norm_bound(model)
    if value > s * (1 + S_RTOL):
        raise RuntimeError(f"‖S‖_∞ = {value:.17g} exceeds the bound s = {s} (relative tolerance "
                           f"{S_RTOL}); the (C, D) step must be refitted after (A, B) changes")
    return value

