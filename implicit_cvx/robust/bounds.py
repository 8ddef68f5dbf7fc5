"""Sensitivity and perturbation bounds of implicit models (paper §4).

Everything is computed by linear solves with (I − |A|) (sparse LU for sparse A), never with an
explicit inverse. Results of the solves are *verified upper bounds*: Y is accepted only when
(I − M)Y ≥ R holds with the floating-point error of that check accounted for, which implies
Y ≥ (I − M)⁻¹R because (I − M)⁻¹ ≥ 0 when λ_pf(M) < 1. Samples are rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..wellposed import inf_norm, pf_eigenvalue

__all__ = [
    "LipschitzBound",
    "SparseBound",
    "lipschitz_bound",
    "residual_widening",
    "sensitivity_matrix",
    "sparse_perturbation_bound",
    "state_bounds",
]

UNIT_ROUNDOFF = np.finfo(float).eps / 2
_INFLATIONS = (1e-12, 1e-9, 1e-6, 1e-3)  # relative inflations tried by the verified solve
_RESCALE_STEPS = (0.1, 0.5, 0.9)  # κ = λ_pf + t(1 − λ_pf) tried for the rescaled scalar bound


def gamma(k: int) -> float:
    """γ_k = k·u/(1 − k·u): the relative error bound of a k-term floating-point dot product."""
    return k * UNIT_ROUNDOFF / (1.0 - k * UNIT_ROUNDOFF)


def absolute(M):
    """|M| for a dense or scipy.sparse matrix (sparse stays CSR)."""
    return abs(sp.csr_matrix(M)) if sp.issparse(M) else np.abs(np.asarray(M, dtype=float))


def dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M, dtype=float)


def _matmul(M, Y: np.ndarray) -> np.ndarray:
    return np.asarray(M @ Y)


def require_componentwise(model, what: str) -> None:
    """The bounds of Thm 4.1/4.3 take φ componentwise non-expansive; a model with block
    activations (max-pooling, softmax, gates) is refused by name (use certify's interval method)."""
    if not model.activation.componentwise:
        names = sorted({act.name for act, _, _ in model.activation.blocks if not act.componentwise})
        raise ValueError(f"{what} assumes componentwise activations, but this model has block "
                         f"activation(s) {names}; bound it with certify(..., method='interval')")


def require_pf_below_one(A) -> float:
    """An upper bound of λ_pf(|A|) below 1 (‖A‖_∞ when that is < 1, else λ_pf itself), or a
    ValueError when λ_pf(|A|) ≥ 1 (the bounds of §4 need (I − |A|)⁻¹ ≥ 0)."""
    norm = inf_norm(A)
    if norm < 1.0:
        return norm
    lam = pf_eigenvalue(A)
    if not lam < 1.0:
        raise ValueError(
            f"the robustness bounds need λ_pf(|A|) < 1, but λ_pf(|A|) = {lam:.6g}: (I − |A|)⁻¹ is "
            "not a nonnegative matrix; project A onto ‖A‖_∞ ≤ κ < 1 (wellposed.project_inf_ball) "
            "or train with kappa < 1"
        )
    return lam


def _solve(I_minus_M, R: np.ndarray) -> np.ndarray:
    if sp.issparse(I_minus_M):
        return np.asarray(spla.splu(sp.csc_matrix(I_minus_M)).solve(np.asarray(R, dtype=float)))
    return np.linalg.solve(I_minus_M, R)


def resolvent_upper(M, R: np.ndarray) -> np.ndarray:
    """A verified Y ≥ (I − M)⁻¹R for nonnegative M (n, n) with λ_pf(M) < 1 and R ≥ 0 (n, k).

    Y = (1 + δ)Y₀ + δ·max(Y₀)·v with Y₀ the LU solution and v = (I − M)⁻¹𝟙, so that (I − M)Y − R
    is positive in exact arithmetic; it is accepted once it exceeds the rounding error bound of
    its own evaluation, for the smallest δ in 1e-12, 1e-9, 1e-6, 1e-3.
    """
    R = np.asarray(R, dtype=float)
    vector = R.ndim == 1
    R2 = R[:, None] if vector else R
    n = M.shape[0]
    if n == 0:
        return R.copy()
    I_minus_M = sp.identity(n, format="csr") - M if sp.issparse(M) else np.eye(n) - M
    sol = _solve(I_minus_M, np.column_stack([R2, np.ones(n)]))
    Y0, v = np.maximum(sol[:, :-1], 0.0), np.maximum(sol[:, -1:], 0.0)
    scale = np.maximum(Y0.max(axis=0, initial=0.0), R2.max(axis=0, initial=0.0))
    row_nnz = np.diff(sp.csr_matrix(M).indptr) if sp.issparse(M) else np.full(n, n)
    g = gamma(int(row_nnz.max(initial=0)) + 3)
    for delta in _INFLATIONS:
        Y = (1.0 + delta) * Y0 + delta * scale * v
        MY = _matmul(M, Y)
        slack = Y - MY - R2
        err = g * (Y + MY + R2)
        if np.all(slack >= err):
            return Y[:, 0] if vector else Y
    raise ValueError(
        f"(I − |A|) is too ill-conditioned for verified bounds (n = {n}): λ_pf(|A|) is too close "
        "to 1; train or project A to a smaller kappa"
    )


def _check_sigma(sigma_u, p: int) -> np.ndarray:
    """σ_u as a finite nonnegative (p,) or (m, p) array (a scalar is broadcast to (p,))."""
    s = np.asarray(sigma_u, dtype=float)
    if s.ndim == 0:
        s = np.full(p, float(s))
    if s.shape[-1:] != (p,) or s.ndim > 2:
        raise ValueError(f"sigma_u must be a scalar, shape ({p},) or (m, {p}); got shape {s.shape}")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError("sigma_u must be finite and nonnegative (half-widths of the input box)")
    return s


# ---- componentwise bounds ---------------------------------------------------------------------
def sensitivity_matrix(model) -> np.ndarray:
    """S = |C|(I − |A|)⁻¹|B| + |D| (q, p), so |ŷ(u) − ŷ(u₀)| ≤ S|u − u₀| (Thm 4.3).

    Solves with |B| (p right-hand sides) or with |C|ᵀ against (I − |A|ᵀ) (q of them), whichever
    is fewer; the result is a verified upper bound of the exact S.

    Parameters
    ----------
    model : ImplicitModel
        A model with componentwise activations and λ_pf(|A|) < 1.

    Returns
    -------
    ndarray, shape (q, p)
        S.

    Raises
    ------
    ValueError
        If λ_pf(|A|) ≥ 1 or the model has block activations.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.sensitivity_matrix(model).round(4)
    array([[2.1667, 3.    ],
           [2.1667, 3.    ]])
    """
    require_componentwise(model, "the sensitivity matrix")
    require_pf_below_one(model.A)
    absA, absB, absC = absolute(model.A), absolute(model.B), absolute(model.C)
    if model.n_inputs <= model.n_outputs:
        S = _matmul(absC, resolvent_upper(absA, dense(absB)))
    else:
        S = _matmul(absB.T, resolvent_upper(absA.T, dense(absC).T)).T
    S = (S + dense(absolute(model.D))) * (1.0 + gamma(model.n_states + 2))
    return np.nextafter(S, np.inf)  # covers the rounding of the last product and sum


def state_bounds(model, sigma_u) -> np.ndarray:
    """σ_x = (I − |A|)⁻¹|B|σ_u: |u − u₀| ≤ σ_u ⇒ |x − x₀| ≤ σ_x (Thm 4.1).

    Parameters
    ----------
    model : ImplicitModel
        A model with componentwise activations and λ_pf(|A|) < 1.
    sigma_u : float or array_like of shape (p,) or (m, p)
        Half-widths of the input box (one box per sample for (m, p)); finite and ≥ 0.

    Returns
    -------
    ndarray, shape (n,) or (m, n)
        σ_x.

    Raises
    ------
    ValueError
        If sigma_u has the wrong shape or negative entries, or λ_pf(|A|) ≥ 1.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.state_bounds(model, 0.1).round(4)
    array([0.3056, 0.2111])
    """
    require_componentwise(model, "the state bounds")
    require_pf_below_one(model.A)
    s = _check_sigma(sigma_u, model.n_inputs)
    rhs = _matmul(absolute(model.B), np.atleast_2d(s).T)
    rhs = np.nextafter(rhs * (1.0 + gamma(model.n_inputs)), np.inf)
    X = resolvent_upper(absolute(model.A), rhs).T
    return X[0] if s.ndim == 1 else X


def residual_widening(model, r) -> np.ndarray:
    """(I − |A|)⁻¹ r𝟙: how far a computed equilibrium can be from the true one.

    A computed x̂ with max |x̂ − φ(Ax̂ + Bu + b_x)| ≤ r lies this close (componentwise) to the
    true equilibrium (valid when λ_pf(|A|) < 1).

    Parameters
    ----------
    model : ImplicitModel
        The model.
    r : float or array_like of shape (m,)
        The residual bound, one for all or one per sample; finite and ≥ 0.

    Returns
    -------
    ndarray, shape (n,) or (m, n)
        The componentwise distance bound.

    Raises
    ------
    ValueError
        If r is negative, not finite or of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> robust.residual_widening(model, 1e-3).round(6)
    array([0.001667, 0.001333])
    """
    require_componentwise(model, "the residual widening")
    require_pf_below_one(model.A)
    r = np.asarray(r, dtype=float)
    if r.ndim > 1 or not np.all(np.isfinite(r) & (r >= 0)):
        raise ValueError(f"residual r must be a finite nonnegative scalar or (m,) array, got {r!r}")
    base = resolvent_upper(absolute(model.A), np.ones(model.n_states))
    return np.nextafter(r[..., None] * base, np.inf) if r.ndim else np.nextafter(r * base, np.inf)


@dataclass(frozen=True)
class SparseBound:
    """Bounds on ‖x − x₀‖_∞ when at most k inputs change by at most σ_u (§4.4).

    Returned by `sparse_perturbation_bound`.

    Attributes
    ----------
    k : int
        Number of inputs that may change.
    delta : float
        max_i s_k(σ_u ∘ |B|ᵀe_i), s_k the sum of the k largest entries.
    scalar : float
        δ/(1 − ‖A‖_∞) (inf when ‖A‖_∞ ≥ 1).
    componentwise : ndarray, shape (n,)
        (I − |A|)⁻¹β with β_i = s_k(σ_u ∘ |B|ᵀe_i), never larger than `scalar`.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> bound = robust.sparse_perturbation_bound(model, k=1, sigma_u=0.1)
    >>> round(bound.scalar, 4), bound.componentwise.round(4)
    (0.2, array([0.1667, 0.1333]))
    """

    k: int
    delta: float
    scalar: float
    componentwise: np.ndarray

    @property
    def value(self) -> float:
        """The tighter of the two bounds on ‖x − x₀‖_∞."""
        return float(min(self.scalar, self.componentwise.max(initial=0.0)))


def _top_k_row_sums(M, k: int, chunk_entries: int = 1 << 22) -> np.ndarray:
    """Sum of the k largest entries of every row of a nonnegative dense or sparse M."""
    n, p = M.shape
    out = np.empty(n)
    step = max(1, chunk_entries // max(p, 1))
    for start in range(0, n, step):
        rows = dense(M[start : start + step])
        top = np.partition(rows, p - k, axis=1)[:, p - k :] if k < p else rows
        out[start : start + step] = top.sum(axis=1)
    return out


def sparse_perturbation_bound(model, k: int, sigma_u) -> SparseBound:
    """Bound on ‖x − x₀‖_∞ for inputs differing from u₀ in at most k entries, |u − u₀| ≤ σ_u (§4.4).

    The componentwise form (valid when λ_pf(|A|) < 1) is what rescalings can reach.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    k : int
        Number of inputs that may change, 1 ≤ k ≤ p.
    sigma_u : float or array_like of shape (p,)
        The largest change of each input.

    Returns
    -------
    SparseBound
        The scalar and componentwise bounds.

    Raises
    ------
    ValueError
        If k is outside 1..p or sigma_u has the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> bound = robust.sparse_perturbation_bound(model, k=1, sigma_u=0.1)
    >>> round(bound.delta, 4), bound.componentwise.round(4)
    (0.1, array([0.1667, 0.1333]))
    """
    require_componentwise(model, "the sparse-perturbation bound")
    p = model.n_inputs
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= p:
        raise ValueError(f"k (number of perturbed inputs) must be an integer in 1..{p}, got {k!r}")
    k = int(k)
    require_pf_below_one(model.A)
    s = _check_sigma(sigma_u, p)
    if s.ndim != 1:
        raise ValueError(f"sigma_u must be a scalar or shape ({p},) here, got shape {s.shape}")
    absB = absolute(model.B)
    weighted = absB.multiply(s[None, :]).tocsr() if sp.issparse(absB) else absB * s[None, :]
    beta = np.nextafter(_top_k_row_sums(weighted, k) * (1.0 + gamma(k)), np.inf)
    delta = float(beta.max(initial=0.0))
    norm = inf_norm(model.A)
    scalar = float(delta / (1.0 - norm) * (1.0 + gamma(3))) if norm < 1.0 else np.inf
    return SparseBound(k, delta, scalar, resolvent_upper(absolute(model.A), beta))


# ---- scalar Lipschitz bounds ------------------------------------------------------------------
@dataclass(frozen=True)
class LipschitzBound:
    """ℓ∞ Lipschitz bounds of u ↦ ŷ, loosest to tightest.

    Returned by `lipschitz_bound`.

    Attributes
    ----------
    inf_norm_bound : float
        ‖B‖_∞‖C‖_∞/(1 − ‖A‖_∞) + ‖D‖_∞ (eq. 4.8; inf when ‖A‖_∞ ≥ 1).
    rescaled_bound : float
        The same on diagonally rescaled weights (SAS⁻¹, SB, CS⁻¹), minimised over a few
        scalings.
    sensitivity_bound : float
        ‖S‖_∞, invariant under those scalings and never larger.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> bound = robust.lipschitz_bound(model)
    >>> round(bound.inf_norm_bound, 4), round(bound.rescaled_bound, 4), round(bound.sensitivity_bound, 4)
    (8.0, 5.5986, 5.1667)
    """

    inf_norm_bound: float
    rescaled_bound: float
    sensitivity_bound: float

    @property
    def value(self) -> float:
        return min(self.inf_norm_bound, self.rescaled_bound, self.sensitivity_bound)


def _scalar_bound(normA: float, normB: float, normC: float, normD: float) -> float:
    if normA >= 1.0:
        return np.inf
    return float(np.nextafter(normB * normC / (1.0 - normA) + normD, np.inf) * (1.0 + 8 * UNIT_ROUNDOFF))


def _row_sums(M) -> np.ndarray:
    return np.asarray(absolute(M).sum(axis=1)).ravel()


def lipschitz_bound(model) -> LipschitzBound:
    """ℓ∞ Lipschitz bounds (eq. 4.8 and ‖S‖_∞, Thm 4.3); needs λ_pf(|A|) < 1.

    The rescaled form uses w = (κI − |A|)⁻¹𝟙 for κ = λ_pf + t(1 − λ_pf), t ∈ {0.1, 0.5, 0.9}
    (paper §2): ‖SAS⁻¹‖_∞ = max (|A|w)_i/w_i, ‖SB‖_∞ = max ‖b_i‖₁/w_i, ‖CS⁻¹‖_∞ = ‖|C|w‖_∞. It is
    an upper bound of ‖S‖_∞ (S does not change under the scaling), so it is valid for every
    CONE φ — positive homogeneity is only needed for the rescaled *model* to predict the same.

    Parameters
    ----------
    model : ImplicitModel
        A model with componentwise activations.

    Returns
    -------
    LipschitzBound
        The three bounds, loosest to tightest.

    Raises
    ------
    ValueError
        If λ_pf(|A|) ≥ 1.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> round(robust.lipschitz_bound(model).sensitivity_bound, 4)
    5.1667
    """
    require_componentwise(model, "the Lipschitz bound")
    require_pf_below_one(model.A)
    lam = pf_eigenvalue(model.A)
    absA = absolute(model.A)
    rowB, normD = _row_sums(model.B), inf_norm(model.D)
    plain = _scalar_bound(inf_norm(model.A), float(rowB.max(initial=0.0)), inf_norm(model.C), normD)
    rescaled = np.inf
    n = model.n_states
    for t in _RESCALE_STEPS:
        kappa = lam + t * (1.0 - lam)
        w = resolvent_upper(absA / kappa, np.ones(n)) / kappa  # (κI − |A|)⁻¹𝟙, positive
        if n == 0 or not np.all(w > 0):
            continue
        normA = float(np.max(_matmul(absA, w) / w))
        normC = float(np.max(_matmul(absolute(model.C), w), initial=0.0))
        normB = float(np.max(rowB / w))
        rescaled = min(rescaled, _scalar_bound(normA, normB, normC, normD))
    sens = float(sensitivity_matrix(model).sum(axis=1).max(initial=0.0))
    return LipschitzBound(plain, rescaled, float(np.nextafter(sens * (1.0 + gamma(model.n_inputs)), np.inf)))
