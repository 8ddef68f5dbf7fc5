"""Equilibrium solvers: every solver against an independent residual check and against each
other; exact feed-forward sweeps; block-triangular models; warm starts; failures and refusals."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

import implicit_cvx.equilibrium as eq
from implicit_cvx.equilibrium import (
    SOLVERS,
    EquilibriumError,
    IllPosedError,
    equilibrium_residual,
    solve_equilibrium,
)
from implicit_cvx.model import ImplicitModel

METHODS = ["picard", "anderson", "adaptive", "structured", "auto"]


def scaled(A, kappa):
    """A with every row's ℓ1 norm equal to kappa (rows of zeros stay zero)."""
    norms = np.abs(A).sum(axis=1, keepdims=True)
    return np.where(norms > 0, A * kappa / np.where(norms > 0, norms, 1.0), 0.0)


def random_model(rng, n=200, p=30, q=5, kappa=0.95, density=1.0, nonneg=False, sparse=False,
                 activation="relu"):
    A = rng.standard_normal((n, n))
    if nonneg:
        A = np.abs(A)
    if density < 1.0:
        A *= rng.random((n, n)) < density
    A = scaled(A, kappa)
    return ImplicitModel(
        sp.csr_matrix(A) if sparse else A,
        rng.standard_normal((n, p)),
        rng.standard_normal((q, n)),
        rng.standard_normal((q, p)),
        rng.standard_normal(n),
        rng.standard_normal(q),
        activation=activation,
    )


def naive_residual(model, U, X):
    """Independent check: dense numpy, no shared helper from the package."""
    A = model.A.toarray() if sp.issparse(model.A) else model.A
    B = model.B.toarray() if sp.issparse(model.B) else model.B
    return np.abs(X - model.activation.value(X @ A.T + U @ B.T + model.b_x)).max()


@pytest.mark.parametrize("sparse", [False, True])
def test_all_solvers_reach_tolerance_and_agree(sparse):
    rng = np.random.default_rng(0)
    model = random_model(rng, density=0.05 if sparse else 1.0, sparse=sparse)
    U = rng.standard_normal((1000, 30))
    solutions = {}
    for method in METHODS:
        X, info = solve_equilibrium(model, U, method, tol=1e-12)
        assert info.converged and info.residual <= 1e-11
        assert naive_residual(model, U, X) <= 1e-11
        assert equilibrium_residual(model, U, X) <= 1e-11
        assert len(info.residual_trace) >= 1 and info.seconds > 0
        solutions[method] = X
    for method in METHODS[1:]:
        np.testing.assert_allclose(solutions[method], solutions["picard"], atol=1e-9, rtol=0)
    assert np.abs(solutions["picard"]).max() > 0.1  # a non-trivial equilibrium


def mlp_model(rng, sizes=(20, 16, 12, 8, 3), perm=None):
    """A feed-forward ReLU network as an implicit model (paper §3), states x = (x_L, ..., x_1),
    optionally with its states permuted; returns the model and a plain forward function."""
    W = [rng.standard_normal((sizes[i + 1], sizes[i])) for i in range(len(sizes) - 1)]
    b = [rng.standard_normal(s) for s in sizes[1:]]
    hidden = sizes[1:-1]
    n, starts = sum(hidden), {}
    offset = 0
    for layer in range(len(hidden), 0, -1):  # x_L first
        starts[layer] = offset
        offset += hidden[layer - 1]
    A, B = np.zeros((n, n)), np.zeros((n, sizes[0]))
    bx = np.zeros(n)
    s1 = starts[1]
    B[s1 : s1 + hidden[0]] = W[0]
    for layer in range(1, len(hidden) + 1):
        s = starts[layer]
        bx[s : s + hidden[layer - 1]] = b[layer - 1]
        if layer > 1:
            t = starts[layer - 1]
            A[s : s + hidden[layer - 1], t : t + hidden[layer - 2]] = W[layer - 1]
    C = np.zeros((sizes[-1], n))
    sL = starts[len(hidden)]
    C[:, sL : sL + hidden[-1]] = W[-1]
    if perm is not None:
        A, B, C, bx = A[np.ix_(perm, perm)], B[perm], C[:, perm], bx[perm]
    model = ImplicitModel(A, B, C, np.zeros((sizes[-1], sizes[0])), bx, b[-1])

    def forward(U):
        h = U
        for Wl, bl in zip(W[:-1], b[:-1], strict=True):
            h = np.maximum(h @ Wl.T + bl, 0.0)
        return h @ W[-1].T + b[-1]

    return model, forward


