"""Shared numerical helpers: array validation, the κ-ball, ℓ1-ball projections, losses, labels.

The leaf of the package: every module may import it and it imports nothing of the package, so
the one definition of each of these pieces serves the model, the solvers, the fitting methods
and the certificates alike. Samples are rows: U (m, p), X (m, n), Ŷ (m, q).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp, softmax

BALL_RTOL = 1e-12  # the one ball tolerance: ‖A‖_∞ ≤ κ(1 + BALL_RTOL)
_CHUNK_ENTRIES = 1 << 22  # rows are projected in chunks of about this many entries
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


# ---- validation ---------------------------------------------------------------------------------
def check_matrix(name: str, M, shape=(None, None)):
    """M as a finite real 2-D float array (or CSR for scipy.sparse) of the expected shape."""
    if sp.issparse(M):
        if np.iscomplexobj(M.data):
            raise ValueError(f"{name} is complex; implicit models have real weights")
        M = sp.csr_matrix(M, dtype=float)
        data = M.data
    else:
        if np.iscomplexobj(M):
            raise ValueError(f"{name} is complex; implicit models have real weights")
        try:
            M = np.array(M, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric matrix: {exc}") from None
        data = M
    if M.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {M.shape}")
    for axis, want in enumerate(shape):
        if want is not None and M.shape[axis] != want:
            expected = ", ".join("?" if s is None else str(s) for s in shape)
            raise ValueError(f"{name} has shape {M.shape}, expected ({expected})")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} (shape {M.shape}) contains NaN or inf")
    return M


def check_vector(name: str, v, size: int) -> np.ndarray:
    """v as a finite real (size,) array; None gives zeros."""
    if v is None:
        return np.zeros(size)
    if np.iscomplexobj(v):
        raise ValueError(f"{name} is complex; implicit models have real weights")
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or v.shape[0] != size:
        raise ValueError(f"{name} has shape {v.shape}, expected ({size},)")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} (shape {v.shape}) contains NaN or inf")
    return v


def check_rows(name: str, X, m: int | None = None, width: int | None = None) -> np.ndarray:
    """X as a finite (m, width) float array, one row per sample (a 1-D X is one column)."""
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D with samples as rows, got shape {X.shape}")
    if m is not None and X.shape[0] != m:
        raise ValueError(f"{name} has {X.shape[0]} rows, expected {m} (one per sample)")
    if width is not None and X.shape[1] != width:
        raise ValueError(f"{name} has shape {X.shape}, expected ({X.shape[0]}, {width})")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} (shape {X.shape}) contains NaN or inf")
    return X


def check_kappa(kappa) -> float:
    """κ as a float, or a ValueError unless 0 < κ < 1 (the ball ‖A‖_∞ ≤ κ must be a contraction)."""
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        raise ValueError(f"kappa must be a number in (0, 1), got {kappa!r}") from None
    if not (np.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(
            f"kappa={kappa!r} is outside (0, 1): well-posedness needs ‖A‖_∞ ≤ κ < 1 "
            "(a contraction), and κ = 0 would force A = 0; choose e.g. kappa=0.95"
        )
    return value


# ---- norms and the κ-ball -------------------------------------------------------------------------
def row_l1_norms(A) -> np.ndarray:
    """Σ_j |A_ij| for every row i (dense or sparse A)."""
    if sp.issparse(A):
        return np.asarray(abs(A).sum(axis=1)).ravel()
    return np.abs(np.asarray(A, dtype=float)).sum(axis=1)


def inf_norm(A) -> float:
    """‖A‖_∞ = max_i Σ_j |A_ij| (0 for an empty matrix); an upper bound on λ_pf(|A|).

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, k)
        The matrix.

    Returns
    -------
    float
        The largest row ℓ1 norm.

    Examples
    --------
    >>> from implicit_cvx import inf_norm
    >>> inf_norm([[0.5, -0.6], [0.3, 0.4]])
    1.1
    """
    norms = row_l1_norms(A)
    return float(norms.max()) if norms.size else 0.0


def in_ball(A, kappa: float) -> bool:
    """‖A‖_∞ ≤ κ(1 + BALL_RTOL): the one test of the well-posedness constraint."""
    return inf_norm(A) <= kappa * (1.0 + BALL_RTOL)


def _radii(radius, m: int) -> np.ndarray:
    """Per-row radii: a scalar broadcast to m rows, or an (m,) array; finite and ≥ 0."""
    r = np.asarray(radius, dtype=float)
    if r.ndim == 0:
        r = np.full(m, float(r))
    elif r.shape != (m,):
        raise ValueError(f"radius must be a scalar or have shape ({m},), got shape {r.shape}")
    if not np.all(np.isfinite(r) & (r >= 0)):
        raise ValueError(f"radius must be finite and nonnegative, got {radius!r}")
    return r


def _project_outside_rows(V: np.ndarray, r: np.ndarray) -> np.ndarray:
    """ℓ1-ball projection of rows known to lie outside (Duchi et al. 2008, sort-based).

    Threshold θ = max_j (S_j − r)/j over the partial sums S_j of the sorted |v|; then
    w = sign(v)·max(|v| − θ, 0). Rounding overshoot of Σ|w| is removed by a tiny shrink.
    """
    absv = np.abs(V)
    partial = np.cumsum(-np.sort(-absv, axis=1), axis=1)
    theta = np.max((partial - r[:, None]) / np.arange(1, V.shape[1] + 1), axis=1)
    W = np.sign(V) * np.maximum(absv - np.maximum(theta, 0.0)[:, None], 0.0)
    total = np.abs(W).sum(axis=1)
    over = total > r
    W[over] *= (r[over] / total[over] * (1.0 - 1e-14))[:, None]
    return W


def row_chunks(rows: np.ndarray, width: int):
    """Slices of `rows` holding about _CHUNK_ENTRIES matrix entries of the given width each."""
    step = max(1, _CHUNK_ENTRIES // max(width, 1))
    return (rows[i : i + step] for i in range(0, rows.size, step))


def project_l1_ball_rows(V, radius) -> np.ndarray:
    """Euclidean projection of each row of V onto {v : ‖v‖_1 ≤ radius} (scalar or per-row).

    Exact and vectorized over rows, O(d log d) per row; rows with ‖v‖_1 ≤ radius(1 + BALL_RTOL)
    are returned unchanged bit for bit, projected rows satisfy ‖w‖_1 ≤ radius.

    Parameters
    ----------
    V : array_like, shape (m, d) or (d,)
        The rows; a 1-D V is one row.
    radius : float or array_like of shape (m,)
        The ball's radius, one for all rows or one per row; finite and ≥ 0.

    Returns
    -------
    ndarray, same shape as V
        The projected rows.

    Raises
    ------
    ValueError
        If V is not a vector or matrix, contains NaN or inf, or a radius is negative or has
        the wrong shape.

    Examples
    --------
    >>> from implicit_cvx import project_l1_ball_rows
    >>> project_l1_ball_rows([[1.0, -1.0], [0.2, 0.1]], 0.5)
    array([[ 0.25, -0.25],
           [ 0.2 ,  0.1 ]])
    """
    V = np.asarray(V, dtype=float)
    single = V.ndim == 1
    V2 = V[None, :] if single else V
    if V2.ndim != 2:
        raise ValueError(f"V must be a vector or a matrix of rows, got shape {V.shape}")
    if not np.all(np.isfinite(V2)):
        raise ValueError(f"V (shape {V.shape}) contains NaN or inf")
    r = _radii(radius, V2.shape[0])
    out = V2.copy()
    outside = np.flatnonzero(np.abs(V2).sum(axis=1) > r * (1.0 + BALL_RTOL))
    for rows in row_chunks(outside, V2.shape[1]):
        out[rows] = _project_outside_rows(V2[rows], r[rows])
    return out[0] if single else out


def project_balls(W: np.ndarray, balls) -> np.ndarray:
    """W (k, d) with the part of every row in each ball (index array, radius) projected onto it."""
    W = np.array(W, dtype=float)
    for idx, radius in balls:
        W[:, idx] = project_l1_ball_rows(W[:, idx], radius)
    return W


def shrink_into_balls(W: np.ndarray, balls) -> np.ndarray:
    """W with each ball part scaled down onto its ball where rounding left it just outside."""
    W = np.array(W, dtype=float)
    for idx, radius in balls:
        norm = np.abs(W[:, idx]).sum(axis=1)
        over = norm > radius
        W[np.ix_(over, idx)] *= (radius / norm[over])[:, None]
    return W


# ---- linear maps with samples as rows --------------------------------------------------------------
def times_transpose(X: np.ndarray, M) -> np.ndarray:
    """X Mᵀ for a dense or scipy.sparse M (samples as rows of X)."""
    if sp.issparse(M):
        return np.asarray((M @ X.T).T)
    return X @ M.T


def pre_activation(model, X: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Z = XAᵀ + UBᵀ + b_x: the argument of φ at states X and inputs U."""
    return times_transpose(X, model.A) + times_transpose(U, model.B) + model.b_x


