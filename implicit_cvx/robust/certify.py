"""Certified output and margin bounds on an ℓ∞ ball of inputs (paper §4, DESIGN §7).

Only inputs are perturbed (biases never): sample i ranges over the box
[max(u_i − ε, lo), min(u_i + ε, hi)]. Methods, loosest to tightest:
- "box": Thm 4.1 around the equilibrium at the box centre, x ∈ x̂ ± (I − |A|)⁻¹(|B|h + r𝟙)
  (h the box half-width, r the equilibrium residual, so the box also covers solver error);
- "interval": that box refined by the interval extension of x ↦ φ(Ax + Bu + b_x) (φ monotone),
  intersected at every step, until it stops changing — sound at every step;
- "lp": Thm 4.5, the margin minimised over an LP relaxation (z = Ax + Bu + b_x, the interval
  boxes of u, x, z, and for relu / leaky_relu / identity states x ≥ z, x ≥ αz and the upper
  chord; other activations keep the interval box only). The certificate is the Lagrangian
  evaluated at the solver's multipliers and minimised in closed form over the boxes (weak
  duality), so it is valid even if the solver stopped early; it is max'ed with "interval".
Margins ŷ_y − ŷ_j are bounded directly ((e_y − e_j)ᵀC, (e_y − e_j)ᵀD folded in first). All
floating-point steps round outward (dot products via the γ_k error bound, then np.nextafter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..equilibrium import input_term
from ..numerics import times_transpose
from .bounds import UNIT_ROUNDOFF, absolute, dense, gamma, require_pf_below_one, resolvent_upper

__all__ = ["METHODS", "CertifyResult", "certify", "input_box", "margin_lower_bounds", "output_bounds"]

METHODS = ("box", "interval", "lp")
EQ_TOL = 1e-12  # equilibrium tolerance of the starting points (the residual is accounted for)
INTERVAL_TOL = 1e-12  # the interval iteration stops when no bound moves by more than this
INTERVAL_MAX_ITER = 1000
_CHORD_ACTIVATIONS = ("relu", "leaky_relu", "identity")  # convex piecewise linear: LP relaxation


# ---- validation ---------------------------------------------------------------------------------
def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}; choose one of {METHODS}")
    return method


def _check_eps(eps) -> float:
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number ≥ 0 (ℓ∞ radius), got {eps!r}") from None
    if not (np.isfinite(e) and e >= 0):
        raise ValueError(f"eps must be a finite number ≥ 0 (ℓ∞ radius), got {eps!r}")
    return e


def check_labels(y, m: int, q: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (m,):
        raise ValueError(f"labels y must be {m} class indices (shape ({m},)), got shape {y.shape}")
    if y.size and not (np.issubdtype(y.dtype, np.number) and np.all(y == np.round(y))):
        raise ValueError(f"labels y must be integer class indices, got {y[:5]!r}…")
    y = y.astype(int)
    if y.size and (y.min() < 0 or y.max() >= q):
        raise ValueError(f"labels y must be class indices in 0..{q - 1}, got range {y.min()}..{y.max()}")
    return y


def input_box(U: np.ndarray, eps, domain=None) -> tuple[np.ndarray, np.ndarray]:
    """[max(U − ε, lo), min(U + ε, hi)] per sample, rounded outward; U must lie in the domain."""
    e = _check_eps(eps)
    lo, hi = np.nextafter(U - e, -np.inf), np.nextafter(U + e, np.inf)
    if e == 0:
        lo, hi = U.copy(), U.copy()
    if domain is not None:
        try:
            d_lo, d_hi = (float(v) for v in domain)
        except (TypeError, ValueError):
            raise ValueError(f"domain must be a pair (lo, hi), got {domain!r}") from None
        if not d_lo < d_hi:
            raise ValueError(f"domain (lo, hi) needs lo < hi, got {domain!r}")
        if U.size and (U.min() < d_lo or U.max() > d_hi):
            raise ValueError(
                f"inputs range over [{U.min():.6g}, {U.max():.6g}], outside the domain "
                f"{(d_lo, d_hi)}: give the domain in the model's input units, or domain=None"
            )
        lo, hi = np.maximum(lo, d_lo), np.minimum(hi, d_hi)
    return lo, hi


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


def _start_boxes(model, ul: np.ndarray, uu: np.ndarray) -> _Boxes:
    """Thm 4.1 box around the equilibrium at the centre of each input box, widened by the
    equilibrium residual: x ∈ x̂ ± (I − J|A|)⁻¹(J|B|h + r𝟙) — one verified solve for both
    (J = I unless block activations couple states: see ActivationMap.majorant)."""
    # |φ(z) − φ(z')| ≤ J|z − z'| (J = I for CONE states; block activations mix their block)
    absA, absB = (model.activation.majorant(absolute(M)) for M in (model.A, model.B))
    require_pf_below_one(absA)
    centre, h = _mid_rad(ul, uu)
    X, _ = model.equilibrium(centre, return_info=True, tol=EQ_TOL, raise_on_failure=False)
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


def _activation_interval(model, zl: np.ndarray, zu: np.ndarray):
    """Sound bounds of φ(z) over the box [zl, zu], each activation by its own rule and rounded
    outward: [φ(zl), φ(zu)] for a monotone scalar φ, the window maxima for max-pooling, …"""
    return model.activation.interval(zl, zu)


def _z_interval(splits, input_part, xl, xu):
    al, au = _affine_interval(splits.A, xl, xu)
    return np.nextafter(al + input_part[0], -np.inf), np.nextafter(au + input_part[1], np.inf)


def _refine(model, boxes: _Boxes, tol: float = INTERVAL_TOL, max_iter: int = INTERVAL_MAX_ITER):
    """Interval iteration X ← X ∩ φ(AX + BU + b_x) from the start box until no bound moves by
    more than tol; sets the final z box too. Sound at every step (DESIGN §7)."""
    splits = _Splits(model)
    kl, ku = _affine_interval(splits.B, boxes.ul, boxes.uu)
    input_part = (np.nextafter(kl + model.b_x, -np.inf), np.nextafter(ku + model.b_x, np.inf))
    xl, xu = boxes.xl, boxes.xu
    for _ in range(max_iter):
        zl, zu = _z_interval(splits, input_part, xl, xu)
        nl, nu = _activation_interval(model, zl, zu)
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


# ---- linear objectives over boxes ---------------------------------------------------------------
def _objective_bounds(Gx, Gu, gb, boxes: _Boxes, rows=slice(None)):
    """Lower and upper bounds (m, J) of Gx x + Gu u + gb over the boxes, rounded outward."""
    xm, xr = _mid_rad(boxes.xl[rows], boxes.xu[rows])
    um, ur = _mid_rad(boxes.ul[rows], boxes.uu[rows])
    aGx, aGu = np.abs(Gx), np.abs(Gu)
    val = xm @ Gx.T + um @ Gu.T + gb
    spread = xr @ aGx.T + ur @ aGu.T
    err = gamma(Gx.shape[1] + Gu.shape[1] + 6) * (np.abs(xm) @ aGx.T + np.abs(um) @ aGu.T + np.abs(gb) + spread)
    return np.nextafter(val - spread - err, -np.inf), np.nextafter(val + spread + err, np.inf)


def _margin_objective(model, c: int):
    """(e_c − e_j)ᵀ(C, D, b_y) for every class j: rows Gx (q, n), Gu (q, p), gb (q,)."""
    C, D = dense(model.C), dense(model.D)
    return C[c] - C, D[c] - D, model.b_y[c] - model.b_y


def _box_margins(model, y: np.ndarray, boxes: _Boxes) -> np.ndarray:
    """Lower bounds of ŷ_y − ŷ_j (m, q) from the boxes; +inf at j = y."""
    out = np.empty((y.size, model.n_outputs))
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        out[rows] = _objective_bounds(*_margin_objective(model, c), boxes, rows)[0]
        out[rows, c] = np.inf
    return out


# ---- LP relaxation (Thm 4.5) -----------------------------------------------------------------------
class _LinearRelaxation:
    """min gxᵀx + guᵀu over u, x, z in their boxes, z = Ax + Bu + b_x and, for the chord states
    P, x ≥ z, x ≥ αz, x ≤ s∘z + c: one parametrized cvxpy problem per model, reused for every
    sample and objective. `lower_bound` returns the weak-duality certificate, not the optimum."""

    def __init__(self, model, solver: str = "HIGHS"):
        import cvxpy as cp

        self.model, self.solver = model, solver
        n, p = model.n_states, model.n_inputs
        P, alpha = [], []
        for act, a, b in model.activation.blocks:
            if act.name in _CHORD_ACTIVATIONS:
                P.extend(range(a, b))
                alpha.extend([act.alpha if act.name == "leaky_relu" else float(act.name == "identity")] * (b - a))
        self.P, self.alpha = np.array(P, dtype=int), np.array(alpha)
        self.x, self.z, self.u = cp.Variable(n), cp.Variable(n), cp.Variable(p)
        names = ("xl", "xu", "zl", "zu")
        self.par = {k: cp.Parameter(n) for k in names}
        self.par.update(ul=cp.Parameter(p), uu=cp.Parameter(p), gx=cp.Parameter(n), gu=cp.Parameter(p))
        if len(P):
            self.par.update(s=cp.Parameter(len(P)), c=cp.Parameter(len(P)))
        x, z, u, par = self.x, self.z, self.u, self.par
        self.eq = z == cp.Constant(model.A) @ x + cp.Constant(model.B) @ u + model.b_x
        cons = [self.eq, x >= par["xl"], x <= par["xu"], z >= par["zl"], z <= par["zu"],
                u >= par["ul"], u <= par["uu"]]
        self.relax = []
        if len(P):
            zP, xP = z[self.P], x[self.P]
            self.relax = [zP - xP <= 0, cp.multiply(self.alpha, zP) - xP <= 0,
                          xP - cp.multiply(par["s"], zP) - par["c"] <= 0]
        self.problem = cp.Problem(cp.Minimize(par["gx"] @ x + par["gu"] @ u), cons + self.relax)
        self.absA, self.absB = absolute(model.A), absolute(model.B)
        self._solver_error = cp.SolverError

    def set_sample(self, boxes: _Boxes, i: int) -> None:
        """Load sample i's boxes and the upper chords of its chord states. The solver sees them
        with magnitudes below 1e-12 flushed to 0 (subnormals upset HiGHS); the certificate uses
        the exact, sound values — any multipliers give a valid bound."""
        self.sample = {k: getattr(boxes, k)[i] for k in ("xl", "xu", "zl", "zu", "ul", "uu")}
        self.chord = (np.zeros(0), np.zeros(0))
        if self.P.size:
            zl, zu = self.sample["zl"][self.P], self.sample["zu"][self.P]
            phl = self.model.activation.value(self.sample["zl"])[self.P]
            phu = self.model.activation.value(self.sample["zu"])[self.P]
            width = zu - zl
            s = np.where(width > 0, (phu - phl) / np.where(width > 0, width, 1.0), 0.0)
            c = np.maximum(phl - s * zl, phu - s * zu)  # the line lies above φ at both ends
            c += 8 * UNIT_ROUNDOFF * (np.abs(phl) + np.abs(phu) + np.abs(s * zl) + np.abs(s * zu))
            self.chord = (s, c)
            self.par["s"].value, self.par["c"].value = _flush(s), _flush(c)
        for k, v in self.sample.items():
            self.par[k].value = _flush(v)

    def lower_bound(self, gx: np.ndarray, gu: np.ndarray, gb: float) -> float:
        """A certified lower bound of min gxᵀx + guᵀu + gb over the relaxation: the certificate
        at the multipliers of the first solver (self.solver, then Clarabel) that returns them;
        −inf if none does."""
        self.par["gx"].value, self.par["gu"].value = gx, gu
        for solver in dict.fromkeys((self.solver, "CLARABEL")):
            try:
                self.problem.solve(solver=solver)
            except (self._solver_error, ValueError):  # e.g. HiGHS status UNKNOWN
                continue
            nu = self.eq.dual_value
            if nu is not None and all(c.dual_value is not None for c in self.relax):
                mu = [np.asarray(c.dual_value, dtype=float) for c in self.relax] or [np.zeros(0)] * 3
                return self.certificate(gx, gu, gb, np.asarray(nu, dtype=float), mu)
        return -np.inf

    def certificate(self, gx, gu, gb, nu, mu) -> float:
        """Dual function at (ν, max(μ, 0)): the Lagrangian minimised over the boxes of x, z, u —
        a lower bound of the relaxation's minimum for ANY multipliers (weak duality)."""
        model, smp, n = self.model, self.sample, self.model.n_states
        mu = [np.maximum(v, 0.0) for v in mu]
        s, c = self.chord
        tx, tz, mag_x, mag_z = (np.zeros(n) for _ in range(4))
        np.add.at(tx, self.P, -mu[0] - mu[1] + mu[2])
        np.add.at(tz, self.P, mu[0] + self.alpha * mu[1] - s * mu[2])
        np.add.at(mag_x, self.P, mu[0] + mu[1] + mu[2])
        np.add.at(mag_z, self.P, mu[0] + self.alpha * mu[1] + np.abs(s) * mu[2])
        ax = np.abs(nu)
        coef_x = gx - np.asarray(model.A.T @ nu) + tx
        coef_z = nu + tz
        coef_u = gu - np.asarray(model.B.T @ nu)
        const = gb - nu @ model.b_x - mu[2] @ c
        value = const
        magnitude = abs(gb) + ax @ np.abs(model.b_x) + mu[2] @ np.abs(c)
        for coef, cmag, lo, hi in (
            (coef_x, np.abs(gx) + np.asarray(self.absA.T @ ax) + mag_x, smp["xl"], smp["xu"]),
            (coef_z, ax + mag_z, smp["zl"], smp["zu"]),
            (coef_u, np.abs(gu) + np.asarray(self.absB.T @ ax), smp["ul"], smp["uu"]),
        ):
            value += np.minimum(coef * lo, coef * hi).sum()
            magnitude += cmag @ np.maximum(np.abs(lo), np.abs(hi))
        err = gamma(2 * n + model.n_inputs + 16) * magnitude
        return float(np.nextafter(value - err, -np.inf))


