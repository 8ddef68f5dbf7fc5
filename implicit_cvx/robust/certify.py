"""Certified output and margin bounds on an ℓ∞ ball of inputs (paper §4), and exact verification.

Only inputs are perturbed (biases never): sample i ranges over the box
[max(u_i − ε, lo), min(u_i + ε, hi)] (ε and the domain (lo, hi) scalars or per feature). Methods,
loosest to tightest:
- "box": Thm 4.1 around the equilibrium at the box centre, x ∈ x̂ ± (I − |A|)⁻¹(|B|h + r𝟙)
  (h the box half-width, r the equilibrium residual, so the box also covers solver error);
- "interval": that box refined by the interval extension of x ↦ φ(Ax + Bu + b_x) (φ monotone),
  intersected at every step, until it stops changing — sound at every step;
- "linear": linear bound propagation through the fixed point (CROWN generalized, `linear.py`)
  on the interval boxes, with every pre-activation bound tightened the same way;
- "linear_alpha": "linear" with the lower slopes of the unstable states optimized per margin;
- "lp": Thm 4.5, the margin minimised over the LP relaxation on the tightened boxes, certified by
  the dual function at the solver's multipliers (weak duality; `lp.py`), max'ed with "linear";
- "exact": ReLU-type models only, the mixed-integer program on the tightened boxes (`exact.py`):
  each sample ends certified, falsified (a checked counterexample) or unknown (time limit).
Margins ŷ_y − ŷ_j are bounded directly ((e_y − e_j)ᵀC, (e_y − e_j)ᵀD folded in first); a model
with one output (a logit: class 1 iff ŷ > 0) has the single margin (2y − 1)ŷ. All floating-point
steps round outward (dot products via the γ_k error bound, then np.nextafter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..equilibrium import input_term
from ..numerics import times_transpose
from . import exact, linear
from .bounds import absolute, dense, gamma, require_pf_below_one, resolvent_upper
from .lp import LPSolver

__all__ = ["METHODS", "CertifyResult", "certify", "input_box", "margin_lower_bounds", "margin_rows",
           "output_bounds"]

METHODS = ("box", "interval", "linear", "linear_alpha", "lp", "exact")
"""The certification methods of `certify`, loosest to tightest; "exact" also decides."""

DECIDING = ("exact",)  # methods that also look for counterexamples
EQ_TOL = 1e-12  # equilibrium tolerance of the starting points (the residual is accounted for)
INTERVAL_TOL = 1e-12  # the interval iteration stops when no bound moves by more than this
INTERVAL_MAX_ITER = 1000
TIME_LIMIT = 60.0  # seconds per sample and ε for "exact"


# ---- validation ---------------------------------------------------------------------------------
def _check_method(method: str, model) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}; choose one of {METHODS}")
    if method not in ("box", "interval") and not model.activation.componentwise:
        raise ValueError(f"method {method!r} relaxes componentwise activations; this model has "
                         "block activations (max-pooling, softmax, gates): use method 'interval'")
    if method == "exact":
        exact.check_model(model)
    return method


def _check_eps(eps, p: int | None = None):
    """ε as a float, or a (p,) array of per-feature radii; finite and ≥ 0."""
    try:
        e = np.asarray(eps, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number ≥ 0 (ℓ∞ radius) or one per feature, got {eps!r}") from None
    if e.ndim > 1 or (e.ndim == 1 and p is not None and e.shape != (p,)):
        raise ValueError(f"eps must be a scalar or one radius per input feature (shape ({p},)), got shape {e.shape}")
    if not np.all(np.isfinite(e) & (e >= 0)):
        raise ValueError(f"eps must be finite and ≥ 0 (ℓ∞ radius), got {eps!r}")
    return float(e) if e.ndim == 0 else e


def check_labels(y, m: int, q: int) -> np.ndarray:
    """Labels as class indices 0..q−1 (0 or 1 for a one-output model)."""
    y = np.asarray(y)
    if y.shape != (m,):
        raise ValueError(f"labels y must be {m} class indices (shape ({m},)), got shape {y.shape}")
    if y.size and not (np.issubdtype(y.dtype, np.number) and np.all(y == np.round(y))):
        raise ValueError(f"labels y must be integer class indices, got {y[:5]!r}…")
    y = y.astype(int)
    classes = max(q, 2)
    if y.size and (y.min() < 0 or y.max() >= classes):
        one = " (one output: class 1 iff ŷ > 0)" if q == 1 else ""
        raise ValueError(f"labels y must be class indices in 0..{classes - 1}{one}, got range {y.min()}..{y.max()}")
    return y


def _check_domain(domain, p: int):
    """(lo, hi) as (p,) arrays (±inf allowed) with lo < hi, from scalars or per-feature arrays."""
    try:
        lo, hi = (np.broadcast_to(np.asarray(v, dtype=float), (p,)) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(
            f"domain must be a pair (lo, hi) of numbers or of ({p},) arrays, got {domain!r}") from None
    if np.any(np.isnan(lo) | np.isnan(hi)) or not np.all(lo < hi):
        raise ValueError(f"domain (lo, hi) needs lo < hi for every feature, got {domain!r}")
    return lo, hi


def input_box(U: np.ndarray, eps, domain=None) -> tuple[np.ndarray, np.ndarray]:
    """[max(U − ε, lo), min(U + ε, hi)] per sample, rounded outward.

    Parameters
    ----------
    U : ndarray, shape (m, p)
        The centres; they must lie in the domain.
    eps : float or array_like of shape (p,)
        The radius, or one radius per feature.
    domain : (lo, hi), optional
        Scalars or (p,) arrays (±inf for an unbounded side); None is unbounded.

    Returns
    -------
    lower, upper : ndarray, shape (m, p)
        The boxes.

    Raises
    ------
    ValueError
        If eps is negative or not finite, the domain is invalid, or U lies outside it.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import robust
    >>> lower, upper = robust.input_box(np.array([[1.0, 0.5]]), 0.05, domain=(0, 1))
    >>> lower, upper
    (array([[0.95, 0.45]]), array([[1.  , 0.55]]))
    """
    U = np.asarray(U, dtype=float)
    e = _check_eps(eps, U.shape[-1])
    lo = np.where(e > 0, np.nextafter(U - e, -np.inf), U)
    hi = np.where(e > 0, np.nextafter(U + e, np.inf), U)
    if domain is not None:
        d_lo, d_hi = _check_domain(domain, U.shape[-1])
        _require_inside(U, d_lo, d_hi, domain)
        lo, hi = np.maximum(lo, d_lo), np.minimum(hi, d_hi)
    return lo, hi


def _inner_box(U: np.ndarray, eps, domain=None) -> tuple[np.ndarray, np.ndarray]:
    """A box inside the ℓ∞ ball ∩ domain (ends rounded inward): where counterexamples live."""
    U = np.asarray(U, dtype=float)
    e = _check_eps(eps, U.shape[-1])
    lo = np.minimum(np.nextafter(np.nextafter(U - e, np.inf), np.inf), U)
    hi = np.maximum(np.nextafter(np.nextafter(U + e, -np.inf), -np.inf), U)
    if domain is not None:
        d_lo, d_hi = _check_domain(domain, U.shape[-1])
        _require_inside(U, d_lo, d_hi, domain)
        lo, hi = np.maximum(lo, d_lo), np.minimum(hi, d_hi)
    return lo, hi


def _require_inside(U, d_lo, d_hi, domain) -> None:
    if U.size and (np.any(U < d_lo) or np.any(U > d_hi)):
        raise ValueError(
            f"inputs range over [{U.min():.6g}, {U.max():.6g}], outside the domain "
            f"{_domain_repr(domain)}: give the domain in the model's input units, or domain=None"
        )


def _domain_repr(domain):
    if domain is None:
        return None
    return tuple(float(v) if np.ndim(v) == 0 else np.asarray(v, dtype=float).tolist() for v in domain)


# ---- boxes --------------------------------------------------------------------------------------
@dataclass
class _Boxes:
    """Sound boxes for a batch: inputs u, states x and pre-activations z (z only after refining)."""

    ul: np.ndarray
    uu: np.ndarray
    xl: np.ndarray
    xu: np.ndarray
    zl: np.ndarray | None = None
    zu: np.ndarray | None = None

    def rows(self, index) -> _Boxes:
        """A copy of the boxes of some samples."""
        return _Boxes(*(None if v is None else np.array(v[index]) for v in
                        (self.ul, self.uu, self.xl, self.xu, self.zl, self.zu)))


def _mid_rad(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and a radius rounded up so that [mid − rad, mid + rad] ⊇ [lo, hi]."""
    mid = 0.5 * (lo + hi)
    return mid, np.nextafter(np.maximum(hi - mid, mid - lo), np.inf)


