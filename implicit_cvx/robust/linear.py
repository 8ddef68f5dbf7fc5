"""Linear bound propagation through the fixed point x = φ(Ax + Bu + b_x): CROWN generalized to
implicit models, with optimized lower slopes in the spirit of α-CROWN.

For a linear objective cᵀx + dᵀu + e and ANY multiplier ν ∈ Rⁿ, since z = Ax + Bu + b_x,
    cᵀx + dᵀu + e = wᵀx − νᵀz + hᵀu + νᵀb_x + e,   w = c + Aᵀν,  h = d + Bᵀν.
Every state has linear bounds in its pre-activation, valid on its box l ≤ z ≤ ū:
  stable active (l ≥ 0): x = z;  stable inactive (ū ≤ 0): x = βz (β the leaky slope, 0 for ReLU);
  unstable: αz ≤ x ≤ s·z + t (α ∈ [β, 1]; the chord through (l, βl), (ū, ū), moved up by its
  rounding error); identity: x = z; other activations (tanh, sigmoid): only their interval box.
Bounding w_i x_i by the lower relaxation where w_i ≥ 0 and by the upper one where w_i < 0 leaves
Σ_i (λ_i w_i − ν_i) z_i + hᵀu + const, minimised in closed form over the boxes of z and u: a lower
bound for every ν (weak duality). The multiplier ν = Λ_w(c + Aᵀν) cancels the z terms; that map
is a contraction (slopes in [0, 1] and λ_pf(|A|) < 1), solved by a chord iteration preconditioned
by one inverse per sample. On a strictly triangular A (a feed-forward network) the plain
iteration is back-substitution, exact after depth steps: CROWN. Every bound is evaluated by
`_evaluate`, which subtracts the rounding error of its own evaluation.

Samples are rows; objectives are stacked as (m, K, ·) arrays: K objectives per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from ..structure import block_structure
from .bounds import absolute, dense, gamma

__all__ = ["Relaxation", "linear_lower_bounds", "optimize_slopes", "relaxation", "state_interval",
           "tighten"]

PIECEWISE_LINEAR = ("relu", "leaky_relu", "identity")

FIXED_POINT_TOL = 1e-6  # relative residual at which the multiplier iteration stops (any multiplier is valid)
FIXED_POINT_MAX_ITER = 60
ROUNDS = 6  # bound rounds on a cyclic level (acyclic levels need one)
ROUND_TOL = 1e-3  # a sample's rounds stop when no bound moves by more than this (relative to its width)
CHUNK = 64  # samples per batch of stacked objectives


# ---- relaxations ---------------------------------------------------------------------------------
@dataclass
class Relaxation:
    """lower_slope·z + lower_icpt ≤ x ≤ upper_slope·z + upper_icpt on each state's box, per sample
    (m, n). `free`: unstable piecewise-linear states, whose lower slope may be anything in
    [floor, 1]; `loose`: states whose relaxation is not exact (free ones and box-only ones)."""

    lower_slope: np.ndarray
    lower_icpt: np.ndarray
    upper_slope: np.ndarray
    upper_icpt: np.ndarray
    free: np.ndarray
    floor: np.ndarray
    loose: np.ndarray

    def rows(self, index) -> Relaxation:
        return Relaxation(*(v[index] for v in (self.lower_slope, self.lower_icpt, self.upper_slope,
                                               self.upper_icpt, self.free, self.floor, self.loose)))


def _kinds(model) -> tuple[np.ndarray, np.ndarray]:
    """Per state: piecewise linear (relu / leaky_relu / identity) or not, and its slope β for z < 0."""
    n = model.n_states
    pl, beta = np.zeros(n, dtype=bool), np.zeros(n)
    for act, a, b in model.activation.blocks:
        if act.name in PIECEWISE_LINEAR:
            pl[a:b] = True
            beta[a:b] = {"relu": 0.0, "identity": 1.0}.get(act.name, act.alpha)
    return pl, beta


def relaxation(model, boxes) -> Relaxation:
    """Linear relaxations of every state on the boxes (zl, zu, xl, xu); unstable states get the
    adaptive lower slope (1 where ū ≥ −l, else β), as CROWN does."""
    pl, beta = _kinds(model)
    zl, zu = boxes.zl, boxes.zu
    active = pl & ((zl >= 0) | (beta == 1.0))
    inactive = pl & (zu <= 0) & ~active
    free = pl & ~active & ~inactive
    slope = np.where(active, 1.0, np.where(pl, beta, 0.0))
    lower_slope = np.where(free, np.where(zu >= -zl, 1.0, beta), slope)
    width = np.where(free, zu - zl, 1.0)
    s = np.where(free, (zu - beta * zl) / width, slope)
    lo_val, hi_val = beta * zl, zu  # φ at both ends of an unstable box
    t = np.maximum(lo_val - s * zl, hi_val - s * zu)
    t += gamma(4) * (np.abs(lo_val) + np.abs(hi_val) + np.abs(s * zl) + np.abs(s * zu))
    upper_icpt = np.where(free, np.nextafter(t, np.inf), 0.0)
    lower_icpt = np.where(pl, 0.0, boxes.xl)
    upper_icpt = np.where(pl, upper_icpt, boxes.xu)
    floor = np.broadcast_to(beta, zl.shape)
    return Relaxation(lower_slope, lower_icpt, s, upper_icpt, free, floor, free | ~pl)


def state_interval(model, zl: np.ndarray, zu: np.ndarray):
    """Sound bounds of φ(z) over the box [zl, zu], each activation by its own rule, rounded
    outward ([φ(zl), φ(zu)] for a monotone scalar φ; window maxima for max-pooling; …)."""
    return model.activation.interval(zl, zu)


# ---- multipliers --------------------------------------------------------------------------------
def _times(X: np.ndarray, M, out: np.ndarray | None = None) -> np.ndarray:
    """X @ M over the last axis of a stacked X (…, n), for dense or sparse M (into `out`, a
    C-contiguous array, if given)."""
    flat = X.reshape(-1, X.shape[-1])
    shape = X.shape[:-1] + (M.shape[1],)
    if sp.issparse(M):
        res = np.asarray(M.T @ flat.T).T.reshape(shape)
        if out is None:
            return res
        out[...] = res
        return out
    if out is None:
        return (flat @ M).reshape(shape)
    np.matmul(flat, M, out=out.reshape(-1, M.shape[1]))
    return out


class _Solver:
    """Solves W = C + (λ(W) ∘ W) M row by row for stacked rows (m, K, n), with λ the lower slopes
    where W ≥ 0 and the upper ones where W < 0 (all in [0, 1]): by plain iteration when M is
    nilpotent (back-substitution, exact after depth steps), else by the chord iteration
    W ← W − F(W)·(I − Λ̄M)⁻¹ with one inverse per sample (Λ̄ = the mid slopes)."""

    def __init__(self, M, mid: np.ndarray | None, triangular: bool):
        self.M = M
        self.Q = None
        if not triangular:
            Md = dense(M)
            self.Q = np.linalg.inv(np.eye(Md.shape[0]) - mid[:, :, None] * Md[None])

    def solve(self, C: np.ndarray, lower, upper, W0=None) -> np.ndarray:
        """W with max |F(W)| ≤ FIXED_POINT_TOL·(1 + max |C|), or the last iterate (any W gives a
        valid bound; only its tightness depends on the residual), from W0 if given (else from
        the solution for the mid slopes). In place, allocation-free."""
        if W0 is not None:
            W = np.array(W0, dtype=float)
        else:
            W = C.copy() if self.Q is None else np.matmul(C, self.Q)
        N, T, F = np.empty_like(W), np.empty_like(W), np.empty_like(W)
        step = lower - upper
        tol = FIXED_POINT_TOL * (1.0 + np.abs(C).max(initial=0.0))
        for _ in range(FIXED_POINT_MAX_ITER):
            _slope_times(W, upper, step, out=(N, T))
            _times(N, self.M, out=F)
            np.subtract(W, F, out=F)
            F -= C
            if np.abs(F, out=T).max(initial=0.0) <= tol:
                break
            W -= F if self.Q is None else np.matmul(F, self.Q, out=T)
        return W


def _slope_times(W, upper, step, out):
    """λ(W)∘W = upper∘W + (lower − upper)∘max(W, 0) into out[0] (out[1] is scratch)."""
    N, T = out
    np.multiply(W, upper, out=N)
    np.maximum(W, 0.0, out=T)
    T *= step
    N += T
    return N


# ---- the bound -------------------------------------------------------------------------------------
def _evaluate(model, boxes, rel_lower, rel_upper, N, C, D, e) -> np.ndarray:
    """A certified lower bound (m, K) of cᵀx + dᵀu + e (rows of C, D, e) for the multipliers N,
    from the weak-duality identity in the module docstring, minus the rounding error of this
    evaluation: every term's magnitude times γ_k for k above the longest sum involved."""
    A, B, b = model.A, model.B, model.b_x
    W, H = C + _times(N, A), D + _times(N, B)
    pos = W >= 0
    slope = np.where(pos, rel_lower[0], rel_upper[0])
    icpt = np.where(pos, rel_lower[1], rel_upper[1])
    G = slope * W - N
    zl, zu, xl, xu = (v[:, None, :] for v in (boxes.zl, boxes.zu, boxes.xl, boxes.xu))
    ul, uu = boxes.ul[:, None, :], boxes.uu[:, None, :]
    t_icpt, t_z = W * icpt, np.minimum(G * zl, G * zu)
    t_u, t_b = np.minimum(H * ul, H * uu), N @ b
    value = e + t_b + t_icpt.sum(-1) + t_z.sum(-1) + t_u.sum(-1)
    aN = np.abs(N)
    zmax, xmax = np.maximum(np.abs(zl), np.abs(zu)), np.maximum(np.abs(xl), np.abs(xu))
    umax = np.maximum(np.abs(ul), np.abs(uu))
    Ax, Bu = _times(xmax, absolute(A).T), _times(umax, absolute(B).T)  # |A|·xmax, |B|·umax per sample
    magnitude = (np.abs(e) + aN @ np.abs(b) + np.abs(t_icpt).sum(-1) + np.abs(t_z).sum(-1)
                 + np.abs(t_u).sum(-1) + (np.abs(C) * xmax).sum(-1) + (np.abs(D) * umax).sum(-1)
                 + (aN * (Ax + Bu + zmax)).sum(-1) + (np.abs(slope * W) * zmax).sum(-1))
    k = 3 * model.n_states + 2 * model.n_inputs + 16
    return np.nextafter(value - 2 * gamma(k) * magnitude, -np.inf)


