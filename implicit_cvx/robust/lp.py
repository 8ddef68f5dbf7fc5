"""The LP relaxation of the fixed point on sound boxes (paper Thm 4.5), solved with HiGHS, and the
mixed-integer form that is exact for ReLU-type states.

Variables v = (x, z, u) (plus one binary per unstable state in the mixed-integer form), all boxed;
rows z − Ax − Bu = b_x and, per state: stable active x = z, stable inactive x = βz, unstable
x ≥ z, x ≥ βz and the chord x ≤ s·z + t (LP) or the big-M pair x ≤ z − (1 − β)l(1 − δ),
x ≤ βz + (1 − β)ū·δ (MILP); identity x = z; other activations (tanh, sigmoid) their box only.
An LP bound is never the solver's reported optimum: it is the dual function at the solver's
row multipliers, minimised over the variable boxes in closed form (weak duality, valid for any
multipliers), with the rounding error of its own evaluation subtracted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from .bounds import gamma
from .linear import relaxation

__all__ = ["Formulation", "LPSolver", "dual_bound"]


@dataclass
class Formulation:
    """min cᵀv + c0 s.t. row_lower ≤ G v ≤ row_upper, col_lower ≤ v ≤ col_upper (G CSC),
    v = (x, z, u, δ); `integer` marks the binaries δ."""

    G: sp.csc_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integer: np.ndarray
    n: int
    p: int

    @classmethod
    def build(cls, model, boxes, i: int, exact: bool = False) -> Formulation:
        """Sample i's relaxation (exact=False) or mixed-integer program (exact=True; needs
        piecewise-linear activations)."""
        n, p = model.n_states, model.n_inputs
        one = _Sample(boxes, i)
        rel = relaxation(model, one)
        free = np.flatnonzero(rel.free[0])
        pl = ~rel.loose[0] | rel.free[0]  # piecewise linear: exact or free
        k = free.size if exact else 0
        I = sp.identity(n, format="csr")
        blocks = [[-sp.csr_matrix(model.A), I, -sp.csr_matrix(model.B)]]
        lo, hi = [model.b_x], [model.b_x]
        fixed = np.flatnonzero(pl & ~rel.free[0])  # x = slope·z
        beta = rel.floor[0]
        Ef, Eu = I[fixed], I[free]
        blocks.append([Ef, -sp.diags(rel.lower_slope[0][fixed]) @ Ef, None])
        lo.append(np.zeros(fixed.size))
        hi.append(np.zeros(fixed.size))
        for slope in (np.ones(free.size), beta[free]):  # x − slope·z ≥ 0
            blocks.append([Eu, -sp.diags(slope) @ Eu, None])
            lo.append(np.zeros(free.size))
            hi.append(np.full(free.size, np.inf))
        zl, zu = one.zl[0, free], one.zu[0, free]
        if exact:  # x − z − (1 − β)l·δ ≤ −(1 − β)l and x − βz − (1 − β)ū·δ ≤ 0
            blocks.append([Eu, -Eu, None])
            blocks.append([Eu, -sp.diags(beta[free]) @ Eu, None])
            lo += [np.full(free.size, -np.inf)] * 2
            hi += [-(1 - beta[free]) * zl, np.zeros(free.size)]
        else:  # x − s·z ≤ t
            blocks.append([Eu, -sp.diags(rel.upper_slope[0][free]) @ Eu, None])
            lo.append(np.full(free.size, -np.inf))
            hi.append(rel.upper_icpt[0][free])
        G = sp.bmat(blocks, format="csr")
        if exact:
            rows = G.shape[0]
            D = sp.lil_matrix((rows, k))
            D[rows - 2 * k + np.arange(k), np.arange(k)] = (-(1 - beta[free]) * zl)[:, None]
            D[rows - k + np.arange(k), np.arange(k)] = (-(1 - beta[free]) * zu)[:, None]
            G = sp.hstack([G, D.tocsr()], format="csr")
        col_lower = np.concatenate([one.xl[0], one.zl[0], one.ul[0], np.zeros(k)])
        col_upper = np.concatenate([one.xu[0], one.zu[0], one.uu[0], np.ones(k)])
        integer = np.concatenate([np.zeros(2 * n + p, dtype=bool), np.ones(k, dtype=bool)])
        return cls(G.tocsc(), np.concatenate(lo), np.concatenate(hi), col_lower, col_upper, integer, n, p)

    def cost(self, gx: np.ndarray, gu: np.ndarray) -> np.ndarray:
        return np.concatenate([gx, np.zeros(self.n), gu, np.zeros(self.integer.sum())])

    def highs(self) -> highspy.Highs:
        """A silent HiGHS instance holding this program (zero cost). (No `threads` option: HiGHS
        refuses to run when it differs from the global scheduler another user started.)"""
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.G.shape[1], self.G.shape[0]
        lp.col_cost_ = np.zeros(self.G.shape[1])
        lp.col_lower_, lp.col_upper_ = self.col_lower, self.col_upper
        lp.row_lower_, lp.row_upper_ = self.row_lower, self.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_ = self.G.indptr, self.G.indices
        lp.a_matrix_.value_ = self.G.data
        if self.integer.any():
            lp.integrality_ = [highspy.HighsVarType.kInteger if b else highspy.HighsVarType.kContinuous
                               for b in self.integer]
        h = _silent_highs()
        h.passModel(lp)
        return h


def _silent_highs():
    """A HiGHS instance that prints nothing: recent versions print a banner on the C-level stdout
    when constructed, before `silent()` can act, so stdout is pointed at /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.silent()
    return h


