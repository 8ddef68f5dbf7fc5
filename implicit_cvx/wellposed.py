"""Well-posedness of x = φ(Ax + b): norms, Perron–Frobenius eigenvalue, the κ-ball projection,
diagonal rescaling into the ball, the blockwise-Lipschitz (BLIP) condition, and a report of
which sufficient condition holds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .activations import ActivationMap
from .numerics import (
    BALL_RTOL,
    check_kappa,
    check_matrix,
    in_ball,
    inf_norm,
    project_l1_ball_rows,
    row_chunks,
    row_l1_norms,
)
from .structure import BlockStructure, block_structure, state_nodes

__all__ = [
    "BALL_RTOL",
    "blip_eigenvalue",
    "blip_matrix",
    "block_structure",
    "check_kappa",
    "in_ball",
    "inf_norm",
    "pf_eigenvalue",
    "project_inf_ball",
    "project_l1_ball_rows",
    "rescale",
    "row_l1_norms",
    "wellposedness_report",
]

_BATCH_MAX = 32  # cyclic components up to this size: one stacked dense eig per size
_DENSE_EIG_MAX = 500  # larger ones up to this size: dense eig; beyond: ARPACK
_PF_RTOL = 1e-11  # λ_pf is certified within Collatz–Wielandt bounds hi − lo ≤ _PF_RTOL·hi


# ---- Perron–Frobenius eigenvalue ---------------------------------------------------------------
def _abs_block(A, idx: np.ndarray):
    """|A[idx][:, idx]|: dense for a dense A, CSR for a sparse A."""
    if sp.issparse(A):
        return abs(A[idx][:, idx])
    return np.abs(A[np.ix_(idx, idx)])


def _perron(M) -> tuple[float, np.ndarray]:
    """(λ_pf, positive eigenvector) of an irreducible nonnegative M (dense or sparse).

    A first guess (dense eig for small M; ARPACK on I + M for large M) is polished by Noda's
    iteration, which also certifies λ_pf within Collatz–Wielandt bounds, even for periodic M.
    """
    size = M.shape[0]
    if size <= _DENSE_EIG_MAX:
        vals, vecs = np.linalg.eig(M.toarray() if sp.issparse(M) else M)
        k = int(np.argmax(vals.real))  # the Perron root has the largest real part
        guess, w = float(vals[k].real), np.abs(vecs[:, k].real)
    else:
        guess, w = _arpack_perron(M)
    lo, hi, w = _noda(M, w if np.all(np.isfinite(w) & (w > 0)) else np.ones(size))
    return (guess if lo <= guess <= hi else float(hi)), w


def _arpack_perron(M) -> tuple[float, np.ndarray]:
    """ARPACK on I + M: its Perron root 1 + λ_pf is the unique eigenvalue of largest modulus.
    Returns (nan, 𝟙) when ARPACK does not converge (nearly periodic M); Noda takes over."""
    size = M.shape[0]
    shifted = M + (sp.identity(size, format="csr") if sp.issparse(M) else np.eye(size))
    try:
        vals, vecs = spla.eigs(
            shifted, k=1, which="LM", v0=np.ones(size), ncv=min(size, 40), maxiter=50, tol=0.0
        )
    except spla.ArpackNoConvergence:
        return float("nan"), np.ones(size)
    return float(vals[0].real) - 1.0, np.abs(vecs[:, 0].real)


def _collatz_wielandt(M, w: np.ndarray) -> tuple[float, float]:
    """min_i (Mw)_i/w_i ≤ λ_pf(M) ≤ max_i (Mw)_i/w_i for nonnegative M and positive w."""
    ratio = np.asarray(M @ w).ravel() / w
    return float(ratio.min()), float(ratio.max())


def _noda(M, w: np.ndarray, max_iter: int = 60) -> tuple[float, float, np.ndarray]:
    """Noda's inverse iteration w ← (σI − M)⁻¹w with σ the upper Collatz–Wielandt bound.

    σ decreases superlinearly to λ_pf; w stays positive since (σI − M)⁻¹ > 0 for σ > λ_pf.
    Returns the final bounds (lo, hi) and w. Its sparse LU is cheap for the nearly periodic
    (cycle-like) components where ARPACK stalls; expander-like ones have a gap and skip it.
    """
    sparse = sp.issparse(M)
    eye = sp.identity(M.shape[0], format="csc") if sparse else np.eye(M.shape[0])
    lo, hi = _collatz_wielandt(M, w)
    for _ in range(max_iter):
        if hi - lo <= _PF_RTOL * hi:
            break
        try:
            shifted = hi * eye - M
            y = (
                spla.splu(sp.csc_matrix(shifted)).solve(w)
                if sparse
                else np.linalg.solve(shifted, w)
            )
        except (RuntimeError, np.linalg.LinAlgError):  # σ hit λ_pf exactly: w is converged
            break
        if not np.all(np.isfinite(y) & (y > 0)):
            break
        y = y / y.max()
        lo_y, hi_y = _collatz_wielandt(M, y)
        if hi_y > hi:  # rounding noise once converged; the bounds are monotone in exact arithmetic
            break
        w, lo, hi = y, lo_y, hi_y
    return lo, hi, w


def _abs_equal_blocks(A, structure: BlockStructure, ks: np.ndarray) -> np.ndarray:
    """The stack |A_kk| (len(ks), s, s) of diagonal blocks of components ks, all of size s."""
    idx = np.stack([structure.components[k] for k in ks])
    count, size = idx.shape
    if not sp.issparse(A):
        return np.abs(A[idx[:, :, None], idx[:, None, :]])
    rows = sp.coo_matrix(A[idx.ravel()])  # row r belongs to block r // size
    block = rows.row // size
    keep = structure.labels[rows.col] == ks[block]
    pos = np.empty(A.shape[0], dtype=np.intp)  # position of a state inside its component
    pos[idx.ravel()] = np.tile(np.arange(size), count)
    out = np.zeros((count, size, size))
    np.add.at(
        out, (block[keep], rows.row[keep] % size, pos[rows.col[keep]]), np.abs(rows.data[keep])
    )
    return out


def _block_stats(A, structure: BlockStructure) -> tuple[np.ndarray, np.ndarray]:
    """λ_pf(|A_kk|) and ‖A_kk‖_∞ of every diagonal block A_kk (acyclic blocks give 0, 0).

    Small components are batched by size (one stacked eig per size); large ones go to _perron.
    """
    sizes = np.array([c.size for c in structure.components], dtype=np.intp)
    lam, norm = np.zeros(sizes.size), np.zeros(sizes.size)
    cyclic = np.array(structure.cyclic, dtype=bool)
    singles = np.flatnonzero(sizes == 1)
    diag = A.diagonal() if sp.issparse(A) else np.diagonal(A)
    first_state = structure.order[np.cumsum(sizes) - sizes] if sizes.size else sizes
    lam[singles] = norm[singles] = np.abs(diag[first_state[singles]])
    for size in np.unique(sizes[cyclic & (sizes > 1) & (sizes <= _BATCH_MAX)]):
        ks = np.flatnonzero(cyclic & (sizes == size))
        blocks = _abs_equal_blocks(A, structure, ks)
        lam[ks] = np.abs(np.linalg.eigvals(blocks)).max(axis=1)
        norm[ks] = blocks.sum(axis=2).max(axis=1)
    for k in np.flatnonzero(cyclic & (sizes > _BATCH_MAX)):
        block = _abs_block(A, structure.components[k])
        lam[k], norm[k] = max(_perron(block)[0], 0.0), row_l1_norms(block).max()
    return lam, norm


def pf_eigenvalue(A, structure: BlockStructure | None = None) -> float:
    """λ_pf(|A|), the spectral radius of |A| (Thm 2.2), computed per strongly connected component.

    Acyclic components contribute exactly 0, so a nilpotent |A| (feed-forward) gives 0.
    λ_pf(|A|) < 1 is a sufficient condition for well-posedness.

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        The state matrix.
    structure : BlockStructure, optional
        A's block structure, if already computed (`block_structure(A)`).

    Returns
    -------
    float
        λ_pf(|A|).

    Raises
    ------
    ValueError
        If A is not square.

    Examples
    --------
    >>> from implicit_cvx import pf_eigenvalue
    >>> round(pf_eigenvalue([[0.5, 0.6], [0.3, 0.4]]), 4)
    0.8772
    >>> pf_eigenvalue([[0.0, 1.5], [0.0, 0.0]])  # feed-forward
    0.0
    """
    A = check_matrix("A", A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square (n×n), got shape {A.shape}")
    lam = _block_stats(A, structure or block_structure(A))[0]
    return float(lam.max()) if lam.size else 0.0


# ---- projection onto the κ-ball ----------------------------------------------------------------
def _project_csr_rows(A: sp.csr_matrix, kappa: float) -> sp.csr_matrix:
    """Row-wise ℓ1 projection of the stored entries of a CSR matrix (zero-padded dense chunks)."""
    A = A.copy()
    A.sum_duplicates()
    lengths = np.diff(A.indptr)
    outside = np.flatnonzero(row_l1_norms(A) > kappa * (1.0 + BALL_RTOL))
    width = int(lengths[outside].max()) if outside.size else 0
    for rows in row_chunks(outside, width):
        counts = lengths[rows]
        row_of = np.repeat(np.arange(rows.size), counts)
        pos = np.arange(row_of.size) - np.repeat(np.cumsum(counts) - counts, counts)
        src = np.repeat(A.indptr[rows], counts) + pos
        pad = np.zeros((rows.size, width))
        pad[row_of, pos] = A.data[src]
        A.data[src] = project_l1_ball_rows(pad, kappa)[row_of, pos]
    A.eliminate_zeros()
    return A


def project_inf_ball(A, kappa):
    """Euclidean (Frobenius) projection of A onto {‖A‖_∞ ≤ κ}: one ℓ1-ball projection per row.

    Sparse input keeps its sparsity pattern (the projection never creates nonzeros) and returns
    CSR. Scaling A by κ/‖A‖_∞ is feasible too, but it is not this projection.

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        The matrix to project.
    kappa : float
        The radius κ, 0 < κ < 1.

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix
        The projection (dense for dense input).

    Raises
    ------
    ValueError
        If κ lies outside (0, 1) or A contains NaN or inf.

    Examples
    --------
    >>> from implicit_cvx import inf_norm, project_inf_ball
    >>> P = project_inf_ball([[0.5, 0.6], [0.3, 0.4]], 0.95)
    >>> P.round(3), round(inf_norm(P), 6)
    (array([[0.425, 0.525],
           [0.3  , 0.4  ]]), 0.95)
    """
    kappa = check_kappa(kappa)
    A = check_matrix("A", A)
    if sp.issparse(A):
        if not np.all(np.isfinite(A.data)):
            raise ValueError(f"A (shape {A.shape}) contains NaN or inf")
        return _project_csr_rows(A, kappa)
    return project_l1_ball_rows(A, kappa)


# ---- diagonal rescaling (§2.5) -----------------------------------------------------------------
def _resolvent_weights(A, kappa: float) -> np.ndarray:
    """w = (κI − |A|)⁻¹𝟙 > 0 (needs λ_pf(|A|) < κ): the rescaled rows sum to κ − 1/w_i < κ."""
    n = A.shape[0]
    if sp.issparse(A):
        w = spla.spsolve(sp.csc_matrix(kappa * sp.identity(n) - abs(A)), np.ones(n))
    else:
        w = np.linalg.solve(kappa * np.eye(n) - np.abs(A), np.ones(n))
    return np.atleast_1d(w)


def _scaled_model(model, w: np.ndarray, note: dict):
    """(SAS⁻¹, SB, S b_x, CS⁻¹, D, b_y) with S = diag(1/w), normalised to geometric mean 1."""
    log_w = np.log(w)
    w = np.exp(log_w - log_w.mean())
    s = 1.0 / w
    if sp.issparse(model.A):
        A = (sp.diags(s) @ model.A @ sp.diags(w)).tocsr()
    else:
        A = model.A * s[:, None] * w[None, :]
    B = (sp.diags(s) @ model.B).tocsr() if sp.issparse(model.B) else model.B * s[:, None]
    C = (model.C @ sp.diags(w)).tocsr() if sp.issparse(model.C) else model.C * w[None, :]
    out = model.with_weights(A=A, B=B, C=C, b_x=s * model.b_x)
    out.metadata["rescaling"] = {**note, "inf_norm_after": inf_norm(A)}
    return out


def rescale(model, kappa, method: str = "resolvent"):
    """An equivalent model with ‖A‖_∞ < κ by a diagonal state scaling (paper §2.5).

    The states are scaled by S = diag(1/w): (A, B, b_x, C) becomes (SAS⁻¹, SB, S b_x, CS⁻¹),
    which predicts the same when φ is positively homogeneous (ReLU, leaky ReLU, identity).

    Parameters
    ----------
    model : ImplicitModel
        The model; componentwise, positively homogeneous activation.
    kappa : float
        The target, 0 < κ < 1.
    method : {"resolvent", "pf"}, default="resolvent"
        "resolvent": w = (κI − |A|)⁻¹𝟙, any A with λ_pf(|A|) < κ. "pf": w = Perron vector of
        |A|, reaching ‖A‖_∞ = λ_pf(|A|); needs |A| irreducible.

    Returns
    -------
    ImplicitModel
        The rescaled model; metadata["rescaling"] records the scaling.

    Raises
    ------
    ValueError
        If the method is unknown, the activation is not positively homogeneous or couples
        states, or λ_pf(|A|) ≥ κ.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, inf_norm, rescale
    >>> model = ImplicitModel(A=[[0.5, 0.6], [0.3, 0.4]], B=np.eye(2), C=np.eye(2),
    ...                       D=np.zeros((2, 2)))
    >>> scaled = rescale(model, 0.95)
    >>> inf_norm(model.A), round(inf_norm(scaled.A), 4)
    (1.1, 0.8913)
    >>> bool(np.allclose(scaled.predict([[1.0, 2.0]]), model.predict([[1.0, 2.0]])))
    True
    """
    kappa = check_kappa(kappa)
    if method not in ("resolvent", "pf"):
        raise ValueError(f"rescale method must be 'resolvent' or 'pf', got {method!r}")
    if not model.activation.componentwise:
        names = sorted({act.name for act, _, _ in model.activation.blocks if not act.componentwise})
        raise ValueError(
            f"cannot rescale: block activation {names} couples the states of its block, and a "
            "diagonal scaling of those states does not commute with it; only componentwise "
            "(relu, leaky_relu, identity) models can be rescaled"
        )
    if not model.activation.positively_homogeneous:
        names = sorted({act.name for act, _, _ in model.activation.blocks})
        raise ValueError(
            f"cannot rescale: activation {names} is not positively homogeneous (φ(tz) ≠ tφ(z)), "
            "so a diagonal state scaling changes the predictions; only relu, leaky_relu and "
            "identity models can be rescaled"
        )
    A = model.A
    structure = block_structure(A)
    lam = pf_eigenvalue(A, structure)
    if lam >= kappa:
        raise ValueError(
            f"cannot rescale into the κ-ball: λ_pf(|A|) = {lam:.6g} ≥ κ = {kappa:g}, and no "
            "diagonal scaling gets ‖SAS⁻¹‖_∞ below λ_pf(|A|); choose κ > λ_pf(|A|) (κ < 1) or "
            "project A with project_inf_ball (which changes predictions)"
        )
    note = {"method": method, "kappa": kappa, "pf_eigenvalue": lam, "inf_norm_before": inf_norm(A)}
    n = A.shape[0]
    if method == "pf":
        if not (structure.n_components == 1 and structure.cyclic[0]):
            raise ValueError(
                f"rescale method 'pf' needs an irreducible |A| (one cyclic strongly connected "
                f"component), but A's {n} states form {structure.n_components} components "
                f"({structure.n_cyclic} cyclic), so |A| has no positive Perron vector; use "
                "method='resolvent'"
            )
        w = _perron(np.abs(A) if not sp.issparse(A) else abs(A))[1]
    else:
        w = _resolvent_weights(A, kappa)
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(
            f"rescale ({method}) lost positivity of the scaling vector in floating point "
            f"(λ_pf(|A|) = {lam:.6g} is too close to κ = {kappa:g}); use a larger κ"
        )
    out = _scaled_model(model, w, note)
    if not in_ball(out.A, kappa):  # a guard: the theory gives κ − 1/w_i < κ
        raise ValueError(
            f"rescale ({method}) reached ‖A‖_∞ = {inf_norm(out.A):.17g} > κ = {kappa:g} in "
            f"floating point (λ_pf(|A|) = {lam:.6g} is too close to κ); use a larger κ"
        )
    out.metadata["kappa"] = kappa
    return out


# ---- blockwise-Lipschitz condition (Thm 2.7) --------------------------------------------------
def blip_matrix(A, activation) -> tuple[sp.csr_matrix, np.ndarray]:
    """The reduced matrix N of Thm 2.7 and the node of every state.

    Nodes are the blocks of φ: a block activation's states form one node, every other state is
    its own node. N_lk = γ_l ‖A_lk‖_∞ (γ_l the ℓ∞ Lipschitz constant of node l's activation;
    ‖·‖_∞ the max absolute row sum), so ‖x_l − x'_l‖_∞ ≤ Σ_k N_lk ‖x_k − x'_k‖_∞ and
    λ_pf(N) < 1 makes x ↦ φ(Ax + b) a contraction in a weighted max-norm (the theorem holds in
    any norm; ℓ∞ matches the κ-ball). With only CONE states γ ≤ 1 and N ≤ |A|.
    """
    A = check_matrix("A", A)
    n = A.shape[0]
    amap = ActivationMap.build(activation, n)
    node = state_nodes(n, amap.groups)
    gamma = np.empty(n)
    for act, a, b in amap.blocks:
        gamma[a:b] = act.lipschitz
    L = int(node.max()) + 1 if n else 0
    coo = sp.coo_matrix(A)
    sums = sp.coo_matrix(  # S_{i, node(j)} = Σ_{j in node} |A_ij| (duplicates are summed)
        sp.csr_matrix((np.abs(coo.data), (coo.row, node[coo.col])), shape=(n, L))
    )
    key = node[sums.row].astype(np.int64) * L + sums.col
    order = np.argsort(key, kind="stable")
    key, vals, rows = key[order], sums.data[order], sums.row[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key
    best = np.maximum.reduceat(vals, starts) if key.size else vals
    g = gamma[rows[starts]] if key.size else vals
    with np.errstate(invalid="ignore"):
        data = np.where(best > 0, g * best, 0.0)
    N = sp.csr_matrix((data, (key[starts] // L, key[starts] % L)), shape=(L, L))
    N.eliminate_zeros()
    return N, node


def _blip_component_eigenvalues(A, activation, structure: BlockStructure) -> np.ndarray:
    """λ_pf(N_kk) for every component k of `structure` (built with the activation's groups);
    +inf where a node of a cyclic component has no finite γ."""
    N, node = blip_matrix(A, activation)
    n_struct = block_structure(N)
    lam_nodes = np.zeros(n_struct.n_components)
    coo = N.tocoo()
    inside = n_struct.labels[coo.row] == n_struct.labels[coo.col]
    infinite = np.unique(n_struct.labels[coo.row[inside & ~np.isfinite(coo.data)]])
    if infinite.size:
        N = N.copy()
        N.data[~np.isfinite(N.data)] = 0.0
    lam_nodes[:] = _block_stats(N, n_struct)[0]
    lam_nodes[infinite] = np.inf
    first = np.array([c[0] for c in structure.components], dtype=np.intp)
    return lam_nodes[n_struct.labels[node[first]]] if first.size else lam_nodes


def blip_eigenvalue(A, activation) -> float:
    """λ_pf(N) of the reduced matrix of Thm 2.7 (see `blip_matrix`).

    < 1 means well-posed for the given activation map (per-block Lipschitz constants), and Picard
    converges.

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        The state matrix.
    activation : str, dict, activation or ActivationMap
        The activation of the states (one spec for all, or a map).

    Returns
    -------
    float
        λ_pf(N).

    Examples
    --------
    A softmax block has γ = 1/2, so a block with ‖A‖_∞ = 1.8 is still well-posed:

    >>> import numpy as np
    >>> from implicit_cvx import blip_eigenvalue
    >>> round(blip_eigenvalue(np.full((2, 2), 0.9), "softmax"), 6)
    0.9
    """
    A = check_matrix("A", A)
    amap = ActivationMap.build(activation, A.shape[0])
    structure = block_structure(A, amap.groups)
    lam = _blip_component_eigenvalues(A, amap, structure)
    return float(lam.max()) if lam.size else 0.0


def _self_loops(A, amap: ActivationMap | None, structure: BlockStructure) -> np.ndarray:
    """Per component: True where it is one scalar state whose self-loop a = A_ii is solved
    uniquely for its activation (Remark 2.5; `Activation.selfloop_ok`)."""
    ok = np.zeros(structure.n_components, dtype=bool)
    if amap is None:
        return ok
    diag = A.diagonal() if sp.issparse(A) else np.diagonal(A)
    for k, comp in enumerate(structure.components):
        if structure.cyclic[k] and comp.size == 1:
            act = amap.activation_of(int(comp[0]))
            ok[k] = act.componentwise and bool(act.selfloop_ok(diag[comp[0]]))
    return ok


# ---- report ------------------------------------------------------------------------------------
def _reason(holds: dict, stats: dict) -> str:
    """The sentence naming the first sufficient condition that holds."""
    if holds["triangular"]:
        return ("well-posed: A is block triangular with no cyclic block (feed-forward), solved "
                "exactly by one sweep in topological order (Thm 2.8/2.9)")
    if holds["inf_norm<1"]:
        return f"well-posed: ‖A‖_∞ = {stats['norm']:.6g} < 1 (convex sufficient condition)"
    if holds["pf<1"]:
        return (f"well-posed: λ_pf(|A|) = {stats['lam']:.6g} < 1 (Perron–Frobenius condition, "
                "Thm 2.2)")
    if holds.get("blip<1"):
        return (f"well-posed: λ_pf(N) = {stats['blip']:.6g} < 1 for the reduced matrix of block "
                "norms and Lipschitz constants (BLIP condition, Thm 2.7)")
    loops = f"; {stats['loops']} self-loop(s) solved in closed form (Remark 2.5)" if stats["loops"] else ""
    return ("well-posed: every cyclic diagonal block is well-posed — ‖A_kk‖_∞ < 1, λ_pf < 1 "
            f"or the BLIP condition on the block{loops} (block-triangular structure, Thm 2.8/2.9)")


def _ill_posed_reason(A, amap, structure, bad, block_lam, block_norm, blip_lam, stats) -> str:
    k = int(np.argmax(np.where(bad, np.maximum(block_lam, blip_lam), -np.inf)))
    comp = structure.components[k]
    text = (
        "no sufficient condition for well-posedness holds: "
        f"‖A‖_∞ = {stats['norm']:.6g} ≥ 1 and λ_pf(|A|) = {stats['lam']:.6g} ≥ 1; "
        f"the cyclic block of {comp.size} states starting at state {int(comp[0])} has "
        f"‖A_kk‖_∞ = {block_norm[k]:.6g} and λ_pf(|A_kk|) = {block_lam[k]:.6g}"
    )
    if amap is not None and not amap.componentwise:
        text += f" and λ_pf(N_kk) = {blip_lam[k]:.6g} (BLIP, Thm 2.7)"
    if amap is not None and comp.size == 1:
        act = amap.activation_of(int(comp[0]))
        a = float(A[int(comp[0]), int(comp[0])])
        text += (f"; its self-loop x = {act.name}({a:.6g}·x + c) has no unique solution for some c "
                 "(Remark 2.5 needs (1 − a)(1 − αa) > 0 for piecewise-linear φ, a·Lip(φ) < 1 else)")
    return text + "; project A onto the κ-ball (project_inf_ball) or train with kappa < 1"


def wellposedness_report(A, kappa=None, activation=None) -> dict:
    """Which sufficient condition for well-posedness holds (Thm 2.2, 2.7, 2.8/2.9, Remark 2.5).

    Without `activation`, conditions valid for every CONE φ: triangular, ‖A‖_∞ < 1, λ_pf(|A|)
    < 1, or "per_block" (each cyclic block of the block-triangular form satisfies one of them).
    With an activation (spec or ActivationMap), also: block activations are one node each;
    "blip<1" (λ_pf(N) < 1, Thm 2.7; see `blip_matrix`); and per block, scalar self-loops
    x_i = φ(a x_i + c) that are uniquely solvable (Remark 2.5: e.g. ReLU needs a < 1, so
    A = [[−2, .5], [0, .3]] is well-posed with ReLU though ‖A‖_∞, λ_pf(|A|) > 1). ‖A‖_∞ < 1 and
    λ_pf(|A|) < 1 count only when they suffice for that map (γ ≤ 1; CONE states).
    The equilibrium solvers refuse to run when "well_posed" is False, quoting "reason".

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        The state matrix.
    kappa : float, optional
        With κ given, also reports "in_ball" (‖A‖_∞ ≤ κ(1 + BALL_RTOL)) and "pf<kappa"
        (rescalable into the κ-ball).
    activation : str, dict, activation or ActivationMap, optional
        The activation, for the activation-specific conditions above.

    Returns
    -------
    dict
        "inf_norm", "pf_eigenvalue", "triangular", "n_components", "n_cyclic",
        "largest_cyclic_block", "conditions" (those that hold), "well_posed", "reason", and
        the κ and activation entries described above.

    Raises
    ------
    ValueError
        If A is not square.

    Examples
    --------
    >>> from implicit_cvx import wellposedness_report
    >>> report = wellposedness_report([[0.5, 0.6], [0.3, 0.4]], kappa=0.95)
    >>> report["conditions"], report["in_ball"], report["pf<kappa"]
    (['pf<1', 'per_block'], False, True)
    >>> wellposedness_report([[-2, 0.5], [0, 0.3]], activation="relu")["well_posed"]
    True
    """
    A = check_matrix("A", A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square (n×n), got shape {A.shape}")
    amap = None if activation is None else ActivationMap.build(activation, A.shape[0])
    structure = block_structure(A, amap.groups if amap is not None else None)
    block_lam, block_norm = _block_stats(A, structure)
    blip_lam = block_lam if amap is None else _blip_component_eigenvalues(A, amap, structure)
    cyclic = np.array(structure.cyclic, dtype=bool)
    loops = _self_loops(A, amap, structure)
    bad = cyclic & ~loops & ~(blip_lam < 1.0)
    finite = amap is None or np.isfinite(amap.lipschitz)  # Thm 2.7 needs Lipschitz blocks
    stats = {"norm": inf_norm(A), "lam": float(block_lam.max(initial=0.0)),
             "blip": float(blip_lam.max(initial=0.0)) if finite else np.inf,
             "loops": int((loops & ~(blip_lam < 1)).sum())}
    cone = amap is None or amap.componentwise
    holds = {
        "triangular": structure.is_triangular,
        "inf_norm<1": stats["norm"] < 1.0 and (amap is None or amap.lipschitz <= 1.0),
        "pf<1": stats["lam"] < 1.0 and cone,
        **({} if amap is None else {"blip<1": stats["blip"] < 1.0}),
        "per_block": not bad.any(),
    }
    conditions = [name for name, ok in holds.items() if ok]
    sizes = np.array([c.size for c in structure.components], dtype=np.intp)
    report = {
        "inf_norm": stats["norm"],
        "pf_eigenvalue": stats["lam"],
        "triangular": structure.is_triangular,
        "n_components": structure.n_components,
        "n_cyclic": structure.n_cyclic,
        "largest_cyclic_block": int(sizes[cyclic].max()) if cyclic.any() else 0,
        "conditions": conditions,
        "well_posed": bool(conditions),
        "reason": _reason(holds, stats) if conditions else _ill_posed_reason(
            A, amap, structure, bad, block_lam, block_norm, blip_lam, stats),
    }
    if amap is not None:
        report.update(blip_eigenvalue=stats["blip"], self_loops=int(loops.sum()))
    if kappa is not None:
        kappa = check_kappa(kappa)
        report.update(
            kappa=kappa, in_ball=in_ball(A, kappa),
            **{"pf<kappa": stats["lam"] < kappa},
        )
    return report