def _residuals(model, U: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per-sample upper bound of max_i |x̂_i − φ(Ax̂ + Bu + b_x)_i|, rounding included."""
    Z = times_transpose(X, model.A) + input_term(model, U)
    PZ = model.activation.value(Z)
    mag = times_transpose(np.abs(X), absolute(model.A)) + times_transpose(np.abs(U), absolute(model.B))
    mag += np.abs(model.b_x)
    err = gamma(model.n_states + model.n_inputs + 2) * mag + 4 * np.spacing(np.abs(PZ) + np.abs(X))
    if not model.activation.componentwise:  # a block activation mixes the errors of its block
        err = (model.activation.majorant((gamma(model.n_states + model.n_inputs + 2) * mag).T).T
               + model.activation.rounding(PZ) + 4 * np.spacing(np.abs(X)))
    return np.nextafter((np.abs(X - PZ) + err).max(axis=1, initial=0.0), np.inf)


def _start_boxes(model, ul: np.ndarray, uu: np.ndarray, centre=None, X=None, r=None) -> _Boxes:
    """Thm 4.1 box around the equilibrium x̂ at a centre of each input box (its midpoint, or the
    given centre with its equilibrium X), widened by the equilibrium residual:
    x ∈ x̂ ± (I − J|A|)⁻¹(J|B|h + r𝟙), h the largest distance from the centre to the box — one
    verified solve for all samples. J = I for componentwise activations; a block activation
    mixes its block (|φ(z) − φ(z')| ≤ J|z − z'|, see ActivationMap.majorant)."""
    absA, absB = (model.activation.majorant(absolute(M)) for M in (model.A, model.B))
    require_pf_below_one(absA)
    if centre is None:
        centre, h = _mid_rad(ul, uu)
    else:
        h = np.nextafter(np.maximum(centre - ul, uu - centre), np.inf)
    if X is None:
        X, _ = model.equilibrium(centre, return_info=True, tol=EQ_TOL, raise_on_failure=False)
    if r is None:  # the residual bound of X at the centre (given when the caller has it)
        r = _residuals(model, centre, X)
    rhs = np.asarray(absB @ h.T) * (1.0 + gamma(model.n_inputs + 1)) + r[None, :]
    rad = np.nextafter(resolvent_upper(absA, np.nextafter(rhs, np.inf)).T, np.inf)
    return _Boxes(ul, uu, np.nextafter(X - rad, -np.inf), np.nextafter(X + rad, np.inf))


class _Splits:
    """Positive and negative parts of A and B (dense or sparse), computed once per model."""

    def __init__(self, model):
        self.A = [_part(model.A, np.maximum), _part(model.A, np.minimum), absolute(model.A)]
        self.B = [_part(model.B, np.maximum), _part(model.B, np.minimum), absolute(model.B)]


def _part(M, which):
    if sp.issparse(M):
        out = sp.csr_matrix(M, copy=True)
        out.data = which(out.data, 0.0)
        out.eliminate_zeros()
        return out
    return which(M, 0.0)


def _affine_interval(parts, lo: np.ndarray, hi: np.ndarray):
    """Interval of rows lo ≤ v ≤ hi mapped by v ↦ Wv (W = W⁺ + W⁻), rounded outward."""
    Wp, Wn, absW = parts
    low = times_transpose(lo, Wp) + times_transpose(hi, Wn)
    up = times_transpose(hi, Wp) + times_transpose(lo, Wn)
    err = gamma(2 * absW.shape[1] + 4) * times_transpose(np.maximum(np.abs(lo), np.abs(hi)), absW)
    return low - err, up + err


def _z_interval(splits, input_part, xl, xu):
    al, au = _affine_interval(splits.A, xl, xu)
    return np.nextafter(al + input_part[0], -np.inf), np.nextafter(au + input_part[1], np.inf)


def _refine(model, boxes: _Boxes, tol: float = INTERVAL_TOL, max_iter: int = INTERVAL_MAX_ITER):
    """Interval iteration X ← X ∩ φ(AX + BU + b_x) from the start box until no bound moves by
    more than tol; sets the final z box too. Sound at every step (any box containing the
    equilibrium stays containing it under the interval extension)."""
    splits = _Splits(model)
    kl, ku = _affine_interval(splits.B, boxes.ul, boxes.uu)
    input_part = (np.nextafter(kl + model.b_x, -np.inf), np.nextafter(ku + model.b_x, np.inf))
    xl, xu = boxes.xl, boxes.xu
    for _ in range(max_iter):
        zl, zu = _z_interval(splits, input_part, xl, xu)
        nl, nu = linear.state_interval(model, zl, zu)
        nl, nu = np.maximum(xl, nl), np.minimum(xu, nu)
        change = max(np.max(nl - xl, initial=0.0), np.max(xu - nu, initial=0.0))
        xl, xu = nl, nu
        if change <= tol:
            break
    boxes.xl, boxes.xu = xl, xu
    boxes.zl, boxes.zu = _z_interval(splits, input_part, xl, xu)
    return boxes


def _boxes(model, U, eps, method: str, domain) -> _Boxes:
    ul, uu = input_box(U, eps, domain)
    boxes = _start_boxes(model, ul, uu)
    return boxes if method == "box" else _refine(model, boxes)


def _boxes_per_eps(model, U, radii, method: str, domain, X, r=None) -> list[_Boxes]:
    """The boxes of every radius at once (one verified solve, one interval iteration over all
    samples × radii), split per radius; refined boxes start around the samples U with their
    equilibria X (the refinement forgets its start), "box" around each clipped box's midpoint."""
    m, k = U.shape[0], len(radii)
    boxes = [input_box(U, e, domain) for e in radii]
    lo, hi = np.concatenate([b[0] for b in boxes]), np.concatenate([b[1] for b in boxes])
    if method == "box":  # no refinement: start from the tighter box around each clipped box's midpoint
        stacked = _start_boxes(model, lo, hi)
    else:
        r = _residuals(model, U, X) if r is None else r
        stacked = _refine(model, _start_boxes(model, lo, hi, np.tile(U, (k, 1)), np.tile(X, (k, 1)),
                                              np.tile(r, k)))
    return [stacked.rows(slice(j * m, (j + 1) * m)) for j in range(k)]


# ---- margins as linear objectives ---------------------------------------------------------------
def margin_rows(model, y: np.ndarray):
    """The margins of each sample as linear objectives Gx x + Gu u + gb.

    For q ≥ 2 outputs, J = q and row j is ŷ_y − ŷ_j (skip marks j = y); for one output (class 1
    iff ŷ > 0), J = 1 and the margin is (2y − 1)ŷ.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    y : ndarray, shape (m,)
        Labels 0..q−1 (0/1 for one output).

    Returns
    -------
    Gx : ndarray, shape (m, J, n)
    Gu : ndarray, shape (m, J, p)
    gb : ndarray, shape (m, J)
    skip : ndarray of bool, shape (m, J)
        The objectives' coefficients and the entries to ignore.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> Gx, Gu, gb, skip = robust.margin_rows(model, np.array([0]))
    >>> Gx[0], skip[0]
    (array([[ 0.,  0.],
           [ 2., -2.]]), array([ True, False]))
    """
    C, D, m = dense(model.C), dense(model.D), y.size
    if model.n_outputs == 1:
        s = (2.0 * y - 1.0)[:, None]
        return s[:, :, None] * C[None], s[:, :, None] * D[None], s * model.b_y, np.zeros((m, 1), dtype=bool)
    skip = np.zeros((m, model.n_outputs), dtype=bool)
    skip[np.arange(m), y] = True
    return C[y][:, None, :] - C[None], D[y][:, None, :] - D[None], model.b_y[y][:, None] - model.b_y[None], skip


def _clean_margins(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Margins (m, J) of the clean outputs, +inf at the skipped entries (see `margin_rows`)."""
    m = y.size
    if logits.shape[1] == 1:
        return (2.0 * y - 1.0)[:, None] * logits
    out = logits[np.arange(m), y][:, None] - logits
    out[np.arange(m), y] = np.inf
    return out


def _objective_bounds(Gx, Gu, gb, boxes: _Boxes):
    """Lower and upper bounds (m, J) of Gx x + Gu u + gb over the boxes, rounded outward; the
    rows are shared ((J, ·)) or per sample ((m, J, ·))."""
    xm, xr = _mid_rad(boxes.xl, boxes.xu)
    um, ur = _mid_rad(boxes.ul, boxes.uu)

    def apply(v, G):  # rows of v against the objective rows of G
        return v @ G.T if G.ndim == 2 else np.matmul(G, v[:, :, None])[:, :, 0]

    aGx, aGu = np.abs(Gx), np.abs(Gu)
    val = apply(xm, Gx) + apply(um, Gu) + gb
    spread = apply(xr, aGx) + apply(ur, aGu)
    err = gamma(Gx.shape[-1] + Gu.shape[-1] + 6) * (apply(np.abs(xm), aGx) + apply(np.abs(um), aGu)
                                                   + np.abs(gb) + spread)
    return np.nextafter(val - spread - err, -np.inf), np.nextafter(val + spread + err, np.inf)


def _with_skip(lower: np.ndarray, skip: np.ndarray) -> np.ndarray:
    return np.where(skip, np.inf, lower)


# ---- margin bounds per method ---------------------------------------------------------------------
def _undecided(lower: np.ndarray) -> np.ndarray:
    return np.flatnonzero(lower.min(axis=1, initial=np.inf) <= 0)


def _margin_bounds(model, y, boxes: _Boxes, method: str, early_stop: bool):
    """Lower bounds (m, J) of the margins and the boxes they used (tightened for linear-type
    methods). With early_stop the stronger methods only run on samples not yet certified."""
    Gx, Gu, gb, skip = rows = margin_rows(model, y)
    lower = _with_skip(_objective_bounds(Gx, Gu, gb, boxes)[0], skip)
    if method in ("box", "interval"):
        return lower, boxes, rows
    todo = _undecided(lower) if early_stop else np.arange(y.size)
    tight = boxes.rows(slice(None))
    if todo.size:
        part = (Gx[todo], Gu[todo], gb[todo])
        sub = linear.tighten(model, boxes.rows(todo), goal=_goal(model, part, skip[todo]) if early_stop else None)
        for k in ("zl", "zu", "xl", "xu"):
            getattr(tight, k)[todo] = getattr(sub, k)
        lower[todo] = np.maximum(lower[todo], _with_skip(linear.linear_lower_bounds(model, sub, *part), skip[todo]))
        if method == "linear_alpha":
            todo = _undecided(lower) if early_stop else todo
            sub = tight.rows(todo)
            const = np.where(skip[todo], 1.0, gb[todo])  # skipped rows: the constant 1, never in the way
            opt = linear.optimize_slopes(model, sub, Gx[todo], Gu[todo], const, target=0.0 if early_stop else None)
            lower[todo] = np.maximum(lower[todo], _with_skip(opt, skip[todo]))
    if method == "lp":
        lower = _lp_margins(model, rows, tight, lower, early_stop)
    return lower, tight, rows


def _goal(model, rows, skip):
    """The smallest margin lower bound of some samples, from their current boxes."""
    return lambda boxes, index: _with_skip(linear.linear_lower_bounds(
        model, boxes, *(r[index] for r in rows)), skip[index]).min(axis=1, initial=np.inf)


def _lp_margins(model, rows, boxes: _Boxes, lower: np.ndarray, early_stop: bool) -> np.ndarray:
    """Raise the margin lower bounds (m, J) by the LP certificate (where they are ≤ 0 with
    early_stop: a sample is then abandoned at its first margin the LP cannot certify)."""
    Gx, Gu, gb, _ = rows
    out = lower.copy()
    for i in range(out.shape[0]):
        todo = np.flatnonzero((out[i] <= 0) if early_stop else np.isfinite(out[i]))
        if not todo.size:
            continue
        lp = LPSolver(model, boxes, i)
        for j in todo:
            out[i, j] = max(out[i, j], lp.lower_bound(Gx[i, j], Gu[i, j], gb[i, j]))
            if early_stop and out[i, j] <= 0:
                break
    return out


# ---- public API -----------------------------------------------------------------------------------
def output_bounds(model, U, eps, method: str = "linear", domain=None, solver: str = "HIGHS"):
    """Certified (lower, upper) bounds (m, q) of ŷ over the ℓ∞ ball of radius eps around each row of U.

    The ball is clipped to domain=(lo, hi) if given. For "exact", the proven bounds of the
    mixed-integer programs (time limit TIME_LIMIT per output and side).

    Parameters
    ----------
    model : ImplicitModel
        The model.
    U : array_like, shape (m, p)
        The centres.
    eps : float or array_like of shape (p,)
        The radius (one per feature allowed).
    method : str, default="linear"
        The bound: "box", "interval", "linear", "linear_alpha", "lp" or "exact", loosest to
        tightest (see `certify`).
    domain : (lo, hi), optional
        The input domain (scalars or (p,) arrays).
    solver : str, default="HIGHS"
        The LP / MILP solver (HiGHS only).

    Returns
    -------
    lower, upper : ndarray, shape (m, q)
        Certified bounds of every output.

    Raises
    ------
    ValueError
        If the method, solver, eps or domain are invalid, or the method does not apply to the
        model's activation.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> lower, upper = robust.output_bounds(model, [[1.0, 0.0]], 0.05)
    >>> lower.round(4), upper.round(4)
    (array([[ 0.5083, -0.7139]]), array([[ 0.7139, -0.5083]]))
    """
    _check_method(method, model)
    _check_solver(solver)
    U = model.check_inputs(U)
    boxes = _boxes(model, U, eps, "box" if method == "box" else "interval", domain)
    C, D, b = dense(model.C), dense(model.D), model.b_y
    lower, upper = _objective_bounds(C, D, b, boxes)
    if method in ("box", "interval"):
        return lower, upper
    boxes = linear.tighten(model, boxes)
    m, q = lower.shape
    rows = np.broadcast_to(np.concatenate([C, -C])[None], (m, 2 * q, model.n_states))
    cols = np.broadcast_to(np.concatenate([D, -D])[None], (m, 2 * q, model.n_inputs))
    offs = np.broadcast_to(np.concatenate([b, -b])[None], (m, 2 * q))
    both = linear.linear_lower_bounds(model, boxes, rows, cols, offs)
    if method == "linear_alpha":
        both = np.maximum(both, linear.optimize_slopes(model, boxes, rows, cols, offs))
    for i in range(m) if method in ("lp", "exact") else ():
        solve = LPSolver(model, boxes, i).lower_bound if method == "lp" else _exact_bound(model, boxes, i)
        both[i] = np.maximum(both[i], [solve(rows[i, j], cols[i, j], offs[i, j]) for j in range(2 * q)])
    return np.maximum(lower, both[:, :q]), np.minimum(upper, -both[:, q:])


def _exact_bound(model, boxes, i: int):
    return lambda gx, gu, gb: exact.margin_range(model, boxes, i, gx, gu, gb, TIME_LIMIT).lower


def _check_solver(solver: str) -> None:
    if str(solver).upper() != "HIGHS":
        raise ValueError(f"solver {solver!r} is not supported: the LP and MILP are solved with HiGHS (solver='HIGHS')")


def margin_lower_bounds(model, U, y, eps, method: str = "linear", domain=None, solver: str = "HIGHS"):
    """Certified lower bounds (m, J) of the margins over the ℓ∞ ball.

    J = q with entry j the bound of ŷ_y − ŷ_j (+inf at j = y), or J = 1 for a one-output model
    ((2y − 1)ŷ). For "exact", the proven lower bounds of the mixed-integer programs (time limit
    TIME_LIMIT each).

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, shape (m, p)
        The centres.
    y : array_like, shape (m,)
        Labels.
    eps : float or array_like of shape (p,)
        The radius.
    method : str, default="linear"
        The bound: "box", "interval", "linear", "linear_alpha", "lp" or "exact" (see `certify`).
    domain : (lo, hi), optional
        The input domain.
    solver : str, default="HIGHS"
        The LP / MILP solver (HiGHS only).

    Returns
    -------
    ndarray, shape (m, J)
        The bounds; a sample is certified where all are > 0.

    Raises
    ------
    ValueError
        If the method, solver, labels, eps or domain are invalid.

    Examples
    --------
    The box bound does not certify samples 0 and 2 at ε = 0.2; the LP bound does:

    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> robust.margin_lower_bounds(model, U, y, 0.2, method="box", domain=(0, 1)).round(4)
    array([[    inf, -0.2222],
           [ 0.8667,     inf],
           [-0.8222,     inf]])
    >>> robust.margin_lower_bounds(model, U, y, 0.2, method="lp", domain=(0, 1)).round(4)
    array([[   inf, 0.4   ],
           [1.6   ,    inf],
           [0.4222,    inf]])
    """
    _check_method(method, model)
    _check_solver(solver)
    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    boxes = _boxes(model, U, eps, "box" if method == "box" else "interval", domain)
    lower, tight, (Gx, Gu, gb, skip) = _margin_bounds(model, y, boxes, "lp" if method == "exact" else method,
                                                      early_stop=False)
    if method == "exact":
        for i, j in zip(*np.nonzero(~skip), strict=True):
            lower[i, j] = max(lower[i, j], _exact_bound(model, tight, i)(Gx[i, j], Gu[i, j], gb[i, j]))
    return lower


@dataclass
class CertifyResult:
    """Clean and certified accuracy of a classifier on ℓ∞ balls, per sample and ε.

    A bound-only method reports a sample not certified at some ε as uncertified at every larger ε
    without recomputation; "exact" keeps deciding unknown samples at larger ε, and a sample
    falsified at ε stays falsified (same counterexample) at every larger ε.

    Attributes
    ----------
    method : str
        The certification method.
    eps : tuple of float
        The radii.
    clean_accuracy : float
        Share of samples whose every clean margin is > 0.
    certified_accuracy : dict
        ε → share of samples certified at ε.
    certified : ndarray of bool, shape (m, K)
        certified[i, k]: sample i is certified at eps[k] (every margin lower bound > 0).
    predictions : ndarray, shape (m,)
        The clean predicted labels.
    correct : ndarray of bool, shape (m,)
        Clean-correct samples.
    clean_margins : ndarray, shape (m,)
        Each sample's smallest clean margin.
    eps_units : str
        What ε is measured in (from the model's input record).
    preprocessing : dict
        The model's preprocessing record.
    domain : tuple or None
        The input domain used.
    seconds : float
        Wall time.
    status : ndarray of str, shape (m, K)
        "certified", "falsified" or "unknown". A clean-misclassified sample is "falsified" at
        every ε for every method (its clean input is a counterexample); only "exact" falsifies
        clean-correct samples, the bound-only methods leave them "unknown".
    falsified, unknown : dict or None
        For deciding methods ("exact"), the share of ALL m samples with that status per ε, so
        certified_accuracy + falsified + unknown = 1; None for bound-only methods.
    margin_bounds : ndarray, shape (m, K)
        A certified lower bound of sample i's smallest margin at eps[k] (−inf where not
        computed).
    counterexamples : ndarray or None
        For "exact", (m, K, p) inputs inside the ball whose float64 prediction is not the label
        (NaN where none); None otherwise.
    eps_scale : list or None
        Per-feature multipliers of every ε (radius_j = ε·eps_scale_j), or None.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> result = robust.certify(model, U, y, [0.05, 0.2], method="box", domain=(0, 1))
    >>> result.status
    array([['certified', 'unknown'],
           ['certified', 'certified'],
           ['certified', 'unknown']], dtype='<U9')
    """

    method: str
    eps: tuple
    clean_accuracy: float
    certified_accuracy: dict
    certified: np.ndarray
    predictions: np.ndarray
    correct: np.ndarray
    clean_margins: np.ndarray
    eps_units: str
    preprocessing: dict
    domain: tuple | None
    seconds: float
    status: np.ndarray
    falsified: dict | None
    unknown: dict | None
    margin_bounds: np.ndarray
    counterexamples: np.ndarray | None
    eps_scale: list | None = None


def _eps_units(model) -> tuple[dict, str]:
    from ..data import describe_units

    prep = model.metadata.get("preprocessing") or {"kind": "none"}
    return prep, describe_units(prep)


def _check_scale(eps_scale, p: int):
    if eps_scale is None:
        return None
    s = np.asarray(eps_scale, dtype=float)
    if s.shape != (p,) or not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError(f"eps_scale must be {p} finite numbers ≥ 0 (one per input feature), got shape "
                         f"{s.shape}")
    return s


def _decide(model, y, boxes, lower, rows, inner, time_limit, out, k, later):
    """Run the exact program on every sample of the batch; write status / bounds / counterexamples
    into `out` (status, bounds, counter) at column k (falsified also at the columns `later`).
    Returns the mask of samples still alive (not falsified)."""
    status, bounds, counter = out
    alive = np.ones(y.size, dtype=bool)
    Gx, Gu, gb, _ = rows
    for t in range(y.size):
        st, b, u = exact.decide_margins(model, boxes, inner, t, y[t], (Gx[t], Gu[t], gb[t]), lower[t],
                                        time_limit, _clean_margins)
        status[t, k], bounds[t, k] = st, b
        if u is not None:
            alive[t] = False
            status[t, later], counter[t, [k, *later]] = "falsified", u
    return alive


def certify(model, U, y, eps_list, method: str = "linear", domain=None, solver: str = "HIGHS", *,
            eps_scale=None, time_limit: float = TIME_LIMIT) -> CertifyResult:
    """Clean accuracy and certified accuracy for every ε in eps_list.

    A sample counts as clean-correct only if every margin is > 0 (a tie is an error), and as
    certified only if every margin lower bound is > 0, so a certified sample provably keeps its
    label on the whole ball. Methods, loosest to tightest: "box" (Thm 4.1 around the computed
    equilibrium, widened by its residual), "interval" (that box refined by interval iteration),
    "linear" (linear bound propagation through the fixed point), "linear_alpha" (with optimized
    slopes), "lp" (the LP relaxation, Thm 4.5, certified by weak duality), "exact" (ReLU-type
    models: a mixed-integer program deciding each sample). The stronger methods run only where
    the weaker bounds do not certify; "exact" gives each sample at most time_limit seconds per ε.

    Parameters
    ----------
    model : ImplicitModel
        A classifier (q ≥ 2 logits, or one logit: class 1 iff ŷ > 0).
    U : array_like, shape (m, p)
        Inputs, in the model's input units.
    y : array_like, shape (m,)
        Labels 0..q−1.
    eps_list : float or sequence of float
        The radii ε of the ℓ∞ balls.
    method : str, default="linear"
        The certificate: "box", "interval", "linear", "linear_alpha", "lp" or "exact".
    domain : (lo, hi), optional
        The input domain the balls are clipped to (scalars or (p,) arrays).
    solver : str, default="HIGHS"
        The LP / MILP solver (HiGHS only).
    eps_scale : array_like of shape (p,), optional
        Per-feature multipliers: the radius of feature j is ε·eps_scale_j.
    time_limit : float, default=60.0
        Seconds per sample and ε for "exact".

    Returns
    -------
    CertifyResult
        Accuracies, per-sample status and margin bounds.

    Raises
    ------
    ValueError
        If the method, solver, labels, radii, eps_scale or domain are invalid, or the method
        does not apply to the model (e.g. "exact" on a tanh model).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> for method in ("box", "lp"):
    ...     result = robust.certify(model, U, y, [0.05, 0.2], method=method, domain=(0, 1))
    ...     print(method, result.clean_accuracy, {e: round(a, 3) for e, a in result.certified_accuracy.items()})
    box 1.0 {0.05: 1.0, 0.2: 0.333}
    lp 1.0 {0.05: 1.0, 0.2: 1.0}
    """
    start = time.perf_counter()
    _check_method(method, model)
    _check_solver(solver)
    U = model.check_inputs(U)
    m, p = U.shape
    y = check_labels(y, m, model.n_outputs)
    eps = tuple(_check_eps(e) for e in np.atleast_1d(np.asarray(eps_list, dtype=float)))
    if not eps:
        raise ValueError("eps_list is empty: give at least one radius, e.g. [0.0, 0.01]")
    scale = _check_scale(eps_scale, p)
    radii = [e if scale is None else e * scale for e in eps]
    X = model.equilibrium(U, tol=EQ_TOL, raise_on_failure=False)
    logits = model.output(X, U)
    clean_margins = _clean_margins(logits, y).min(axis=1, initial=np.inf)
    correct = clean_margins > 0
    K = len(eps)
    status = np.where(correct[:, None], "unknown", "falsified").astype("<U9").repeat(K, axis=1)
    bounds = np.full((m, K), -np.inf)
    counter = np.full((m, K, p), np.nan) if method in DECIDING else None
    rows = np.flatnonzero(correct)
    # "exact" decides every sample at every ε: the boxes of all radii in one batch. The bound-only
    # methods box a radius only for the samples still certified at the smaller ones (the boxes and
    # bounds are monotone in the radius), which saves most of the work for a list of radii.
    per_eps = (_boxes_per_eps(model, U[rows], radii, method, domain, X[rows])
               if rows.size and method in DECIDING else None)
    r = _residuals(model, U, X) if method != "box" else None  # the centres' residuals, once
    alive = np.ones(rows.size, dtype=bool)
    order = np.argsort(eps, kind="stable")
    for pos, k in enumerate(order):
        idx = np.flatnonzero(alive)
        if not idx.size:
            break
        sel = rows[idx]
        pre = "lp" if method == "exact" else method  # exact starts from lp: never below it, fewer MILPs
        boxes = (per_eps[k].rows(idx) if per_eps is not None
                 else _boxes_per_eps(model, U[sel], [radii[k]], method, domain, X[sel],
                                     None if r is None else r[sel])[0])
        lower, tight, mrows = _margin_bounds(model, y[sel], boxes, pre, early_stop=True)
        if method in DECIDING:
            inner = _inner_box(U[sel], radii[k], domain)
            out = (status[sel], bounds[sel], counter[sel])
            alive[idx] = _decide(model, y[sel], tight, lower, mrows, inner, time_limit, out, k,
                                 list(order[pos + 1:]))
            status[sel], bounds[sel], counter[sel] = out
            continue
        ok = lower.min(axis=1, initial=np.inf) > 0
        status[sel[ok], k] = "certified"
        bounds[sel, k] = lower.min(axis=1, initial=np.inf)
        alive[idx[~ok]] = False
    certified = status == "certified"
    prep, units = _eps_units(model)
    share = (lambda s: {e: float((status[:, k] == s).mean()) if m else float("nan")
                        for k, e in enumerate(eps)}) if method in DECIDING else (lambda s: None)
    from ..train.objective import predicted_labels

    return CertifyResult(
        method=method,
        eps=eps,
        clean_accuracy=float(correct.mean()) if m else float("nan"),
        certified_accuracy={e: float(certified[:, k].mean()) if m else float("nan") for k, e in enumerate(eps)},
        certified=certified,
        predictions=predicted_labels(logits),
        correct=correct,
        clean_margins=clean_margins,
        eps_units=units,
        preprocessing=prep,
        domain=_domain_repr(domain),
        seconds=time.perf_counter() - start,
        status=status,
        falsified=share("falsified"),
        unknown=share("unknown"),
        margin_bounds=bounds,
        counterexamples=counter,
        eps_scale=None if scale is None else scale.tolist(),
    )
