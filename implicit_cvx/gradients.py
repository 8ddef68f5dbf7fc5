"""Gradients of a loss through the equilibrium by implicit differentiation (App. G).

With Z = XAᵀ + UBᵀ + b_x and Φ = φ'(Z), the adjoint V = ∂L/∂Z solves V = Φ ∘ (VA + G_X), where
G_X = ∂L/∂X (= G_out C for a loss on the outputs Ŷ). Samples are rows; in the paper's columns
this is v = Φ(Aᵀv + Cᵀ∇_ŷL). The map contracts in ℓ1 when ‖A‖_∞ < 1 (‖Aᵀ‖_1 = ‖A‖_∞). A block
activation has a block Jacobian J instead of Φ: each row becomes v = (vA + g) J, applied by
`ActivationMap.vjp`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .equilibrium import (
    EquilibriumError,
    EquilibriumInfo,
    IllPosedError,
    choose_kernel,
    diagonal_of,
    input_term,
    run_kernel,
    sub_block,
    sweep_plan,
)
from .numerics import times_transpose

# Cyclic blocks up to this size get a batched direct solve (cost m·k³/3 beats ~30 sweeps of m·k²).
DIRECT_MAX = 32
_DIRECT_ENTRIES = 2**22  # batched k×k systems per chunk: at most this many matrix entries


def _times(X: np.ndarray, M) -> np.ndarray:
    """X M for a dense or scipy.sparse M."""
    return times_transpose(X, M.T)


def _check_rows(name: str, G, m: int, width: int) -> np.ndarray:
    G = np.asarray(G, dtype=float)
    if G.shape != (m, width):
        raise ValueError(f"{name} has shape {G.shape}, expected {(m, width)}: one row per sample")
    if not np.all(np.isfinite(G)):
        raise ValueError(f"{name} contains NaN or inf")
    return G


def _direct_adjoint(block, phi, Z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Solve v = (v block + r) J(z) exactly, one small linear system per sample: in columns,
    (I − Jᵀ blockᵀ) v = Jᵀ r (Jᵀ = diag(φ'(z)) for CONE states)."""
    At = (block.toarray() if sp.issparse(block) else np.asarray(block)).T
    m, k = Z.shape
    V = np.empty((m, k))
    chunk = max(1, _DIRECT_ENTRIES // max(k * k, 1))
    for a in range(0, m, chunk):
        z, r = Z[a : a + chunk], R[a : a + chunk]
        if phi.componentwise:
            p = phi.derivative(z)
            systems = np.eye(k) - p[:, :, None] * At[None]
        else:
            systems = np.eye(k) - np.swapaxes(phi.jacobian(z), 1, 2) @ At
        try:
            V[a : a + chunk] = np.linalg.solve(systems, phi.vjp(z, r)[..., None])[..., 0]
        except np.linalg.LinAlgError:
            raise IllPosedError(
                f"the adjoint system I − Φ Aᵀ of a cyclic block of {k} states is singular at "
                "this equilibrium: the model is not well-posed here; project A to ‖A‖_∞ < 1"
            ) from None
    return V


def _selfloop_adjoint(A, st, Z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """v_i = φ'(z_i)(a_i v_i + r_i), i.e. v_i = φ'(z_i) r_i / (1 − a_i φ'(z_i)) (Remark 2.5)."""
    P = st.phi.derivative(Z)
    denom = 1.0 - diagonal_of(A, st.states) * P
    if np.any(denom == 0):
        raise IllPosedError(
            "a self-loop has a_i φ'(z_i) = 1 at this equilibrium: the adjoint is undefined; "
            "the model is not well-posed here"
        )
    return P * R / denom


def _solve_adjoint(model, Z: np.ndarray, R: np.ndarray, tol: float, max_iter: int):
    """V = (VA + R) J(Z) row by row, swept over A's components in reverse topological order:
    acyclic levels in one product, self-loops in closed form, cyclic blocks directly
    (≤ DIRECT_MAX states) or by fixed point."""
    A = model.A
    V = np.zeros_like(R)
    scale = float(np.abs(R).max(initial=0.0))
    if scale == 0.0:
        return V
    _, steps = sweep_plan(A, model.activation)
    for st in reversed(steps):
        Rs = R[:, st.states]
        if st.users is not None:
            Rs = Rs + _times(V[:, st.users], sub_block(A, st.users, st.states))
        Zs = Z[:, st.states]
        if st.kind == "explicit":
            V[:, st.states] = st.phi.vjp(Zs, Rs)
            continue
        if st.kind == "selfloop":
            V[:, st.states] = _selfloop_adjoint(A, st, Zs, Rs)
            continue
        block = sub_block(A, st.states, st.states)
        if block.shape[0] <= DIRECT_MAX:
            V[:, st.states] = _direct_adjoint(block, st.phi, Zs, Rs)
            continue
        kind = choose_kernel(block)
        run = run_kernel(
            kind,
            lambda Vr, rows, phi=st.phi, Zs=Zs, Rs=Rs, block=block: phi.vjp(
                Zs[rows], _times(Vr, block) + Rs[rows]
            ),
            np.zeros_like(Rs),
            tol * scale,
            max_iter,
        )
        if not run.converged:
            info = EquilibriumInfo(
                f"adjoint/{kind}", run.iterations, run.residual, False, run.trace
            )
            raise EquilibriumError(info, tol * scale)
        V[:, st.states] = run.X
    return V


def adjoint_of_states(model, U, X, G_states, tol: float = 1e-12, max_iter: int = 10_000):
    """V = ∂L/∂Z (m, n) for a loss with ∂L/∂X = G_states (m, n): V = (VA + G_states) J(Z)
    (V = Φ ∘ (VA + G_states) for CONE states).

    `tol` bounds the max abs residual relative to max |G_states|; EquilibriumError if the
    iteration on a large cyclic block does not reach it.
    """
    U = model.check_inputs(U)
    m, n = U.shape[0], model.n_states
    X = _check_rows("states X", X, m, n)
    G_states = _check_rows("G_states", G_states, m, n)
    Z = times_transpose(X, model.A) + input_term(model, U)
    return _solve_adjoint(model, Z, G_states, tol, max_iter)


def implicit_adjoint(model, U, X, G_out, tol: float = 1e-12, max_iter: int = 10_000):
    """V (m, n) solving V = Φ ∘ (VA + G_out C) for G_out = ∂L/∂Ŷ (m, q) (App. G).

    Φ holds the activation's derivatives at the equilibrium; V is ∂L/∂Z, the gradient with
    respect to the pre-activations.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    U : ndarray, shape (m, p)
        Inputs.
    X : ndarray, shape (m, n)
        The equilibrium states at U.
    G_out : ndarray, shape (m, q)
        ∂L/∂Ŷ.
    tol : float, default=1e-12
        Tolerance of the adjoint fixed-point solve.
    max_iter : int, default=10000
        Iteration limit of that solve.

    Returns
    -------
    ndarray, shape (m, n)
        V.

    Raises
    ------
    ValueError
        If G_out does not have shape (m, q).

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, implicit_adjoint, loss_gradients
    >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=[[1, 1]], D=[[0, 0]],
    ...                       b_x=[0, 0.1])
    >>> U = np.array([[1.0, 0.5]])
    >>> X = model.equilibrium(U)
    >>> implicit_adjoint(model, U, X, np.ones((1, 1)))
    array([[1. , 1.5]])
    """
    G_out = _check_rows("G_out", G_out, np.shape(X)[0], model.n_outputs)
    return adjoint_of_states(model, U, X, _times(G_out, model.C), tol, max_iter)


def _weight_gradient(W, L: np.ndarray, R: np.ndarray):
    """Lᵀ R, the gradient of a weight W used as Z = R Wᵀ with ∂L/∂Z = L; for a sparse W, the
    entries on W's stored pattern only (its free parameters), as a sparse matrix."""
    full = L.T @ R
    if not sp.issparse(W):
        return full
    coo = W.tocoo()
    return sp.csr_matrix((full[coo.row, coo.col], (coo.row, coo.col)), shape=W.shape)


def loss_gradients(model, U, X, G_out) -> dict:
    """∂L/∂(A, B, C, D, b_x, b_y, U) at the equilibrium X for G_out = ∂L/∂Ŷ (App. G).

    ∇_A = VᵀX, ∇_B = VᵀU, ∇_C = G_outᵀX, ∇_D = G_outᵀU, ∇_b_x = Σ_s V_s, ∇_b_y = Σ_s G_out,s,
    ∇_U = VB + G_out D, with V from `implicit_adjoint`. Sparse weights get sparse gradients on
    their stored pattern.

    Parameters
    ----------
    model : ImplicitModel
        The model.
    U : array_like, shape (m, p)
        Inputs.
    X : ndarray, shape (m, n)
        The equilibrium states at U.
    G_out : ndarray, shape (m, q)
        ∂L/∂Ŷ.

    Returns
    -------
    dict
        Gradients by name: "A", "B", "C", "D", "b_x", "b_y", "U".

    Examples
    --------
    Check ∂L/∂u_0 for L = sum of the outputs against a central difference:

    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, implicit_adjoint, loss_gradients
    >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=[[1, 1]], D=[[0, 0]],
    ...                       b_x=[0, 0.1])
    >>> U = np.array([[1.0, 0.5]])
    >>> X = model.equilibrium(U)
    >>> grads = loss_gradients(model, U, X, np.ones((1, 1)))
    >>> h = 1e-6
    >>> fd = (model.predict(U + [[h, 0]]) - model.predict(U - [[h, 0]])).sum() / (2 * h)
    >>> round(float(grads["U"][0, 0]), 6), round(float(fd), 6)
    (1.0, 1.0)
    """
    U = model.check_inputs(U)
    G_out = _check_rows("G_out", G_out, U.shape[0], model.n_outputs)
    V = implicit_adjoint(model, U, X, G_out)
    X = np.asarray(X, dtype=float)
    return {
        "A": _weight_gradient(model.A, V, X),
        "B": _weight_gradient(model.B, V, U),
        "C": _weight_gradient(model.C, G_out, X),
        "D": _weight_gradient(model.D, G_out, U),
        "b_x": V.sum(axis=0),
        "b_y": G_out.sum(axis=0),
        "U": _times(V, model.B) + _times(G_out, model.D),
    }
