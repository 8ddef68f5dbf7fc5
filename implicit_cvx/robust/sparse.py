"""Sparse (cardinality-constrained) perturbations: certified margins and the attack the LP suggests.

The perturbation set of a sample u: inputs that differ from u in at most k entries, each by at most
ε and inside the domain, δ_j ∈ [−a_j, b_j] with a = min(ε, u − lo), b = min(ε, hi − u). Its convex
hull is exactly {−a_j t_j ≤ δ_j ≤ b_j t_j, 0 ≤ t ≤ 1, Σ t_j ≤ k} (the t-polytope has 0/1 vertices
with at most k ones, and δ is linear in the gauges t), and a linear function gᵀδ has the same
minimum over both: −s_k(w), w_j = |g_j|·(a_j if g_j > 0 else b_j), s_k the sum of the k largest.

- Boxes: the Thm 4.1 box around the computed equilibrium with the sparse input term
  β_i = s_k(|B_i|∘max(a, b)) (paper §4.4), intersected with the closed-form box of
  bounds.sparse_perturbation_bound, then refined by interval iteration with the exact interval of
  B_i δ over the set, [−s_k(B⁺_i a + B⁻_i b), s_k(B⁺_i b + B⁻_i a)].
- LP (Thm 4.5 with the hull above): minimize the margin over z = Ax + Bu + b_x, the boxes, the
  ReLU/leaky/identity relaxation x ≥ z, x ≥ αz, x ≤ s∘z + c, and the hull. Certificate: the
  Lagrangian at HiGHS's multipliers of the equality and the relaxation rows, minimized in closed
  form over the x and z boxes and over the hull (−s_k(w)); a valid lower bound by weak duality for
  any multipliers, rounded outward, and max'ed with the bound of the boxes alone.
- Attack: perturb the k inputs with the largest t_j of the LP solution (ties and the rest by the
  LP sensitivity w_j) to the end of their range in the LP's direction, and check the prediction
  by a float64 equilibrium.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

from ..numerics import class_margins, times_transpose
from .attacks import AttackResult
from .bounds import (
    absolute,
    dense,
    gamma,
    require_pf_below_one,
    residual_widening,
    resolvent_upper,
    sparse_perturbation_bound,
)
from .boxes import EQ_TOL, Boxes, chords, equilibrium_residuals, refine_states
from .certify import check_labels, input_box

__all__ = ["SparseMargins", "sparse_attack", "sparse_closed_form_margins", "sparse_margin_lower_bounds"]

_FLUSH = 1e-12  # LP data below this magnitude go to HiGHS as 0 (the certificate uses exact values)


# ---- the perturbation set ------------------------------------------------------------------------
def _check_k(k, p: int) -> int:
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= p:
        raise ValueError(f"k (the number of inputs that may change) must be an integer in 1..{p}, got {k!r}")
    return int(k)


def sparse_radii(U: np.ndarray, eps, domain=None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): how far each input may move down and up, min(ε, u − lo) and min(ε, hi − u),
    rounded up (certify.input_box's clipped ε-box, measured from u)."""
    lo, hi = input_box(U, eps, domain)
    return np.nextafter(U - lo, np.inf), np.nextafter(hi - U, np.inf)


def top_k_sum(W: np.ndarray, k: int) -> np.ndarray:
    """s_k over the last axis of a nonnegative W, rounded up."""
    p = W.shape[-1]
    top = np.partition(W, p - k, axis=-1)[..., p - k:] if k < p else W
    return np.nextafter(top.sum(axis=-1) * (1 + gamma(k)), np.inf)


