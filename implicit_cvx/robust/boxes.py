"""Sound boxes of states and pre-activations, reached through small named functions.

certify.py computes them (Thm 4.1 start box around the computed equilibrium, widened by its
residual, then the interval iteration X ← X ∩ φ(AX + BU + b_x)); the sparse and SDP certificates
use the same boxes. This module is the one place that calls certify's internals, so a rewrite of
certify.py changes only these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import UNIT_ROUNDOFF
from .certify import (  # the internals this module wraps
    EQ_TOL,
    INTERVAL_MAX_ITER,
    INTERVAL_TOL,
    _boxes,
    _residuals,
    _Splits,
    _z_interval,
)
from .linear import PIECEWISE_LINEAR, tighten

__all__ = ["EQ_TOL", "Boxes", "chords", "equilibrium_residuals", "interval_boxes", "lp_boxes",
           "refine_states"]


@dataclass
class Boxes:
    """Per-sample sound boxes (m, ·) of inputs u, states x and pre-activations z."""

    ul: np.ndarray
    uu: np.ndarray
    xl: np.ndarray
    xu: np.ndarray
    zl: np.ndarray
    zu: np.ndarray


def interval_boxes(model, U, eps, domain=None) -> Boxes:
    """certify's "interval" boxes of the ℓ∞ ball of radius eps around each row of U (clipped to
    domain)."""
    b = _boxes(model, model.check_inputs(U), eps, "interval", domain)
    return Boxes(b.ul, b.uu, b.xl, b.xu, b.zl, b.zu)


def lp_boxes(model, U, eps, domain=None) -> Boxes:
    """The interval boxes with every pre-activation bound tightened by linear bound propagation:
    the boxes certify's lp and exact methods relax over."""
    b = tighten(model, _boxes(model, model.check_inputs(U), eps, "interval", domain))
    return Boxes(b.ul, b.uu, b.xl, b.xu, b.zl, b.zu)


def equilibrium_residuals(model, U: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per-sample upper bound of max_i |x̂_i − φ(Ax̂ + Bu + b_x)_i| (rounding included)."""
    return _residuals(model, U, X)


def refine_states(model, xl, xu, input_lo, input_hi):
    """Interval iteration X ← X ∩ φ(AX + K) from the sound state box [xl, xu], where [input_lo,
    input_hi] (m, n) is a sound interval of Bu + b_x over the perturbation set (any set, not only
    a box); sound at every step. Returns (xl, xu, zl, zu)."""
    splits = _Splits(model)
    part = (input_lo, input_hi)
    for _ in range(INTERVAL_MAX_ITER):
        zl, zu = _z_interval(splits, part, xl, xu)
        nl, nu = model.activation.interval(zl, zu)
        nl, nu = np.maximum(xl, nl), np.minimum(xu, nu)
        change = max(np.max(nl - xl, initial=0.0), np.max(xu - nu, initial=0.0))
        xl, xu = nl, nu
        if change <= INTERVAL_TOL:
            break
    zl, zu = _z_interval(splits, part, xl, xu)
    return xl, xu, zl, zu


def chords(model, zl: np.ndarray, zu: np.ndarray):
    """(states P, lower slopes α, upper chords s, c) of the states with a convex piecewise-linear
    activation (relu, leaky_relu, identity) on [zl, zu] (1-D): α z ≤ φ(z), z ≤ φ(z) (for
    relu/leaky: φ(z) = max(z, αz)) and φ(z) ≤ s z + c, c rounded up so the chord lies above φ."""
    P, alpha = [], []
    for act, a, b in model.activation.blocks:
        if act.name in PIECEWISE_LINEAR:
            P.extend(range(a, b))
            alpha.extend([act.alpha if act.name == "leaky_relu" else float(act.name == "identity")] * (b - a))
    P, alpha = np.array(P, dtype=int), np.array(alpha, dtype=float)
    lo, hi = zl[P], zu[P]
    phl, phu = model.activation.value(zl)[P], model.activation.value(zu)[P]
    width = hi - lo
    s = np.where(width > 0, (phu - phl) / np.where(width > 0, width, 1.0), 0.0)
    c = np.maximum(phl - s * lo, phu - s * hi)
    c = c + 8 * UNIT_ROUNDOFF * (np.abs(phl) + np.abs(phu) + np.abs(s * lo) + np.abs(s * hi))
    return P, alpha, s, c