# ---- one-dimensional search ---------------------------------------------------------------------
def golden_section_max(f, lo, hi, iterations: int = 40):
    """The best value of a concave f seen by golden-section search on [lo, hi] (vectorized: lo,
    hi and f's values may be arrays, one search per entry); the end points are evaluated too."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    best = np.maximum(f(lo), f(hi))
    for _ in range(iterations):
        x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        f1, f2 = f(x1), f(x2)
        best = np.maximum(best, np.maximum(f1, f2))
        left = f1 >= f2
        hi, lo = np.where(left, x2, hi), np.where(left, lo, x1)
    return best


# ---- losses per sample and labels ------------------------------------------------------------------
def cross_entropy(Yhat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Softmax cross-entropy of logits Ŷ (m, K) at labels y, per sample."""
    return logsumexp(Yhat, axis=1) - Yhat[np.arange(len(y)), y]


def cross_entropy_grad(Yhat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂/∂Ŷ of the per-sample cross-entropy: softmax(Ŷ) − e_y."""
    G = softmax(Yhat, axis=1)
    G[np.arange(len(y)), y] -= 1.0
    return G


def hinge_margins(Yhat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Crammer–Singer margins 1 + ŷ_j − ŷ_y (m, K), the true class masked out with −inf."""
    rows = np.arange(len(y))
    M = 1.0 + Yhat - Yhat[rows, y][:, None]
    M[rows, y] = -np.inf
    return M


def hinge(Yhat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiclass hinge max_{j≠y}(1 + ŷ_j − ŷ_y)₊ per sample."""
    return np.maximum(hinge_margins(Yhat, y).max(axis=1), 0.0)


def hinge_grad(Yhat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A subgradient of the per-sample hinge: +1 at the most violated class, −1 at the true one."""
    M = hinge_margins(Yhat, y)
    rows, worst = np.arange(len(y)), M.argmax(axis=1)
    active = M[rows, worst] > 0
    G = np.zeros_like(Yhat)
    G[rows[active], worst[active]] = 1.0
    G[rows[active], y[active]] = -1.0
    return G


def predicted_labels(Yhat) -> np.ndarray:
    """Class indices from outputs: argmax of K ≥ 2 logits, or class 1 iff a single logit is > 0."""
    Yhat = np.asarray(Yhat, dtype=float)
    if Yhat.ndim != 2 or Yhat.shape[1] < 1:
        raise ValueError(f"outputs must be (m, q) with q ≥ 1, got shape {Yhat.shape}")
    return (Yhat[:, 0] > 0).astype(int) if Yhat.shape[1] == 1 else Yhat.argmax(axis=1)


def class_margins(Yhat, y) -> np.ndarray:
    """ŷ_y − max_{j≠y} ŷ_j per sample (for one logit: ŷ for class 1, −ŷ for class 0);
    a sample is correctly classified iff its margin is > 0 (a tie is an error)."""
    Yhat = np.asarray(Yhat, dtype=float)
    y = np.asarray(y, dtype=int)
    if Yhat.shape[1] == 1:
        return np.where(y == 1, Yhat[:, 0], -Yhat[:, 0])
    rows = np.arange(y.size)
    other = Yhat.copy()
    other[rows, y] = -np.inf
    return Yhat[rows, y] - other.max(axis=1, initial=-np.inf)