def _flush(v: np.ndarray) -> np.ndarray:
    return np.where(np.abs(v) < 1e-12, 0.0, v)


def _lp_margins(model, y, boxes: _Boxes, lower: np.ndarray, solver: str, early_stop: bool) -> np.ndarray:
    """Raise the margin lower bounds (m, q) by the LP certificate where they are ≤ 0 (or all,
    without early_stop); with early_stop a sample is abandoned at its first failed margin."""
    lp = _LinearRelaxation(model, solver)
    out = lower.copy()
    for i in range(y.size):
        todo = np.flatnonzero((out[i] <= 0) if early_stop else np.isfinite(out[i]))
        if not todo.size:
            continue
        lp.set_sample(boxes, i)
        Gx, Gu, gb = _margin_objective(model, y[i])
        for j in todo:
            out[i, j] = max(out[i, j], lp.lower_bound(Gx[j], Gu[j], gb[j]))
            if early_stop and out[i, j] <= 0:
                break
    return out


# ---- public API -----------------------------------------------------------------------------------
def output_bounds(model, U, eps, method: str = "interval", domain=None, solver: str = "HIGHS"):
    """Certified (lower, upper) bounds (m, q) of ŷ over the ℓ∞ ball of radius eps around each
    row of U (clipped to domain=(lo, hi) if given); method "box", "interval" or "lp"."""
    _check_method(method)
    U = model.check_inputs(U)
    boxes = _boxes(model, U, eps, method, domain)
    C, D = dense(model.C), dense(model.D)
    lower, upper = _objective_bounds(C, D, model.b_y, boxes)
    if method == "lp":
        lp = _LinearRelaxation(model, solver)
        for i in range(U.shape[0]):
            lp.set_sample(boxes, i)
            for j in range(model.n_outputs):
                lower[i, j] = max(lower[i, j], lp.lower_bound(C[j], D[j], model.b_y[j]))
                upper[i, j] = min(upper[i, j], -lp.lower_bound(-C[j], -D[j], -model.b_y[j]))
    return lower, upper


