"""Implicit differentiation (App. G): gradients against central finite differences and the
adjoint against a direct per-sample linear solve, on cyclic, feed-forward, block-triangular and
sparse models."""

import numpy as np
import pytest
import scipy.sparse as sp

from implicit_cvx.equilibrium import solve_equilibrium
from implicit_cvx.gradients import adjoint_of_states, implicit_adjoint, loss_gradients
from implicit_cvx.model import ImplicitModel

PARAMS = ["A", "B", "C", "D", "b_x", "b_y"]


def scaled(A, kappa):
    norms = np.abs(A).sum(axis=1, keepdims=True)
    return np.where(norms > 0, A * kappa / np.where(norms > 0, norms, 1.0), 0.0)


def make_model(rng, n, p=4, q=3, kappa=0.9, activation="tanh", mask=None, sparse=False):
    A = rng.standard_normal((n, n))
    if mask is not None:
        A *= mask
    A = scaled(A, kappa)
    return ImplicitModel(
        sp.csr_matrix(A) if sparse else A, rng.standard_normal((n, p)),
        rng.standard_normal((q, n)), rng.standard_normal((q, p)),
        0.5 * rng.standard_normal(n), rng.standard_normal(q), activation=activation,
    )


def loss_and_gout(model, U, W):
    """L = Σ W∘Ŷ + ½‖Ŷ‖² at an equilibrium solved to ~1e-14; G_out = ∂L/∂Ŷ = W + Ŷ."""
    X, _ = solve_equilibrium(model, U, tol=1e-14, max_iter=100_000)
    Y = model.output(X, U)
    return float(np.sum(W * Y) + 0.5 * np.sum(Y * Y)), W + Y, X


def perturbed(model, U, name, D, t):
    """(model, U) with parameter `name` moved by t·D (D dense, or a sparse array of values)."""
    if name == "U":
        return model, U + t * D
    W = getattr(model, name)
    if sp.issparse(W):
        W = W.copy()
        W.data = W.data + t * D
        return model.with_weights(**{name: W}), U
    return model.with_weights(**{name: W + t * D}), U


def fd_directional(model, U, W, name, D, h=1e-5):
    lp = loss_and_gout(*perturbed(model, U, name, D, h), W)[0]
    lm = loss_and_gout(*perturbed(model, U, name, D, -h), W)[0]
    return (lp - lm) / (2 * h)


def as_values(G, W):
    """Gradient values aligned with a parameter: the stored entries for a sparse weight."""
    return G.tocoo().data if sp.issparse(W) else np.asarray(G)


def check_every_entry(model, U, W, h=1e-5):
    _, G_out, X = loss_and_gout(model, U, W)
    grads = loss_gradients(model, U, X, G_out)
    for name in PARAMS + ["U"]:
        base = U if name == "U" else getattr(model, name)
        size = base.nnz if sp.issparse(base) else base.size
        shape = (size,) if sp.issparse(base) else base.shape
        fd = np.empty(size)
        for i in range(size):
            E = np.zeros(size)
            E[i] = 1.0
            fd[i] = fd_directional(model, U, W, name, E.reshape(shape), h)
        got = as_values(grads[name], base).ravel()
        err = np.linalg.norm(fd - got) / np.linalg.norm(fd)
        assert err <= 1e-6, (name, err)


def test_every_entry_matches_finite_differences_tanh_cyclic():
    rng = np.random.default_rng(0)
    model = make_model(rng, n=6, p=3, q=2, kappa=0.7)
    U, W = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    check_every_entry(model, U, W)


def test_every_entry_matches_finite_differences_relu_away_from_kinks():
    rng = np.random.default_rng(1)
    model = make_model(rng, n=6, p=3, q=2, kappa=0.7, activation="relu")
    U, W = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    X, _ = solve_equilibrium(model, U, tol=1e-14)
    Z = X @ model.A.T + U @ model.B.T + model.b_x
    assert np.abs(Z).min() > 1e-3  # perturbations of 1e-6 cannot cross a kink
    assert 0 < (Z > 0).mean() < 1  # both active and inactive units
    check_every_entry(model, U, W, h=1e-6)


