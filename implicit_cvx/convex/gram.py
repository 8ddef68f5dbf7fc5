"""Gram reduction of squared-loss row problems.

(1/m)‖t_i − R w‖² = wᵀGw − 2h_iᵀw + c_i with G = RᵀR/m, h_i = Rᵀt_i/m, c_i = ‖t_i‖²/m, so a
row problem's size is independent of the sample count m and G can be accumulated over chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ..numerics import check_rows


@dataclass
class GramStats:
    """Sufficient statistics of k squared-loss rows: G (d, d), H (d, k), c (k,), m samples."""

    G: np.ndarray
    H: np.ndarray
    c: np.ndarray
    m: int

    @property
    def d(self) -> int:
        return self.G.shape[0]

    @property
    def k(self) -> int:
        return self.H.shape[1]

    def objective(self, W: np.ndarray) -> np.ndarray:
        """f_i(w_i) = w_iᵀGw_i − 2h_iᵀw_i + c_i for every row of W (k, d)."""
        W = np.atleast_2d(W)
        return np.einsum("ij,ij->i", W @ self.G, W) - 2 * np.einsum("ji,ij->i", self.H, W) + self.c

    def subset(self, rows) -> GramStats:
        """The statistics of the selected output rows only (G is shared)."""
        rows = np.asarray(rows, dtype=int)
        return GramStats(self.G, self.H[:, rows], self.c[rows], self.m)


def _chunks(R, T, chunk_size):
    """Yield (R_chunk, T_chunk) pairs: from arrays in slices of chunk_size rows, or as given."""
    if T is not None:
        R = check_rows("R", R)
        T = check_rows("T", T, R.shape[0])
        step = R.shape[0] if chunk_size is None else int(chunk_size)
        if step <= 0:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        for start in range(0, max(R.shape[0], 1), step):
            yield R[start : start + step], T[start : start + step]
    else:
        yield from R


@dataclass
class GramSums:
    """Unnormalized sums over samples — RᵀR (d, d), RᵀT (d, k), Σ t² per column (k,), count m —
    of one partition; partitions add exactly (up to summation order) and `stats()` divides by m."""

    G: np.ndarray
    H: np.ndarray
    c: np.ndarray
    m: int

    def __add__(self, other: GramSums) -> GramSums:
        if other.G.shape != self.G.shape or other.H.shape != self.H.shape:
            raise ValueError(
                f"Gram sums of shapes G {other.G.shape}, H {other.H.shape} do not match earlier "
                f"partitions (G {self.G.shape}, H {self.H.shape})"
            )
        return GramSums(self.G + other.G, self.H + other.H, self.c + other.c, self.m + other.m)

    def stats(self) -> GramStats:
        if self.m == 0:
            raise ValueError("gram_stats got no samples (m = 0); pass at least one row")
        return GramStats(self.G / self.m, self.H / self.m, self.c / self.m, self.m)


def gram_sums(R, T) -> GramSums:
    """GramSums of regressors R (m, d) and targets T (m, k): one partition's share of G, H, c."""
    R = check_rows("R chunk", R)
    T = check_rows("T chunk", T, R.shape[0])
    return GramSums(R.T @ R, R.T @ T, np.einsum("ij,ij->j", T, T), R.shape[0])


def reduce_gram(parts) -> GramStats:
    """GramStats of the samples of all partitions: their GramSums added in the given order."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    if total is None:
        raise ValueError("gram_stats got no samples (m = 0); pass at least one row")
    return total.stats()


def gram_stats(R, T=None, chunk_size: int | None = None) -> GramStats:
    """GramStats of regressors R (m, d) and targets T (m, k), summed over chunks of rows.

    Pass R as an iterable of (R_chunk, T_chunk) pairs (and T=None) to stream data that does
    not fit in memory.
    """
    return reduce_gram(gram_sums(Rc, Tc) for Rc, Tc in _chunks(R, T, chunk_size))


def regularize(stats: GramStats, ridge: float = 0.0, anchor=None, mu: float = 0.0) -> GramStats:
    """Fold α‖w‖² + μ‖w − w0_i‖² into (G + (α+μ)I, H + μW0ᵀ, c + μ‖w0_i‖²) exactly."""
    if ridge == 0 and mu == 0:
        return stats
    G = stats.G + (ridge + mu) * np.eye(stats.d)
    H, c = stats.H, stats.c
    if mu != 0:
        W0 = np.asarray(anchor, dtype=float)
        H = H + mu * W0.T
        c = c + mu * np.einsum("ij,ij->i", W0, W0)
    return GramStats(G, H, c, stats.m)


@dataclass
class FreeElimination:
    """Partial minimisation over the free coordinates F (Schur complement); recovers w_F."""

    keep: np.ndarray
    free: np.ndarray
    G_FS: np.ndarray
    H_F: np.ndarray
    chol: tuple

    def recover(self, W_S: np.ndarray, rows=None) -> np.ndarray:
        """Full W (k, d) from the kept part W_S: w_F = G_FF⁻¹(h_F − G_FS w_S)."""
        H_F = self.H_F if rows is None else self.H_F[:, rows]
        W = np.zeros((W_S.shape[0], len(self.keep) + len(self.free)))
        W[:, self.keep] = W_S
        if len(self.free):
            W[:, self.free] = sla.cho_solve(self.chol, H_F - self.G_FS @ W_S.T).T
        return W


def eliminate_free(stats: GramStats, free) -> tuple[GramStats, FreeElimination]:
    """Reduce the quadratic to the non-free coordinates S: G' = G_SS − G_SF G_FF⁻¹ G_FS, etc.

    Exact because the penalty does not involve w_F; needs G_FF ≻ 0.
    """
    free = np.unique(np.asarray(free, dtype=int))
    keep = np.setdiff1d(np.arange(stats.d), free)
    G, H = stats.G, stats.H
    G_FF = G[np.ix_(free, free)]
    G_FS = G[np.ix_(free, keep)]
    H_F = H[free]
    if len(free) == 0:
        return stats, FreeElimination(keep, free, G_FS, H_F, (np.zeros((0, 0)), False))
    try:
        chol = sla.cho_factor(G_FF)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the Gram block of the free coordinates {free.tolist()[:10]} is singular "
            f"(G_FF not positive definite): a free column is constant zero or collinear with "
            f"another; drop it, penalize it, or add a ridge α > 0"
        ) from None
    X_S = sla.cho_solve(chol, G_FS)
    X_h = sla.cho_solve(chol, H_F)
    G_red = G[np.ix_(keep, keep)] - G_FS.T @ X_S
    G_red = (G_red + G_red.T) / 2
    H_red = H[keep] - G_FS.T @ X_h
    c_red = stats.c - np.einsum("fk,fk->k", H_F, X_h)
    return GramStats(G_red, H_red, c_red, stats.m), FreeElimination(keep, free, G_FS, H_F, chol)