def _bound(model, boxes, rel: Relaxation, solver: _Solver, C, D, e, lower_slope=None, W0=None):
    """(bound (m, K), W) for the objectives with the relaxation `rel` (lower slopes overridden
    per objective by lower_slope (m, K, n) if given; W0 a starting point for the multipliers)."""
    lo = (rel.lower_slope[:, None, :] if lower_slope is None else lower_slope, rel.lower_icpt[:, None, :])
    up = (rel.upper_slope[:, None, :], rel.upper_icpt[:, None, :])
    W = solver.solve(C, lo[0], up[0], W0)
    N = _slope_times(W, up[0], lo[0] - up[0], out=(np.empty_like(W), np.empty_like(W)))
    return _evaluate(model, boxes, lo, up, N, C, D, e), W


def _solver(model, rel: Relaxation, triangular: bool) -> _Solver:
    mid = 0.5 * (rel.lower_slope + rel.upper_slope)
    return _Solver(model.A, mid, triangular)


def linear_lower_bounds(model, boxes, C, D, e) -> np.ndarray:
    """Certified lower bounds (m, K) of the objectives C x + D u + e over the equilibria in the boxes.

    Linear bound propagation through the fixed point (CROWN generalized to implicit models): each
    state is relaxed between two lines on its pre-activation box, and the objective's bound
    follows from the multipliers of the relaxed fixed-point equation.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    boxes : Boxes
        Per-sample boxes (ul, uu, xl, xu, zl, zu: (m, ·) arrays) that contain every input's
        equilibrium, e.g. from `robust.boxes.interval_boxes`.
    C : ndarray, shape (m, K, n)
        State coefficients of the K objectives of each sample.
    D : ndarray, shape (m, K, p)
        Input coefficients.
    e : ndarray, shape (m, K)
        Constants.

    Returns
    -------
    ndarray, shape (m, K)
        Certified lower bounds.

    Examples
    --------
    The margins of three samples at ε = 0.2 (0 where j = y):

    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> from implicit_cvx.robust.boxes import interval_boxes
    >>> boxes = interval_boxes(model, U, 0.2, domain=(0, 1))
    >>> Gx, Gu, gb, skip = robust.margin_rows(model, y)
    >>> robust.linear_lower_bounds(model, boxes, Gx, Gu, gb).round(4) + 0.0
    array([[0.    , 0.4   ],
           [1.6   , 0.    ],
           [0.3091, 0.    ]])
    """
    triangular = block_structure(model.A).is_triangular

    def bound(part, C, D, e):
        rel = relaxation(model, part)
        return _bound(model, part, rel, _solver(model, rel, triangular), C, D, e)[0]

    return _chunked(model, boxes, bound, C, D, e)