@pytest.mark.parametrize("permute", [False, True])
def test_feed_forward_is_exact_in_one_sweep(permute):
    rng = np.random.default_rng(1)
    perm = rng.permutation(36) if permute else None
    model, forward = mlp_model(rng, perm=perm)
    assert np.abs(model.A).sum(axis=1).max() > 1.0  # well-posed by structure, not by the norm
    U = rng.standard_normal((300, 20))
    X, info = solve_equilibrium(model, U, "auto", tol=1e-12)
    assert info.solver == "structured" and info.iterations == 1 and info.residual == 0.0
    np.testing.assert_allclose(model.output(X, U), forward(U), atol=1e-12, rtol=0)
    assert naive_residual(model, U, X) <= 1e-12


def block_triangular_model(rng, sparse=False):
    """Cyclic block (10) → 5 acyclic states → cyclic block (15) → cyclic block (8), with strong
    couplings between blocks: ‖A‖_∞ > 1 while each diagonal block has ‖A_kk‖_∞ ≤ 0.9."""
    sizes = [10, 5, 15, 8]
    bounds = np.cumsum([0] + sizes)
    n = bounds[-1]
    A = np.zeros((n, n))
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if k != 1:
            A[a:b, a:b] = scaled(rng.standard_normal((b - a, b - a)), 0.9)
        A[a:b, :a] = 2.0 * rng.standard_normal((b - a, a)) / max(a, 1)
    perm = rng.permutation(n)
    A = A[np.ix_(perm, perm)]
    return ImplicitModel(
        sp.csr_matrix(A) if sparse else A,
        rng.standard_normal((n, 6)), rng.standard_normal((2, n)), np.zeros((2, 6)),
        rng.standard_normal(n),
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_block_triangular_with_cyclic_blocks(sparse):
    rng = np.random.default_rng(2)
    model = block_triangular_model(rng, sparse)
    assert eq.inf_norm(model.A) > 1.0
    U = rng.standard_normal((200, 6))
    X, info = solve_equilibrium(model, U, "auto", tol=1e-12)
    assert info.solver == "structured" and info.converged
    assert naive_residual(model, U, X) <= 1e-11
    Xp, _ = solve_equilibrium(model, U, "picard", tol=1e-12)
    np.testing.assert_allclose(X, Xp, atol=1e-9, rtol=0)


def test_per_block_activations():
    rng = np.random.default_rng(3)
    model = random_model(rng, n=40, p=5, q=2, kappa=0.9)
    model = model.with_weights(activation=[("tanh", 15), ("relu", 10), ("sigmoid", 15)])
    U = rng.standard_normal((50, 5))
    X1, _ = solve_equilibrium(model, U, "structured", tol=1e-12)
    X2, _ = solve_equilibrium(model, U, "anderson", tol=1e-12)
    assert naive_residual(model, U, X1) <= 1e-11
    np.testing.assert_allclose(X1, X2, atol=1e-10, rtol=0)


def test_warm_start_reduces_iterations():
    rng = np.random.default_rng(4)
    model = random_model(rng, n=50, p=10, kappa=0.9, nonneg=True)
    U = rng.standard_normal((50, 10))
    for method in ("picard", "anderson"):
        X, cold = solve_equilibrium(model, U, method, tol=1e-11)
        U2 = U + 1e-4 * rng.standard_normal(U.shape)
        X2, cold2 = solve_equilibrium(model, U2, method, tol=1e-11)
        X3, warm = solve_equilibrium(model, U2, method, tol=1e-11, X0=X)
        assert warm.iterations < cold2.iterations
        np.testing.assert_allclose(X3, X2, atol=1e-9, rtol=0)


def test_non_convergence_raises_with_trace():
    rng = np.random.default_rng(5)
    model = random_model(rng, n=50, p=5, kappa=0.95, nonneg=True)
    U = rng.standard_normal((20, 5))
    with pytest.raises(EquilibriumError, match="picard.*3 iterations.*anderson") as err:
        solve_equilibrium(model, U, "picard", tol=1e-12, max_iter=3)
    info = err.value.info
    assert not info.converged and info.iterations == 3 and len(info.residual_trace) == 3
    X, info = solve_equilibrium(model, U, "picard", tol=1e-12, max_iter=3, raise_on_failure=False)
    assert not info.converged
    assert info.residual == pytest.approx(equilibrium_residual(model, U, X), rel=1e-9)
    json.dumps(info.to_dict())


def test_ill_posed_is_refused_and_force_tries():
    n = 6
    A = -1.5 / n * np.ones((n, n))  # ‖A‖_∞ = λ_pf(|A|) = 1.5, one cyclic block
    rng = np.random.default_rng(6)
    model = ImplicitModel(A, rng.standard_normal((n, 3)), np.ones((1, n)), np.zeros((1, 3)),
                          np.abs(rng.standard_normal(n)) + 1.0)
    U = 0.1 * rng.standard_normal((10, 3))
    with pytest.raises(IllPosedError, match="force=True"):
        solve_equilibrium(model, U)
    with pytest.raises(EquilibriumError):  # Picard oscillates: the slope of the map is −1.5
        solve_equilibrium(model, U, "picard", force=True, max_iter=200)
    X, info = solve_equilibrium(model, U, "anderson", force=True, tol=1e-12)
    assert info.converged and naive_residual(model, U, X) <= 1e-11


def test_anderson_beats_picard_at_kappa_099():
    rng = np.random.default_rng(7)
    model = random_model(rng, n=100, p=10, kappa=0.99, nonneg=True)
    U = rng.standard_normal((100, 10))
    Xp, picard = solve_equilibrium(model, U, "picard", tol=1e-10)
    Xa, anderson = solve_equilibrium(model, U, "anderson", tol=1e-10)
    assert anderson.iterations * 5 < picard.iterations
    # ‖X − X*‖_∞ ≤ residual / (1 − κ) for each, so they agree within 2 · 1e-10 / 0.01.
    np.testing.assert_allclose(Xa, Xp, atol=2e-8, rtol=0)


def kink_block(rng):
    """A 3×3 cyclic block, ‖A‖_∞ ≤ 0.99, with one slow self-loop (a_00 = 0.98) whose ReLU
    iterates straddle the kink: per-sample Anderson used to cycle and diverge there."""
    A = 0.2 * rng.standard_normal((3, 3))
    A[0, 0], A[1, 1], A[2, 2] = 0.98, 0.4, 0.45
    A[0, 1:] *= 0.05
    return A * np.minimum(1.0, 0.99 / np.abs(A).sum(axis=1, keepdims=True))


def kink_model(rng, m):
    """State 0 feeds a `kink_block` (the SIM bug report: "auto" picks "structured", which ran
    Anderson on the block and never converged); returns the model and inputs U (m, 3)."""
    A = np.zeros((4, 4))
    A[1:, 1:] = kink_block(rng)
    A[1:, 0] = 0.05 * rng.standard_normal(3)
    A[1:] *= np.minimum(1.0, 0.99 / np.abs(A[1:]).sum(axis=1, keepdims=True))
    B = np.zeros((4, 3))
    B[0] = rng.standard_normal(3)
    B[1:] = 0.3 * rng.standard_normal((3, 3))
    model = ImplicitModel(A, B, np.zeros((1, 4)), np.zeros((1, 3)), 0.3 * rng.standard_normal(4))
    return model, rng.standard_normal((m, 3))


def test_auto_converges_where_anderson_stalled_on_a_block(monkeypatch):
    """The SIM bug: "auto" → "structured" → Anderson on the cyclic block cycled and diverged;
    "auto" converges, and Anderson on that block converges only thanks to its stall fallback
    (disabling the fallback brings the bug back)."""
    model, U = kink_model(np.random.default_rng(32), 50)
    structure, plan = eq.sweep_plan(model.A, model.activation)
    assert [step.cyclic for step in plan] == [False, True]
    assert eq.choose_method(model.A, structure) == "structured"
    X, info = solve_equilibrium(model, U, "auto", tol=1e-10)
    assert info.solver == "structured" and info.converged
    assert naive_residual(model, U, X) <= 1e-10
    K = U @ model.B.T + model.b_x
    Ks = K[:, 1:] + np.maximum(K[:, :1], 0.0) @ model.A[1:, :1].T  # state 0 is solved first
    block = model.A[1:, 1:]

    def g(Xb, rows):
        return np.maximum(Xb @ block.T + Ks[rows], 0.0)

    assert eq.run_kernel("anderson", g, np.zeros_like(Ks), 1e-10, 2000).converged
    monkeypatch.setattr(eq, "_PATIENCE", 10**9)
    assert not eq.run_kernel("anderson", g, np.zeros_like(Ks), 1e-10, 2000).converged


@settings(deadline=None, derandomize=True, max_examples=10)
@given(seed=st.integers(0, 2**16))
@example(seed=32)  # diverged (residual > 1e30) before the stall fallback
@example(seed=41)  # took 9× Picard's iterations on the whole model before it
def test_anderson_converges_on_contractions_no_slower_than_picard(seed):
    """‖A‖_∞ ≤ 0.99 (Picard contracts): safeguarded Anderson converges for every sample, on the
    bare block (kernel) and on the model, in at most Picard's iterations."""
    rng = np.random.default_rng(seed)
    A = kink_block(rng)
    K = 0.5 * rng.standard_normal((100, 3))

    def g(X, rows):
        return np.maximum(X @ A.T + K[rows], 0.0)

    picard = eq.run_kernel("picard", g, np.zeros_like(K), 1e-10, 20_000)
    anderson = eq.run_kernel("anderson", g, np.zeros_like(K), 1e-10, 20_000)
    assert picard.converged and anderson.converged
    assert anderson.iterations <= picard.iterations
    np.testing.assert_allclose(anderson.X, picard.X, atol=2e-8, rtol=0)
    model, U = kink_model(np.random.default_rng(seed), 100)
    Xp, picard = solve_equilibrium(model, U, "picard", tol=1e-10)
    for method in ("auto", "anderson"):
        X, info = solve_equilibrium(model, U, method, tol=1e-10)
        # "auto" sweeps the blocks (the sweep counts one); a 3-state block is too small to
        # measure (m·(nnz + n) < _TINY): the worst-case rate rule picks its kernel
        slack = 1 if method == "auto" else 0
        assert info.iterations <= picard.iterations + slack
        np.testing.assert_allclose(X, Xp, atol=2e-8, rtol=0)  # residual / (1 − κ) each


def test_anderson_chunks_match_one_batch(monkeypatch):
    rng = np.random.default_rng(8)
    model = random_model(rng, n=30, p=4, kappa=0.95, nonneg=True)
    U = rng.standard_normal((64, 4))
    X1, info1 = solve_equilibrium(model, U, "anderson", tol=1e-12)
    monkeypatch.setattr(eq, "_CHUNK_BYTES", 8 * 30 * 15 * 10)  # 10 rows per chunk
    X2, info2 = solve_equilibrium(model, U, "anderson", tol=1e-12)
    np.testing.assert_allclose(X1, X2, atol=1e-11, rtol=0)
    assert info2.converged and len(info2.residual_trace) == info2.iterations


def test_edge_sizes_and_auto_rule():
    rng = np.random.default_rng(9)
    model = random_model(rng, n=20, p=3, kappa=0.5)
    X, info = solve_equilibrium(model, np.zeros((0, 3)))
    assert X.shape == (0, 20) and info.converged
    assert eq.choose_method(model.A, eq.sweep_plan(model.A, model.activation)[0]) == "adaptive"


def test_bad_options_are_refused():
    rng = np.random.default_rng(10)
    model = random_model(rng, n=10, p=3, kappa=0.5)
    U = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="unknown equilibrium method 'newton'"):
        solve_equilibrium(model, U, "newton")
    with pytest.raises(ValueError, match="warm start X0 has shape"):
        solve_equilibrium(model, U, X0=np.zeros((3, 10)))
    with pytest.raises(ValueError, match="tol"):
        solve_equilibrium(model, U, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        solve_equilibrium(model, U, max_iter=0)
    with pytest.raises(ValueError, match=r"expected \(m, 3\)"):
        solve_equilibrium(model, np.zeros((4, 2)))
    assert set(SOLVERS) == {"picard", "anderson", "adaptive", "structured", "reproducible"}


@settings(deadline=None, derandomize=True, max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    cyclic=st.lists(st.booleans(), min_size=5, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_structured_matches_picard_on_random_block_structures(sizes, cyclic, seed):
    rng = np.random.default_rng(seed)
    bounds = np.cumsum([0] + sizes)
    n = int(bounds[-1])
    A = np.zeros((n, n))
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if cyclic[k]:
            A[a:b, a:b] = scaled(rng.standard_normal((b - a, b - a)), 0.8)
        A[a:b, :a] = rng.standard_normal((b - a, a)) * (rng.random((b - a, a)) < 0.5)
    perm = rng.permutation(n)
    model = ImplicitModel(A[np.ix_(perm, perm)], rng.standard_normal((n, 2)), np.ones((1, n)),
                          np.zeros((1, 2)), rng.standard_normal(n), activation="tanh")
    U = rng.standard_normal((7, 2))
    Xs, _ = solve_equilibrium(model, U, "structured", tol=1e-12)
    assert naive_residual(model, U, Xs) <= 1e-11
    # λ_pf(|A|) = max over diagonal blocks ≤ 0.8, so Picard on the whole A converges too.
    Xp, _ = solve_equilibrium(model, U, "picard", tol=1e-12)
    np.testing.assert_allclose(Xs, Xp, atol=1e-9, rtol=0)


def test_spd_solve_matches_lapack():
    rng = np.random.default_rng(11)
    H = rng.standard_normal((50, 5, 5))
    H = H @ H.transpose(0, 2, 1) + 1e-3 * np.eye(5)
    b = rng.standard_normal((50, 5))
    expected = np.linalg.solve(H, b[..., None])[..., 0]
    np.testing.assert_allclose(eq.spd_solve(H, b), expected, rtol=1e-8, atol=1e-10)