def hull_min(g: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """min of gᵀδ over the hull (= over the k-sparse set): −s_k(|g|·(a if g > 0 else b)), rounded
    down; g (…, p), a, b (p,) or broadcastable."""
    return -top_k_sum(np.abs(g) * np.where(g > 0, a, b), k)


# ---- boxes ----------------------------------------------------------------------------------------
def _input_interval(model, U, a, b, k):
    """Sound interval (m, n) of Bu + b_x over every sample's sparse set."""
    Bp, Bn = np.maximum(dense(model.B), 0.0), np.maximum(-dense(model.B), 0.0)
    centre = times_transpose(U, model.B) + model.b_x
    err = gamma(model.n_inputs + 2) * (times_transpose(np.abs(U), absolute(model.B)) + np.abs(model.b_x))
    down = np.stack([top_k_sum(Bp * a[i] + Bn * b[i], k) for i in range(len(U))])
    up = np.stack([top_k_sum(Bp * b[i] + Bn * a[i], k) for i in range(len(U))])
    return np.nextafter(centre - err - down, -np.inf), np.nextafter(centre + err + up, np.inf)


def sparse_boxes(model, U, k: int, eps, domain=None) -> Boxes:
    """Sound per-sample boxes of x and z over the sparse sets (module docstring); ul, uu are the
    clipped ε-box of the inputs (a superset of the sparse set)."""
    if not model.activation.componentwise:
        raise ValueError("sparse certificates need componentwise activations (block activations mix states)")
    U = model.check_inputs(U)
    k = _check_k(k, model.n_inputs)
    require_pf_below_one(model.A)
    a, b = sparse_radii(U, eps, domain)
    X = model.equilibrium(U, tol=EQ_TOL, raise_on_failure=False)
    r = equilibrium_residuals(model, U, X)
    absB = dense(absolute(model.B))
    beta = np.stack([top_k_sum(absB * np.maximum(a[i], b[i]), k) for i in range(len(U))])
    rad = resolvent_upper(absolute(model.A), np.nextafter(beta + r[:, None], np.inf).T).T
    closed = sparse_perturbation_bound(model, k, float(eps)).componentwise + residual_widening(model, r)
    rad = np.nextafter(np.minimum(rad, closed), np.inf)
    xl, xu = np.nextafter(X - rad, -np.inf), np.nextafter(X + rad, np.inf)
    xl, xu, zl, zu = refine_states(model, xl, xu, *_input_interval(model, U, a, b, k))
    return Boxes(U - a, U + b, xl, xu, zl, zu)


# ---- the LP and its certificate -------------------------------------------------------------------
class _SparseLP:
    """min gxᵀx + guᵀδ over (x, z, δ, t) for one sample; `bound` returns our certificate."""

    def __init__(self, model, boxes: Boxes, U, i: int, k: int):
        self.model, self.k, n, p = model, k, model.n_states, model.n_inputs
        self.u0 = U[i]
        self.a, self.b = self.u0 - boxes.ul[i], boxes.uu[i] - self.u0
        self.xl, self.xu, self.zl, self.zu = boxes.xl[i], boxes.xu[i], boxes.zl[i], boxes.zu[i]
        self.P, self.alpha, self.s, self.c = chords(model, self.zl, self.zu)
        A, B = sp.csr_matrix(model.A), sp.csr_matrix(model.B)
        self.A_eq = sp.hstack([-A, sp.identity(n), -B, sp.csr_matrix((n, p))]).tocsr()
        self.b_eq = np.asarray(B @ self.u0).ravel() + model.b_x
        m, rows = len(self.P), np.arange(len(self.P))
        sel = sp.csr_matrix((np.ones(m), (rows, self.P)), shape=(m, n))
        relu = [sp.hstack([-sel, sel]), sp.hstack([-sel, sp.diags(self.alpha) @ sel]),
                sp.hstack([sel, -sp.diags(self.s) @ sel])]
        self.relu = sp.hstack([sp.vstack(relu), sp.csr_matrix((3 * m, 2 * p))]).tocsr()
        I = sp.identity(p)
        hull = sp.vstack([sp.hstack([I, -sp.diags(self.b)]), sp.hstack([-I, -sp.diags(self.a)]),
                          sp.csr_matrix(np.r_[np.zeros(p), np.ones(p)][None, :])])
        self.A_ub = sp.vstack([self.relu, sp.hstack([sp.csr_matrix((2 * p + 1, 2 * n)), hull])]).tocsr()
        self.b_ub = np.r_[np.zeros(2 * m), self.c, np.zeros(2 * p), k]
        self.bounds = np.column_stack([np.r_[self.xl, self.zl, -self.a, np.zeros(p)],
                                       np.r_[self.xu, self.zu, self.b, np.ones(p)]])

    def solve(self, gx, gu):
        """HiGHS on the LP (data below 1e-12 flushed to 0); (ν, μ, primal) or None."""
        n, p = self.model.n_states, self.model.n_inputs
        flush = lambda v: np.where(np.abs(v) < _FLUSH, 0.0, v)  # noqa: E731
        A_ub = self.A_ub.copy()
        A_ub.data = flush(A_ub.data)
        res = so.linprog(np.r_[gx, np.zeros(n), gu, np.zeros(p)], A_ub=A_ub, b_ub=flush(self.b_ub),
                         A_eq=self.A_eq, b_eq=flush(self.b_eq), bounds=flush(self.bounds), method="highs")
        if res.status != 0 or res.eqlin is None:
            return None
        m3 = self.relu.shape[0]
        return -res.eqlin.marginals, np.maximum(-res.ineqlin.marginals[:m3], 0.0), res.x

    def bound(self, gx, gu, gb, nu, mu) -> float:
        """The Lagrangian at (ν, μ ≥ 0) minimized over the x, z boxes and the hull, rounded down."""
        n, p = self.model.n_states, self.model.n_inputs
        coef = np.r_[gx, np.zeros(n), gu, np.zeros(p)] + self.A_eq.T @ nu + self.relu.T @ mu
        cx, cz, cd = coef[:n], coef[n:2 * n], coef[2 * n:2 * n + p]
        m = len(self.P)
        absB, absA = absolute(self.model.B), absolute(self.model.A)
        exact_beq = np.abs(nu) @ (np.asarray(absB @ np.abs(self.u0)).ravel() + np.abs(self.model.b_x))
        value = gb + gu @ self.u0 - nu @ self.b_eq - mu[2 * m:] @ self.c
        value += np.minimum(cx * self.xl, cx * self.xu).sum() + np.minimum(cz * self.zl, cz * self.zu).sum()
        value += hull_min(cd, self.a, self.b, self.k)
        magnitude = (abs(gb) + np.abs(gu) @ np.abs(self.u0) + exact_beq + mu[2 * m:] @ np.abs(self.c)
                     + (np.abs(gx) + np.asarray(absA.T @ np.abs(nu)).ravel() + _relu_mag(self, mu, n))
                     @ np.maximum(np.abs(self.xl), np.abs(self.xu))
                     + (np.abs(nu) + _relu_mag(self, mu, n, z=True)) @ np.maximum(np.abs(self.zl), np.abs(self.zu))
                     + (np.abs(gu) + np.asarray(absB.T @ np.abs(nu)).ravel()) @ np.maximum(self.a, self.b))
        err = gamma(2 * n + 2 * p + 16) * magnitude
        return float(np.nextafter(value - err, -np.inf))


def _relu_mag(lp: _SparseLP, mu, n: int, z: bool = False) -> np.ndarray:
    """Σ |coefficients| of the relaxation rows per state (x or z), for the rounding bound."""
    out, m = np.zeros(n), len(lp.P)
    w = mu[:m] + lp.alpha * mu[m:2 * m] + np.abs(lp.s) * mu[2 * m:] if z else mu[:m] + mu[m:2 * m] + mu[2 * m:]
    np.add.at(out, lp.P, w)
    return out


# ---- margins ----------------------------------------------------------------------------------------
@dataclass
class SparseMargins:
    """Certified lower bounds (m, q) of ŷ_y − ŷ_j over each sample's k-sparse ε-set (+inf at j = y).

    Returned by `sparse_margin_lower_bounds`.

    Attributes
    ----------
    k : int
        Number of inputs that may change.
    eps : float
        The largest change of each.
    method : str
        "box" or "lp".
    lower : ndarray, shape (m, q)
        The certified bounds (method "lp": the LP certificate max'ed with `box`).
    box : ndarray, shape (m, q)
        The bounds of the boxes alone.
    t, delta : ndarray, shape (m, q, p)
        The LP's primal t and δ per margin (NaN where no LP ran).
    reduced_cost : ndarray, shape (m, q, p)
        The coefficient g_j of δ_j in the Lagrangian at the LP's multipliers — its sensitivity
        w_j = |g_j|·range ranks the inputs for the attack.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> sm = robust.sparse_margin_lower_bounds(model, U, y, k=1, eps=0.3, domain=(0, 1))
    >>> sm.box.min(axis=1).round(4), sm.lower.min(axis=1).round(4)
    (array([-0.2778,  1.4   , -0.4444]), array([0.3556, 1.4   , 0.2296]))
    """

    k: int
    eps: float
    method: str
    lower: np.ndarray
    box: np.ndarray
    t: np.ndarray
    delta: np.ndarray
    reduced_cost: np.ndarray


def _margin_rows(model, c: int):
    """(e_c − e_j)ᵀ(C, D, b_y) for every class j: Gx (q, n), Gu (q, p), gb (q,)."""
    C, D = dense(model.C), dense(model.D)
    return C[c] - C, D[c] - D, model.b_y[c] - model.b_y


def _box_margins(model, boxes: Boxes, U, y, k):
    """Bound of every margin from the x box and the hull alone, rounded down."""
    out = np.full((len(y), model.n_outputs), np.inf)
    a, b = U - boxes.ul, boxes.uu - U
    for i, c in enumerate(y):
        Gx, Gu, gb = _margin_rows(model, c)
        xm, xr = 0.5 * (boxes.xl[i] + boxes.xu[i]), 0.5 * (boxes.xu[i] - boxes.xl[i])
        xr = np.nextafter(np.maximum(xr, np.maximum(boxes.xu[i] - xm, xm - boxes.xl[i])), np.inf)
        val = Gx @ xm - np.abs(Gx) @ xr + Gu @ U[i] + gb
        mag = np.abs(Gx) @ (np.abs(xm) + xr) + np.abs(Gu) @ np.abs(U[i]) + np.abs(gb)
        low = np.nextafter(val - gamma(model.n_states + model.n_inputs + 4) * mag, -np.inf)
        low = np.nextafter(low + hull_min(Gu, a[i], b[i], k), -np.inf)
        low[c] = np.inf
        out[i] = low
    return out


def sparse_margin_lower_bounds(model, U, y, k: int, eps, domain=None, method: str = "lp",
                               early_stop: bool = False) -> SparseMargins:
    """Certified margin lower bounds over inputs that differ from each row of U in at most k entries.

    Each changed entry moves by at most eps and stays in the domain. The LP relaxes the exact
    convex hull of that set (see the module docstring) and is certified by weak duality.

    Parameters
    ----------
    model : ImplicitModel
        A classifier with relu, leaky_relu or identity states.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    k : int
        Number of inputs that may change.
    eps : float
        The largest change of each.
    domain : (lo, hi), optional
        The input domain.
    method : {"lp", "box"}, default="lp"
        Boxes alone, or the LP on them.
    early_stop : bool, default=False
        Stop the LPs of a sample at its first margin that stays ≤ 0 (enough to decide
        certification).

    Returns
    -------
    SparseMargins
        The bounds, the LP's primal and reduced costs.

    Raises
    ------
    ValueError
        If k, eps, the method or the domain are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> sm = robust.sparse_margin_lower_bounds(model, U, y, k=1, eps=0.3, domain=(0, 1))
    >>> bool(np.all(sm.lower.min(axis=1) > 0))  # every sample certified
    True
    """
    if method not in ("box", "lp"):
        raise ValueError(f"sparse certification method must be 'box' or 'lp', got {method!r}")
    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    k = _check_k(k, model.n_inputs)
    boxes = sparse_boxes(model, U, k, eps, domain)
    box = _box_margins(model, boxes, U, y, k)
    m, q, p = len(y), model.n_outputs, model.n_inputs
    t, delta, cost = (np.full((m, q, p), np.nan) for _ in range(3))
    lower = box.copy()
    for i in range(m if method == "lp" else 0):
        lp = _SparseLP(model, boxes, U, i, k)
        Gx, Gu, gb = _margin_rows(model, y[i])
        for j in np.argsort(box[i]):
            if j == y[i] or (early_stop and lower[i].min() <= 0):
                continue
            out = lp.solve(Gx[j], Gu[j])
            if out is None:
                continue
            nu, mu, x = out
            lower[i, j] = max(lower[i, j], lp.bound(Gx[j], Gu[j], gb[j], nu, mu))
            n2 = 2 * model.n_states
            delta[i, j], t[i, j] = x[n2:n2 + p], x[n2 + p:]
            cost[i, j] = Gu[j] + (lp.A_eq.T @ nu + lp.relu.T @ mu)[n2:n2 + p]
    return SparseMargins(k, float(eps), method, lower, box, t, delta, cost)


def sparse_closed_form_margins(model, U, y, k: int, eps) -> np.ndarray:
    """The closed-form margin bound of §4.4, for comparison.

    The state box x̂ ± (δ-bound of `sparse_perturbation_bound` + residual widening) and
    s_k(|g_u|ε) for the direct term (no domain clipping, no LP).

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    k : int
        Number of inputs that may change.
    eps : float
        The largest change of each.

    Returns
    -------
    ndarray, shape (m, q)
        Certified margin lower bounds, +inf at j = y.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> robust.sparse_closed_form_margins(model, U, y, 1, 0.3).min(axis=1).round(4)
    array([-0.5778,  0.2   , -0.5556])
    """
    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    X = model.equilibrium(U, tol=EQ_TOL, raise_on_failure=False)
    rad = sparse_perturbation_bound(model, k, float(eps)).componentwise
    rad = rad + residual_widening(model, equilibrium_residuals(model, U, X))
    ones = np.full(model.n_inputs, float(eps))
    boxes = Boxes(U - ones, U + ones, X - rad, X + rad, None, None)
    return _box_margins(model, boxes, U, y, _check_k(k, model.n_inputs))


# ---- the attack ------------------------------------------------------------------------------------
def _candidates(sm: SparseMargins, u: np.ndarray, i: int, a, b) -> list:
    """Perturbed copies of u (sample i): per LP-solved margin, the top-k inputs by t (ties by w)
    and by w alone, each moved to the end of its range in the LP's direction (the sign of δ_j, or
    against the reduced cost where δ_j = 0)."""
    out = []
    for j in np.flatnonzero(np.isfinite(sm.t[i, :, 0])):
        t, d, g = sm.t[i, j], sm.delta[i, j], sm.reduced_cost[i, j]
        w = np.abs(g) * np.where(g > 0, a, b)
        up = np.where(d != 0, d > 0, g < 0)
        for order in (np.lexsort((-w, -np.round(t, 9))), np.argsort(-w, kind="stable")):
            S = order[: sm.k]
            v = u.copy()
            v[S] = np.where(up[S], u[S] + b[S], u[S] - a[S])
            out.append(v)
    return out


def sparse_attack(model, U, y, k: int, eps, domain=None, margins: SparseMargins | None = None) -> AttackResult:
    """The attack the sparse LP suggests, on every correctly classified sample.

    Perturb the k inputs with the largest t_j of the LP solution (ties and the rest by the LP
    sensitivity) to the end of their range in the LP's direction; each candidate is checked by a
    float64 equilibrium and the worst is kept.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    k : int
        Number of inputs changed.
    eps : float
        The largest change of each.
    domain : (lo, hi), optional
        The input domain.
    margins : SparseMargins, optional
        The LP's result for the same (U, y, k, eps, domain), if already computed.

    Returns
    -------
    AttackResult
        kind "sparse_lp".

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.sparse_attack(model, U, y, 1, 0.5, domain=(0, 1))
    >>> result.changed
    array([ True, False,  True])
    """
    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    sm = margins or sparse_margin_lower_bounds(model, U, y, k, eps, domain)
    lo, hi = input_box(U, eps, domain)
    a, b = U - lo, hi - U
    logits = model.predict(U, tol=EQ_TOL, raise_on_failure=False)
    best, best_logits = U.copy(), logits.copy()
    best_margin = class_margins(logits, y)
    for i in np.flatnonzero(best_margin > 0):
        cands = _candidates(sm, U[i], i, a[i], b[i])
        if not cands:
            continue
        V = np.clip(np.array(cands), lo[i], hi[i])
        L = model.predict(V, tol=EQ_TOL, raise_on_failure=False)
        mar = class_margins(L, np.full(len(V), y[i]))
        j = int(np.argmin(mar))
        if mar[j] < best_margin[i]:
            best[i], best_logits[i], best_margin[i] = V[j], L[j], mar[j]
    correct = class_margins(logits, y) > 0
    changed = correct & (best_logits.argmax(axis=1) != logits.argmax(axis=1))
    n_correct = int(correct.sum())
    return AttackResult(kind="sparse_lp", fraction=None, k=sm.k, eps=float(eps),
                        success_rate=float(changed.sum() / n_correct) if n_correct else float("nan"),
                        samples=len(y), n_correct=n_correct, correct=correct, changed=changed,
                        predictions=logits.argmax(axis=1), adversarial_predictions=best_logits.argmax(axis=1),
                        adversarial_margins=best_margin, U_adv=best)