def _chunked(model, boxes, fn, C, D, e) -> np.ndarray:
    """fn(boxes of a chunk of samples, their C, D, e) → (k, K), over chunks of samples."""
    out = np.empty(C.shape[:2])
    for idx in _chunks(model, np.zeros(out.shape[0])):
        out[idx] = fn(_take(boxes, idx), C[idx], D[idx], e[idx])
    return out


# ---- pre-activation bounds -------------------------------------------------------------------------
_BOX_FIELDS = ("zl", "zu", "xl", "xu", "ul", "uu")


def _take(boxes, index) -> SimpleNamespace:
    """A copy of the boxes of some samples."""
    return SimpleNamespace(**{k: np.array(getattr(boxes, k)[index], dtype=float) for k in _BOX_FIELDS})


def _rows_of(loose: np.ndarray, states: np.ndarray):
    """Per sample, the loose states among `states` packed first: (sel (m, K) state ids, valid)."""
    mask = loose[:, states]
    K = int(mask.sum(axis=1).max(initial=0))
    order = np.argsort(~mask, axis=1, kind="stable")[:, :K]
    return states[order], np.take_along_axis(mask, order, axis=1)


def _state_objectives(model, sel: np.ndarray, valid: np.ndarray):
    """Objectives z_i and −z_i (rows of A, B, b_x) for the selected states: (C, D, e) with 2K rows."""
    A, B = dense(model.A), dense(model.B)
    v = valid[..., None]
    C, D, e = A[sel] * v, B[sel] * v, model.b_x[sel] * valid
    return np.concatenate([C, -C], 1), np.concatenate([D, -D], 1), np.concatenate([e, -e], 1)