def test_every_stored_entry_of_sparse_weights():
    rng = np.random.default_rng(2)
    model = make_model(rng, n=8, kappa=0.7, mask=rng.random((8, 8)) < 0.4, sparse=True)
    model = model.with_weights(B=sp.csr_matrix(model.B * (rng.random((8, 4)) < 0.5)))
    U, W = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    check_every_entry(model, U, W)
    _, G_out, X = loss_and_gout(model, U, W)
    grads = loss_gradients(model, U, X, G_out)
    assert sp.issparse(grads["A"]) and (grads["A"] != 0).nnz <= model.A.nnz
    np.testing.assert_array_equal(grads["A"].indices, model.A.indices)


def feed_forward_mask(n_layers=3, width=6):
    n = n_layers * width
    mask = np.zeros((n, n), dtype=bool)
    for k in range(n_layers - 1):  # layer k reads layer k + 1
        mask[k * width : (k + 1) * width, (k + 1) * width : (k + 2) * width] = True
    return mask


def block_triangular_mask(rng):
    """A 40-state cyclic block (iterative adjoint), 6 acyclic states, a 5-state cyclic block."""
    sizes = [40, 6, 5]
    bounds = np.cumsum([0] + sizes)
    n = bounds[-1]
    mask = np.zeros((n, n), dtype=bool)
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if k != 1:
            mask[a:b, a:b] = True
        mask[a:b, :a] = rng.random((b - a, a)) < 0.3
    perm = rng.permutation(n)
    return mask[np.ix_(perm, perm)]


@pytest.mark.parametrize("case", ["cyclic60", "feed_forward", "block_triangular", "sparse"])
def test_directional_derivatives_all_parameters(case):
    rng = np.random.default_rng(3)
    if case == "cyclic60":
        model = make_model(rng, n=60, kappa=0.95)
    elif case == "feed_forward":
        model = make_model(rng, n=18, kappa=2.0, mask=feed_forward_mask())
    elif case == "block_triangular":
        model = make_model(rng, n=51, kappa=0.9, mask=block_triangular_mask(rng))
    else:
        model = make_model(rng, n=60, kappa=0.95, mask=rng.random((60, 60)) < 0.1, sparse=True)
    U, W = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    _, G_out, X = loss_and_gout(model, U, W)
    grads = loss_gradients(model, U, X, G_out)
    for name in PARAMS + ["U"]:
        base = U if name == "U" else getattr(model, name)
        D = rng.standard_normal(base.nnz if sp.issparse(base) else base.shape)
        fd = fd_directional(model, U, W, name, D)
        got = float(np.sum(as_values(grads[name], base) * D))
        assert abs(fd - got) <= 1e-6 * max(abs(fd), 1e-3), (name, fd, got)


def reference_adjoint(model, U, X, G_out):
    """Direct solve of (I − diag(Φ_s) Aᵀ) v_s = Φ_s ∘ (Cᵀ g_s), sample by sample."""
    A = model.A.toarray() if sp.issparse(model.A) else model.A
    B = model.B.toarray() if sp.issparse(model.B) else model.B
    Phi = model.activation.derivative(X @ A.T + U @ B.T + model.b_x)
    rhs = G_out @ model.C
    n = A.shape[0]
    return np.stack([
        np.linalg.solve(np.eye(n) - Phi[s][:, None] * A.T, Phi[s] * rhs[s])
        for s in range(U.shape[0])
    ])


@pytest.mark.parametrize("n,kappa,activation", [(10, 0.9, "relu"), (80, 0.97, "relu"),
                                                 (80, 0.5, "tanh")])
def test_adjoint_matches_direct_solve_batched(n, kappa, activation):
    rng = np.random.default_rng(4)
    model = make_model(rng, n=n, p=6, q=4, kappa=kappa, activation=activation)
    U, G_out = rng.standard_normal((200, 6)), rng.standard_normal((200, 4))
    X, _ = solve_equilibrium(model, U, tol=1e-13)
    V = implicit_adjoint(model, U, X, G_out)
    np.testing.assert_allclose(V, reference_adjoint(model, U, X, G_out), atol=1e-9, rtol=0)
    np.testing.assert_allclose(adjoint_of_states(model, U, X, G_out @ model.C), V, atol=1e-14)


def test_zero_upstream_gradient_and_bad_shapes():
    rng = np.random.default_rng(5)
    model = make_model(rng, n=5)
    U = rng.standard_normal((3, 4))
    X, _ = solve_equilibrium(model, U)
    assert not implicit_adjoint(model, U, X, np.zeros((3, 3))).any()
    with pytest.raises(ValueError, match=r"G_out has shape \(3, 2\), expected \(3, 3\)"):
        loss_gradients(model, U, X, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="states X has shape"):
        implicit_adjoint(model, U, X[:2], np.zeros((2, 3)))