class _Sample:
    """Row i of a boxes object, kept 2-D."""

    def __init__(self, boxes, i: int):
        for k in ("xl", "xu", "zl", "zu", "ul", "uu"):
            setattr(self, k, getattr(boxes, k)[i : i + 1])


def dual_bound(f: Formulation, c: np.ndarray, c0: float, y: np.ndarray) -> float:
    """The dual function at row multipliers y (any values; each is clipped to the sign its
    finite row bound allows): c0 + Σ_i min over [row_lower_i, row_upper_i] of y_i r_i +
    Σ_j min over [col_lower_j, col_upper_j] of (c − Gᵀy)_j v_j ≤ the program's minimum (weak
    duality), minus the rounding error of this evaluation."""
    lo_ok, hi_ok = np.isfinite(f.row_lower), np.isfinite(f.row_upper)
    y = np.where(y > 0, np.where(lo_ok, y, 0.0), np.where(hi_ok, y, 0.0))
    rows = np.where(y > 0, y * np.where(lo_ok, f.row_lower, 0.0), y * np.where(hi_ok, f.row_upper, 0.0))
    reduced = c - f.G.T @ y
    cols = np.minimum(reduced * f.col_lower, reduced * f.col_upper)
    value = c0 + rows.sum() + cols.sum()
    vmax = np.maximum(np.abs(f.col_lower), np.abs(f.col_upper))
    magnitude = (abs(c0) + np.abs(rows).sum() + np.abs(cols).sum()
                 + (np.abs(c) + abs(f.G).T @ np.abs(y)) @ vmax)
    k = f.G.shape[0] + f.G.shape[1] + 8
    return float(np.nextafter(value - 2 * gamma(k) * magnitude, -np.inf))


class LPSolver:
    """The LP relaxation of one sample, solved for many objectives with HiGHS warm starts."""

    def __init__(self, model, boxes, i: int):
        self.formulation = Formulation.build(model, boxes, i)
        self.h = self.formulation.highs()

    def lower_bound(self, gx: np.ndarray, gu: np.ndarray, gb: float) -> float:
        """A certified lower bound of gxᵀx + guᵀu + gb over the relaxation (−inf when HiGHS
        returns no multipliers)."""
        c = self.formulation.cost(gx, gu)
        self.h.changeColsCost(c.size, np.arange(c.size, dtype=np.int32), c)
        self.h.run()
        sol = self.h.getSolution()
        if not sol.dual_valid:
            return -np.inf
        return dual_bound(self.formulation, c, gb, np.asarray(sol.row_dual, dtype=float))