def _update(model, boxes, sel, valid, lb) -> np.ndarray:
    """Intersect the z boxes of the selected states with the new bounds (and the x boxes with
    their image); per sample, the largest move relative to the old width."""
    K = sel.shape[1]
    rows = np.arange(sel.shape[0])[:, None]
    lo, hi = np.where(valid, lb[:, :K], -np.inf), np.where(valid, -lb[:, K:], np.inf)
    old_l, old_u = boxes.zl[rows, sel], boxes.zu[rows, sel]
    new_l, new_u = np.maximum(old_l, lo), np.minimum(old_u, hi)
    if np.any(new_l > new_u):
        raise RuntimeError("linear bounds crossed: a pre-activation box became empty (a bug)")
    boxes.zl[rows, sel], boxes.zu[rows, sel] = new_l, new_u
    xl, xu = state_interval(model, boxes.zl, boxes.zu)
    boxes.xl, boxes.xu = np.maximum(boxes.xl, xl), np.minimum(boxes.xu, xu)
    width = np.maximum(old_u - old_l, 1e-300)
    return np.max(((new_l - old_l) + (old_u - new_u)) / width, axis=1, initial=0.0)


def _chunks(model, count: np.ndarray):
    """Sample indices in batches of similar `count` (little padding), each small enough that its
    per-sample n×n arrays stay within about 2·10⁷ entries."""
    size = int(max(1, min(CHUNK, 2e7 // max(model.n_states, 1) ** 2)))
    order = np.argsort(count, kind="stable")
    return [order[k : k + size] for k in range(0, order.size, size)]


def _rounds(model, boxes, states, rounds: int, tol: float, goal, index, triangular: bool) -> np.ndarray:
    """Bound rounds on `states` for the samples of `boxes` (updated in place; `index` = their
    ids for `goal`); each round warm-starts the multipliers of every state's objective from the
    round before. Returns the mask of samples the goal decided (see `tighten`)."""
    m, n = boxes.zl.shape
    warm = np.zeros((m, 2, n, n))  # W of the last round, per sample, side (z, −z) and state
    decided = np.zeros(m, dtype=bool)
    previous = np.full(m, -np.inf)
    active = np.arange(m)
    for r in range(rounds):
        part = _take(boxes, active)
        rel = relaxation(model, part)
        sel, valid = _rows_of(rel.loose, states)
        if not sel.shape[1]:
            break
        rows = active[:, None, None]
        W0 = warm[rows, np.arange(2)[None, :, None], sel[:, None, :]].reshape(sel.shape[0], -1, n)
        lb, W = _bound(model, part, rel, _solver(model, rel, triangular), *_state_objectives(model, sel, valid),
                       W0=W0)
        warm[rows, np.arange(2)[None, :, None], sel[:, None, :]] = W.reshape(sel.shape[0], 2, -1, n)
        done = _update(model, part, sel, valid, lb) <= tol
        for k in ("zl", "zu", "xl", "xu"):
            getattr(boxes, k)[active] = getattr(part, k)
        if goal is not None and rounds > 1:
            bound = goal(part, index[active])
            # stop when certified, or when even the last gain repeated every round left would
            # not reach 0 (gains shrink from round to round): a heuristic that only cuts work
            stop = (bound > 0) | (bound + (bound - previous[active]) * (rounds - 1 - r) <= 0)
            decided[active[stop]] = True
            previous[active] = bound
            done |= stop
        active = active[~done]
        if not active.size:
            break
    return decided


def tighten(model, boxes, rounds: int = ROUNDS, tol: float = ROUND_TOL, goal=None):
    """A copy of `boxes` with the pre-activation bounds of the loose states tightened by linear bounds.

    Level by level in topological order (one round per acyclic level, so a feed-forward network
    gets exactly CROWN with every intermediate bound intersected with the starting box), rounds
    on cyclic levels until a sample's bounds move by at most tol (relative to their width) or
    `rounds` is reached.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    boxes : Boxes
        Per-sample boxes (zl, zu, xl, xu, ul, uu: (m, ·) arrays) containing every equilibrium.
    rounds : int, default=6
        Rounds on a cyclic level.
    tol : float, default=1e-3
        Relative movement below which a sample's rounds stop.
    goal : callable, optional
        goal(boxes of some samples, their indices) → a bound per sample (e.g. its smallest
        margin bound): on cyclic levels a sample stops as soon as its bound is > 0 (its boxes
        certify it), or when that bound, improved by its last gain for every remaining round,
        would still be ≤ 0.

    Returns
    -------
    Boxes-like
        The tightened boxes (same fields), each contained in the input boxes.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> from implicit_cvx.robust.boxes import interval_boxes
    >>> boxes = interval_boxes(model, U, 0.2, domain=(0, 1))
    >>> Gx, Gu, gb, skip = robust.margin_rows(model, y)
    >>> tight = robust.tighten(model, boxes)
    >>> (boxes.zu - boxes.zl)[2].round(3), (tight.zu - tight.zl)[2].round(3)
    (array([1.183, 0.767]), array([0.778, 0.767]))
    """
    out = _take(boxes, slice(None))
    structure = block_structure(model.A)
    pending = np.ones(out.zl.shape[0], dtype=bool)  # not yet decided by the goal
    for level in range(structure.n_levels):
        states = structure.level_states(level)
        cyclic = any(structure.cyclic[k] for k in structure.levels[level])
        todo = np.flatnonzero(pending)
        loose = relaxation(model, _take(out, todo)).loose[:, states].sum(axis=1)
        for chunk in _chunks(model, loose):
            idx = todo[chunk]
            part = _take(out, idx)
            decided = _rounds(model, part, states, rounds if cyclic else 1, tol, goal, idx,
                              structure.is_triangular)
            for k in ("zl", "zu", "xl", "xu"):
                getattr(out, k)[idx] = getattr(part, k)
            pending[idx[decided]] = False
    return out


# ---- optimized lower slopes ----------------------------------------------------------------------
def optimize_slopes(model, boxes, C, D, e, iterations: int = 20, target: float | None = None):
    """Lower bounds (m, K) of the objectives, maximised over the lower slopes of the unstable states.

    One slope vector per objective, by projected gradient ascent with per-objective step halving.
    Every iterate is a certified bound; the best one is returned. Gradient: with ν = Λ(c + Aᵀν)
    and the bound Σ w_i t_i + min_u hᵀu + νᵀb_x + e, ∂bound/∂α_i = w_i ρ_i where
    (I − AΛ)ρ = A t + B u* + b_x.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    boxes : Boxes
        Per-sample boxes containing every equilibrium (see `linear_lower_bounds`).
    C : ndarray, shape (m, K, n)
        State coefficients of the objectives.
    D : ndarray, shape (m, K, p)
        Input coefficients.
    e : ndarray, shape (m, K)
        Constants.
    iterations : int, default=20
        Ascent steps.
    target : float, optional
        Objectives whose bound exceeds it stop early.

    Returns
    -------
    ndarray, shape (m, K)
        Certified lower bounds, never below those of `linear_lower_bounds`.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> from implicit_cvx.robust.boxes import interval_boxes
    >>> boxes = interval_boxes(model, U, 0.2, domain=(0, 1))
    >>> Gx, Gu, gb, skip = robust.margin_rows(model, y)
    >>> opt = robust.optimize_slopes(model, boxes, Gx, Gu, gb)
    >>> bool(np.all(opt >= robust.linear_lower_bounds(model, boxes, Gx, Gu, gb)))
    True
    """
    triangular = block_structure(model.A).is_triangular
    return _chunked(model, boxes, lambda part, C, D, e: _ascent(model, part, C, D, e, iterations, target, triangular),
                    C, D, e)


def _ascent(model, boxes, C, D, e, iterations: int, target, triangular: bool) -> np.ndarray:
    """The projected gradient ascent of `optimize_slopes` on one chunk of samples."""
    rel = relaxation(model, boxes)
    solver = _solver(model, rel, triangular)
    At, Bt = dense(model.A).T, dense(model.B).T
    adjoint = _Solver(At, 0.5 * (rel.lower_slope + rel.upper_slope), triangular)
    free = rel.free[:, None, :]
    alpha = np.broadcast_to(rel.lower_slope[:, None, :], C.shape).copy()
    best_alpha, best_grad = alpha.copy(), np.zeros_like(alpha)
    best = np.full(C.shape[:2], -np.inf)
    step = np.full(C.shape[:2] + (1,), 1.0)
    for _ in range(iterations + 1):
        bound, W = _bound(model, boxes, rel, solver, C, D, e, alpha)
        better = bound > best
        step[~better] *= 0.5
        if np.any(better):
            best[better], best_alpha[better] = bound[better], alpha[better]
            best_grad[better] = _slope_gradient(model, boxes, rel, adjoint, At, Bt, W, alpha, D)[better]
        if target is not None and np.all((best > target) | ~np.any(free, axis=-1)):
            break
        scale = np.abs(best_grad).max(axis=-1, keepdims=True)
        move = step * best_grad / np.where(scale > 0, scale, 1.0)
        alpha = np.where(free, np.clip(best_alpha + move, rel.floor[:, None, :], 1.0), best_alpha)
    return best


def _slope_gradient(model, boxes, rel, adjoint, At, Bt, W, alpha, D) -> np.ndarray:
    """∂bound/∂α (m, K, n) at the multipliers ν = λ∘W (see `optimize_slopes`)."""
    pos = W >= 0
    lam = np.where(pos, alpha, rel.upper_slope[:, None, :])
    icpt = np.where(pos, rel.lower_icpt[:, None, :], rel.upper_icpt[:, None, :])
    H = D + _times(lam * W, model.B)
    ustar = np.where(H >= 0, boxes.ul[:, None, :], boxes.uu[:, None, :])
    G = _times(icpt, At) + _times(ustar, Bt) + model.b_x
    rho = adjoint.solve(G, lam, lam)
    return np.where(pos & rel.free[:, None, :], W * rho, 0.0)