# ---- block activations and self-loops -------------------------------------------------------------
def block_model(rng, kind):
    """Models whose φ couples states: a pooled feature map, a cyclic softmax block, LSTM gates
    (via the recurrent converter), a 40-state cyclic softmax block (iterative adjoint), and
    the self-loops of Remark 2.5."""
    from implicit_cvx.activations import GateBlock, MaxPoolBlock

    if kind == "pool":
        pool = MaxPoolBlock((1, 4, 4), 2, inner="tanh")
        act = [("tanh", 3), (pool, 16), ("sigmoid", 2)]
        A = np.zeros((21, 21))
        A[3:19, :3] = rng.standard_normal((16, 3))
        A[19:, 3:7] = rng.standard_normal((2, 4))  # the pooled values are the first 4 states
        return ImplicitModel(A, rng.standard_normal((21, 4)), rng.standard_normal((3, 21)),
                             rng.standard_normal((3, 4)), rng.standard_normal(21), activation=act)
    if kind in ("softmax", "softmax40"):
        k = 5 if kind == "softmax" else 40
        A = scaled(rng.standard_normal((k + 2, k + 2)), 1.6)  # γ = 1/2: still a contraction
        A[k:, k:] = 0.0  # two tanh states read the softmax block; it reads them back
        A[k:] = scaled(A[k:], 0.6)
        return ImplicitModel(A, rng.standard_normal((k + 2, 4)), rng.standard_normal((3, k + 2)),
                             rng.standard_normal((3, 4)), rng.standard_normal(k + 2),
                             activation=[("softmax", k), ("tanh", 2)])
    if kind == "gate":
        A = np.zeros((8, 8))
        A[:4, 4:] = rng.standard_normal((4, 4))
        A[4:, 4:] = scaled(rng.standard_normal((4, 4)), 0.3)
        return ImplicitModel(A, rng.standard_normal((8, 4)), rng.standard_normal((3, 8)),
                             rng.standard_normal((3, 4)), rng.standard_normal(8),
                             activation=[(GateBlock("sigmoid", "tanh"), 4), ("tanh", 4)])
    A = np.triu(rng.standard_normal((6, 6)), 1)  # self-loops, some far outside the ball
    A[np.diag_indices(6)] = [-3.0, 0.5, -1.5, 0.9, 2.5, -0.4]
    act = [("tanh", 2), ({"name": "leaky_relu", "alpha": 0.6}, 3), ("sigmoid", 1)]
    return ImplicitModel(A, rng.standard_normal((6, 4)), rng.standard_normal((3, 6)),
                         rng.standard_normal((3, 4)), rng.standard_normal(6), activation=act)


@pytest.mark.parametrize("kind", ["pool", "softmax", "softmax40", "gate", "selfloops"])
def test_block_activation_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(6)
    model = block_model(rng, kind)
    U, W = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    _, G_out, X = loss_and_gout(model, U, W)
    grads = loss_gradients(model, U, X, G_out)
    for name in PARAMS + ["U"]:
        base = U if name == "U" else getattr(model, name)
        D = rng.standard_normal(base.shape)
        if name == "A":
            D *= base != 0  # keep the sparsity pattern (and with it the well-posedness)
        fd = fd_directional(model, U, W, name, D, h=1e-6)
        got = float(np.sum(as_values(grads[name], base) * D))
        assert abs(fd - got) <= 1e-6 * max(abs(fd), 1e-3), (name, fd, got)


@pytest.mark.parametrize("kind", ["softmax", "softmax40", "pool"])
def test_block_adjoint_matches_direct_solve(kind):
    """V = (VA + G C) J(z) against one dense solve per sample with the full Jacobian."""
    rng = np.random.default_rng(7)
    model = block_model(rng, kind)
    U, G_out = rng.standard_normal((20, 4)), rng.standard_normal((20, 3))
    X, _ = solve_equilibrium(model, U, tol=1e-14)
    J = model.activation.jacobian(X @ model.A.T + U @ model.B.T + model.b_x)
    rhs = G_out @ model.C
    n = model.n_states
    ref = np.stack([np.linalg.solve(np.eye(n) - J[s].T @ model.A.T, J[s].T @ rhs[s])
                    for s in range(20)])
    np.testing.assert_allclose(implicit_adjoint(model, U, X, G_out), ref, atol=1e-10, rtol=0)