def margin_lower_bounds(model, U, y, eps, method: str = "interval", domain=None, solver: str = "HIGHS"):
    """Certified lower bounds (m, q) of ŷ_y − ŷ_j over the ℓ∞ ball (entry j = y is +inf)."""
    _check_method(method)
    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    boxes = _boxes(model, U, eps, method, domain)
    lower = _box_margins(model, y, boxes)
    return _lp_margins(model, y, boxes, lower, solver, early_stop=False) if method == "lp" else lower


@dataclass
class CertifyResult:
    """Clean and certified accuracy of a classifier on an ℓ∞ ball (DESIGN §7).

    certified[i, k]: sample i is certified at eps[k] (every margin lower bound > 0). A sample not
    certified at some ε is reported uncertified at every larger ε without recomputation.
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


def _eps_units(model) -> tuple[dict, str]:
    from ..data import describe_units

    prep = model.metadata.get("preprocessing") or {"kind": "none"}
    return prep, describe_units(prep)


def certify(model, U, y, eps_list, method: str = "interval", domain=None, solver: str = "HIGHS") -> CertifyResult:
    """Clean accuracy and certified accuracy for every ε in eps_list. A sample counts as clean-
    correct only if ŷ_y > ŷ_j for all j ≠ y (a tie is an error), and as certified only if every
    margin lower bound is > 0. For "lp", LPs run only where the interval bound does not certify."""
    start = time.perf_counter()
    _check_method(method)
    U = model.check_inputs(U)
    m, q = U.shape[0], model.n_outputs
    y = check_labels(y, m, q)
    eps = tuple(_check_eps(e) for e in np.atleast_1d(eps_list))
    if not eps:
        raise ValueError("eps_list is empty: give at least one radius, e.g. [0.0, 0.01]")
    logits = model.predict(U, tol=EQ_TOL, raise_on_failure=False)
    margins = logits[np.arange(m), y][:, None] - logits
    margins[np.arange(m), y] = np.inf
    clean_margins = margins.min(axis=1, initial=np.inf)
    correct = clean_margins > 0
    certified = np.zeros((m, len(eps)), dtype=bool)
    alive = correct.copy()
    for k in np.argsort(eps, kind="stable"):
        rows = np.flatnonzero(alive)
        if rows.size:
            boxes = _boxes(model, U[rows], eps[k], "box" if method == "box" else "interval", domain)
            lower = _box_margins(model, y[rows], boxes)
            if method == "lp":
                lower = _lp_margins(model, y[rows], boxes, lower, solver, early_stop=True)
            ok = lower.min(axis=1) > 0
            certified[rows, k] = ok
            alive[rows] = ok
    prep, units = _eps_units(model)
    return CertifyResult(
        method=method,
        eps=eps,
        clean_accuracy=float(correct.mean()) if m else float("nan"),
        certified_accuracy={e: float(certified[:, k].mean()) if m else float("nan") for k, e in enumerate(eps)},
        certified=certified,
        predictions=logits.argmax(axis=1),
        correct=correct,
        clean_margins=clean_margins,
        eps_units=units,
        preprocessing=prep,
        domain=None if domain is None else tuple(float(v) for v in domain),
        seconds=time.perf_counter() - start,
    )
