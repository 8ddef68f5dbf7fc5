"""Certified worst-case loss over an ℓ∞ ball (paper §4.4), from certified margin lower bounds.

Both classification losses are nonincreasing functions of the margins m_j = ŷ_y − ŷ_j (j ≠ y):
    cross-entropy  L = log Σ_j e^{ŷ_j − ŷ_y} = log(1 + Σ_{j≠y} e^{−m_j}),
    hinge          L = max_{j≠y} (1 − m_j)₊           (Crammer–Singer),
so lower bounds ℓ_j ≤ m_j valid for every input of the ball give upper bounds of the loss over
the ball: log(1 + Σ_{j≠y} e^{−ℓ_j}) and max_j (1 − ℓ_j)₊. Any margin certificate plugs in (box,
interval, lp, sparse, sdp); the values are rounded up, and a margin without a bound (−inf) gives
an infinite loss bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from ..numerics import cross_entropy, hinge
from .bounds import UNIT_ROUNDOFF, gamma

__all__ = ["LOSSES", "WorstCaseLoss", "worst_case_loss", "worst_case_loss_bounds"]

LOSSES = ("cross_entropy", "hinge")


def _check(margin_lower, y, loss: str):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    M = np.asarray(margin_lower, dtype=float)
    y = np.asarray(y)
    if M.ndim != 2 or M.shape[1] < 2 or y.shape != (M.shape[0],):
        raise ValueError(f"margin_lower must be (m, q ≥ 2) with labels y of shape (m,); got {M.shape} "
                         f"and {y.shape}")
    if np.any(np.isnan(M)):
        raise ValueError("margin_lower contains NaN")
    return M, y.astype(int)


def worst_case_loss(margin_lower, y, loss: str = "cross_entropy") -> np.ndarray:
    """Upper bounds (m,) of the loss over the ball from margin lower bounds (m, q).

    Entry y of each row is ignored: it is the sample's own class.

    Parameters
    ----------
    margin_lower : ndarray, shape (m, q)
        Certified lower bounds of ŷ_y − ŷ_j.
    y : ndarray, shape (m,)
        Labels.
    loss : {"cross_entropy", "hinge"}, default="cross_entropy"
        The loss.

    Returns
    -------
    ndarray, shape (m,)
        Certified upper bounds of each sample's loss.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import robust
    >>> robust.worst_case_loss(np.array([[np.inf, 0.4], [1.4, np.inf]]), np.array([0, 1])).round(4)
    array([0.513 , 0.2204])
    """
    M, y = _check(margin_lower, y, loss)
    rows = np.arange(M.shape[0])
    others = M.copy()
    others[rows, y] = np.inf
    if loss == "hinge":
        return np.nextafter(np.maximum(np.nextafter(1.0 - others.min(axis=1), np.inf), 0.0), np.inf)
    terms = -others
    terms[rows, y] = 0.0  # log(e⁰ + Σ_{j≠y} e^{−ℓ_j})
    with np.errstate(over="ignore"):
        value = logsumexp(terms, axis=1)
    slack = gamma(M.shape[1] + 4) * (np.abs(value) + np.abs(terms).max(axis=1)) + 4 * UNIT_ROUNDOFF
    return np.where(np.isfinite(value), np.nextafter(value + slack, np.inf), np.inf)


@dataclass(frozen=True)
class WorstCaseLoss:
    """Per-sample certified upper bounds of the loss over the ε-ball, their mean, and the clean loss.

    Attributes
    ----------
    loss : str
        The loss.
    eps : float
        The radius.
    method : str
        The margin bound used.
    per_sample : ndarray, shape (m,)
        Certified upper bounds.
    mean : float
        Their mean, rounded up.
    clean : ndarray, shape (m,)
        The loss at ε = 0, for comparison.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> wcl = robust.worst_case_loss_bounds(model, U, y, 0.2, domain=(0, 1))
    >>> bool(np.all(wcl.per_sample >= wcl.clean))
    True
    """

    loss: str
    eps: float
    method: str
    per_sample: np.ndarray
    mean: float
    clean: np.ndarray


def worst_case_loss_bounds(model, U, y, eps, *, loss: str = "cross_entropy", method: str = "lp",
                           domain=None, margins=None) -> WorstCaseLoss:
    """Certified worst-case loss of each sample (and its mean) over the ℓ∞ ball of radius eps.

    From `certify.margin_lower_bounds(..., method)` on the ball clipped to domain — or from
    given margin lower bounds `margins` (m, q), e.g. of the sparse or SDP certificates.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    eps : float or array_like of shape (p,)
        The radius.
    loss : {"cross_entropy", "hinge"}, default="cross_entropy"
        The loss.
    method : str, default="lp"
        The margin bound (see `certify`).
    domain : (lo, hi), optional
        The input domain.
    margins : ndarray, shape (m, q), optional
        Margin lower bounds to use instead of computing them.

    Returns
    -------
    WorstCaseLoss
        Per-sample bounds, their mean and the clean loss.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> wcl = robust.worst_case_loss_bounds(model, U, y, 0.2, domain=(0, 1))
    >>> wcl.per_sample.round(4), round(wcl.mean, 4)
    (array([0.513 , 0.1839, 0.5042]), 0.4004)
    """
    from .certify import margin_lower_bounds

    U = model.check_inputs(U)
    y = np.asarray(y).astype(int)
    source = method if margins is None else "given"
    if margins is None:
        margins = margin_lower_bounds(model, U, y, eps, method, domain=domain)
    upper = worst_case_loss(margins, y, loss)
    mean = float(np.nextafter(upper.sum() * (1 + gamma(upper.size)) / max(upper.size, 1), np.inf))
    logits = model.predict(U, tol=1e-12)
    clean = cross_entropy(logits, y) if loss == "cross_entropy" else hinge(logits, y)
    return WorstCaseLoss(loss, float(eps), source, upper, mean, clean)
