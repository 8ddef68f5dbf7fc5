"""Well-posedness: κ-ball projection vs cvxpy, λ_pf vs numpy, rescaling vs Picard (§2.5)."""

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx import wellposed as wp
from implicit_cvx.model import ImplicitModel
from implicit_cvx.wellposed import (
    BALL_RTOL,
    check_kappa,
    inf_norm,
    pf_eigenvalue,
    project_inf_ball,
    project_l1_ball_rows,
    rescale,
    row_l1_norms,
    wellposedness_report,
)

FAST = settings(deadline=None, derandomize=True, max_examples=15)


# ---- references --------------------------------------------------------------------------------
def cvx_projection(V, radius):
    """argmin ‖X − V‖_F² s.t. Σ_j |X_ij| ≤ r_i, solved by Clarabel."""
    X = cp.Variable(V.shape)
    r = np.broadcast_to(np.asarray(radius, dtype=float), (V.shape[0],))
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - V)), [cp.sum(cp.abs(X), axis=1) <= r])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return X.value


def bisection_projection(V, radius):
    """Row-wise ℓ1 projection by bisection on the threshold θ (the paper's dual bisection)."""
    r = np.broadcast_to(np.asarray(radius, dtype=float), (V.shape[0],))
    out = V.copy()
    for i, (v, ri) in enumerate(zip(V, r, strict=True)):
        if np.abs(v).sum() <= ri:
            continue
        lo, hi = 0.0, np.abs(v).max()
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if np.maximum(np.abs(v) - mid, 0).sum() > ri else (lo, mid)
        out[i] = np.sign(v) * np.maximum(np.abs(v) - hi, 0)
    return out


def numpy_pf(M):
    return float(np.max(np.abs(np.linalg.eigvals(np.abs(np.asarray(M))))))


def bracket_pf(M, iters=20_000):
    """Collatz–Wielandt bracket lo ≤ λ_pf(|M|) ≤ hi from power iteration on I + |M| (for large,
    irreducible M where a dense eigensolver is too slow for a test)."""
    M = abs(sp.csr_matrix(M))
    w = np.ones(M.shape[0])
    for _ in range(iters):
        ratio = (M @ w) / w
        lo, hi = ratio.min(), ratio.max()
        if hi - lo <= 1e-13 * hi:
            break
        w = w + M @ w
        w /= w.max()
    return lo, hi


def picard_outputs(model, U, iters=3000):
    """Independent equilibrium reference: x ← φ(xAᵀ + uBᵀ + b_x) from 0, then Ŷ."""
    X = np.zeros((U.shape[0], model.n_states))
    for _ in range(iters):
        X = model.phi(np.asarray(model.A @ X.T).T + np.asarray(model.B @ U.T).T + model.b_x)
    return model.output(X, U)


@st.composite
def matrices(draw, max_rows=5, max_cols=8, ties=False):
    """Random rows; with ties=True, values on a coarse grid (ties, zeros, rows on the sphere)."""
    m, d = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 30.0]))
    V = rng.normal(size=(m, d)) * scale
    return np.round(V / scale * 2) / 4 if ties else V


# ---- projection --------------------------------------------------------------------------------
@FAST
@given(matrices(), st.floats(0.05, 0.99))
def test_project_inf_ball_matches_cvxpy(A, kappa):
    P = project_inf_ball(A, kappa)
    np.testing.assert_allclose(P, cvx_projection(A, kappa), atol=1e-7 * max(1.0, np.abs(A).max()))
    assert np.all(row_l1_norms(P) <= kappa * (1 + BALL_RTOL))
    np.testing.assert_array_equal(project_inf_ball(P, kappa), P)  # idempotent, bit for bit
    scaled = A * min(1.0, kappa / max(inf_norm(A), 1e-300))  # feasible, but not the projection
    assert np.linalg.norm(P - A) <= np.linalg.norm(scaled - A) + 1e-12


@FAST
@given(matrices(max_rows=4), st.data())
def test_project_l1_rows_per_row_radius_matches_cvxpy(V, data):
    choices = st.sampled_from([0.05, 0.3, 1.0, 5.0])
    r = np.array(data.draw(st.lists(choices, min_size=V.shape[0], max_size=V.shape[0])))
    P = project_l1_ball_rows(V, r)
    np.testing.assert_allclose(P, cvx_projection(V, r), atol=1e-7 * max(1.0, np.abs(V).max()))
    assert np.all(np.abs(P).sum(axis=1) <= r * (1 + BALL_RTOL))
    inside = np.abs(V).sum(axis=1) <= r
    np.testing.assert_array_equal(P[inside], V[inside])


@settings(deadline=None, derandomize=True, max_examples=40)
@given(matrices(max_rows=6, ties=True), st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]))
def test_projection_with_ties_and_boundary_rows_matches_bisection(V, radius):
    """Grid values make ties, zeros and rows exactly on the sphere (degenerate for interior-point
    solvers, whose accuracy there is only ~sqrt(tol)), so the reference is bisection on θ."""
    P = project_l1_ball_rows(V, radius)
    np.testing.assert_allclose(P, bisection_projection(V, radius), atol=1e-12)
    assert np.all(np.abs(P).sum(axis=1) <= radius * (1 + BALL_RTOL))
    np.testing.assert_array_equal(project_l1_ball_rows(P, radius), P)


def test_projection_closed_forms_ties_zero_radius_and_single_row():
    V = np.array([[1.0, 1.0, 1.0, 1.0], [3.0, -3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2, -1, 0, 0]])
    P = project_l1_ball_rows(V, [2.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(P, [[0.5] * 4, [0.5, -0.5, 0, 0], [0] * 4, [0] * 4], atol=1e-15)
    np.testing.assert_array_equal(project_l1_ball_rows(np.array([0.2, -0.3]), 0.5), [0.2, -0.3])
    np.testing.assert_allclose(project_l1_ball_rows(np.array([2.0, 0.0]), 0.5), [0.5, 0.0])


def test_projection_differs_from_scaling():
    A = np.array([[3.0, 0.1], [0.45, 0.0]])  # only the first row is outside the ball
    P = project_inf_ball(A, 0.5)
    np.testing.assert_allclose(P, [[0.5, 0.0], [0.45, 0.0]], atol=1e-15)  # θ = 2.5 on row 0
    scaled = A * 0.5 / inf_norm(A)
    assert np.linalg.norm(P - A) < np.linalg.norm(scaled - A) - 0.04


def test_projection_never_overshoots_on_large_rows():
    rng = np.random.default_rng(3)
    V = rng.lognormal(sigma=4.0, size=(200, 1000)) * rng.choice([-1, 1], size=(200, 1000))
    for kappa in (0.999999, 0.5, 1e-6):
        P = project_inf_ball(V, kappa)
        assert np.all(np.abs(P).sum(axis=1) <= kappa * (1 + BALL_RTOL))
        assert np.all(row_l1_norms(sp.csr_matrix(P)) <= kappa * (1 + BALL_RTOL))


def test_sparse_projection_equals_dense_and_keeps_pattern():
    A = sp.random(40, 30, density=0.2, random_state=5, format="csr") * 3.0
    A = A + sp.csr_matrix(([0.0], ([0], [0])), shape=A.shape)  # a stored zero stays harmless
    P = project_inf_ball(A, 0.8)
    assert sp.issparse(P)
    np.testing.assert_allclose(P.toarray(), project_inf_ball(A.toarray(), 0.8), atol=1e-15)
    assert np.all(row_l1_norms(P) <= 0.8 * (1 + BALL_RTOL))
    assert not np.any((P.toarray() != 0) & (A.toarray() == 0))
    assert inf_norm(project_inf_ball(sp.csr_matrix((3, 3)), 0.5)) == 0.0


def test_bad_inputs_are_refused_with_reasons():
    for bad in (0.0, 1.0, 1.5, -0.1, float("nan"), "x", None):
        with pytest.raises(ValueError, match="kappa"):
            check_kappa(bad)
    assert check_kappa(np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match="κ < 1"):
        project_inf_ball(np.eye(2), 1.0)
    with pytest.raises(ValueError, match="radius"):
        project_l1_ball_rows(np.eye(2), -1.0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        project_l1_ball_rows(np.eye(2), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        project_l1_ball_rows(np.array([[np.nan, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="square"):
        pf_eigenvalue(np.ones((2, 3)))


# ---- Perron–Frobenius eigenvalue ---------------------------------------------------------------
@FAST
@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.sampled_from([0.2, 0.5, 1.0]))
def test_pf_eigenvalue_matches_numpy(n, seed, density):
    rng = np.random.default_rng(seed)
    A = (rng.random((n, n)) < density) * rng.normal(size=(n, n))
    want = numpy_pf(A)
    assert pf_eigenvalue(A) == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert pf_eigenvalue(sp.csr_matrix(A)) == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert pf_eigenvalue(A) <= inf_norm(A) * (1 + 1e-12)


def test_pf_eigenvalue_is_exactly_zero_for_strictly_triangular():
    rng = np.random.default_rng(0)
    assert pf_eigenvalue(np.tril(rng.normal(size=(30, 30)) * 100, -1)) == 0.0
    chain = sp.diags(np.full(4999, 7.0), -1, format="csr")  # nilpotent, λ = 0 exactly
    assert pf_eigenvalue(chain) == 0.0
    assert pf_eigenvalue(np.zeros((0, 0))) == 0.0


def test_pf_eigenvalue_block_triangular_is_max_of_blocks():
    rng = np.random.default_rng(1)
    sizes = [4, 1, 6, 3]
    blocks = [rng.random((k, k)) * s for k, s in zip(sizes, [0.3, 0.0, 0.2, 0.5], strict=True)]
    blocks[1][0, 0] = -0.9  # a self-loop state with λ = 0.9
    n = sum(sizes)
    A = np.tril(rng.normal(size=(n, n)) * 50, -1)
    bounds = np.cumsum([0, *sizes])
    for k, blk in enumerate(blocks):
        A[bounds[k] : bounds[k + 1], bounds[k] : bounds[k + 1]] = blk
    perm = rng.permutation(n)
    A = A[np.ix_(perm, perm)]
    want = max(numpy_pf(b) for b in blocks)
    assert want == pytest.approx(0.9)
    assert pf_eigenvalue(A) == pytest.approx(want, rel=1e-12)
    assert numpy_pf(A) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_block_stats_many_components_match_numpy_per_block(seed):
    """A sparse random graph plus a planted 40-cycle (a component above _BATCH_MAX: single eig)
    and fifteen planted 3-cycles nothing else depends on (batched eig), with self-loops."""
    n = 120
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=1.5 / n, random_state=seed, format="lil")
    A[:, n - 45 :] = 0.0
    big = np.arange(40)
    cycles = np.arange(n - 45, n).reshape(15, 3)
    rows = np.concatenate([big, cycles.ravel()])
    cols = np.concatenate([np.roll(big, 1), np.roll(cycles, 1, axis=1).ravel()])
    planted = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    A = A.tocsr() + planted + sp.diags(rng.random(n) * (rng.random(n) < 0.2))
    A.data = rng.normal(size=A.nnz)
    D = A.toarray()
    structure = wp.block_structure(A)
    sizes = [c.size for c in structure.components]
    assert max(sizes) > wp._BATCH_MAX and sum(1 < k <= wp._BATCH_MAX for k in sizes) > 0
    blocks = [np.abs(D[np.ix_(c, c)]) for c in structure.components]
    want_lam = [
        numpy_pf(b) if cyc else 0.0 for b, cyc in zip(blocks, structure.cyclic, strict=True)
    ]
    want_norm = [b.sum(axis=1).max() for b in blocks]
    want_pf = numpy_pf(D)
    for M in (A, D):
        lam, norm = wp._block_stats(M, structure)
        np.testing.assert_allclose(lam, want_lam, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(norm, want_norm, rtol=1e-14)
        assert pf_eigenvalue(M) == pytest.approx(want_pf, rel=1e-10)


@pytest.mark.parametrize("periodic", [False, True])
def test_pf_eigenvalue_large_sparse_component(periodic):
    """A component above the dense threshold goes through ARPACK (on I + |A|)."""
    n = wp._DENSE_EIG_MAX + 100
    cycle = sp.csr_matrix((np.full(n, 0.7), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    if periodic:  # a scaled cyclic permutation: n eigenvalues of modulus 0.7
        assert pf_eigenvalue(cycle) == pytest.approx(0.7, rel=1e-9)
        return
    A = cycle + sp.random(n, n, density=0.01, random_state=2) * 0.3
    lo, hi = bracket_pf(A)
    assert lo * (1 - 1e-12) <= pf_eigenvalue(A) <= hi * (1 + 1e-12) and hi - lo <= 1e-12 * hi


def test_noda_certifies_nearly_periodic_large_cycle():
    """A weighted 600-cycle (period 600) with one chord: ARPACK and power iteration stall; the
    Noda polish still brackets λ_pf. Pure cycle: λ_pf = geometric mean of the weights."""
    n = wp._DENSE_EIG_MAX + 100
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.3, 1.2, n)
    cycle = sp.csr_matrix((weights, (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    assert pf_eigenvalue(cycle) == pytest.approx(np.exp(np.log(weights).mean()), rel=1e-12)
    chord = cycle + sp.csr_matrix(([0.01], ([5], [300])), shape=(n, n))
    lam, w = wp._perron(chord)
    lo, hi = wp._collatz_wielandt(chord, w)
    assert np.all(w > 0) and lo <= lam * (1 + 1e-13) and lam <= hi and hi - lo <= 1e-12 * hi
    assert lam > np.exp(np.log(weights).mean())


# ---- rescaling ---------------------------------------------------------------------------------
def make_model(A, activation="relu", seed=0, p=3, q=2, sparse=False):
    rng = np.random.default_rng(seed)
    n = A.shape[0]
    B, C = rng.normal(size=(n, p)), rng.normal(size=(q, n))
    if sparse:
        A, B, C = sp.csr_matrix(A), sp.csr_matrix(B), sp.csr_matrix(C)
    return ImplicitModel(
        A,
        B,
        C,
        rng.normal(size=(q, p)),
        rng.normal(size=n),
        rng.normal(size=q),
        activation,
        metadata={"source": {"seed": seed}},
    )


def mixed_matrix(n, lam, seed, density=1.0):
    """A sign-mixed A with uneven rows (‖A‖_∞ > 1) and λ_pf(|A|) = lam."""
    rng = np.random.default_rng(seed)
    A = (rng.random((n, n)) < density) * rng.normal(size=(n, n)) * rng.lognormal(size=(n, 1))
    A[np.arange(n), (np.arange(n) + 1) % n] += 0.5  # irreducible
    return A * lam / bracket_pf(A)[1]


@pytest.mark.parametrize(
    "activation, sparse", [("relu", False), ({"name": "leaky_relu", "alpha": 0.2}, True)]
)
def test_rescale_resolvent_predicts_identically_inside_ball(activation, sparse):
    A = mixed_matrix(8, 0.6, seed=1, density=0.5)
    assert inf_norm(A) > 1.0
    model = make_model(A, activation, sparse=sparse)
    new = rescale(model, 0.9)
    assert inf_norm(new.A) < 0.9 and sp.issparse(new.A) == sparse
    U = np.random.default_rng(9).normal(size=(5, 3))
    want = picard_outputs(model, U)
    np.testing.assert_allclose(picard_outputs(new, U), want, atol=1e-9)
    np.testing.assert_allclose(new.predict(U), want, atol=1e-8)  # the package's solver agrees
    assert new.metadata["source"] == {"seed": 0} and new.metadata["kappa"] == 0.9
    assert new.metadata["rescaling"]["method"] == "resolvent"
    assert "rescaling" not in model.metadata  # the original is untouched
    new.metadata["source"]["seed"] = 5
    assert model.metadata["source"]["seed"] == 0  # a deep copy


def test_rescale_feed_forward_reaches_any_kappa():
    A = np.tril(np.random.default_rng(2).normal(size=(6, 6)) * 10, -1)
    model = make_model(A)
    new = rescale(model, 0.05)
    assert inf_norm(new.A) < 0.05
    U = np.random.default_rng(3).normal(size=(4, 3))
    np.testing.assert_allclose(picard_outputs(new, U, 10), picard_outputs(model, U, 10), atol=1e-9)


@pytest.mark.parametrize("n, sparse", [(7, False), (wp._DENSE_EIG_MAX + 50, True)])
def test_rescale_pf_reaches_lambda_pf(n, sparse):
    A = mixed_matrix(n, 0.7, seed=3, density=min(1.0, 5.0 / n))
    lam = 0.7  # λ_pf(|A|) up to the 1e-13 bracket of mixed_matrix
    model = make_model(A, sparse=sparse)
    new = rescale(model, 0.9, method="pf")
    rows = row_l1_norms(new.A)
    np.testing.assert_allclose(rows, lam, rtol=1e-9)
    assert inf_norm(new.A) <= lam * (1 + 1e-9)
    U = np.random.default_rng(4).normal(size=(3, 3))
    np.testing.assert_allclose(
        picard_outputs(new, U, 400), picard_outputs(model, U, 400), atol=1e-9
    )


def test_rescale_refusals():
    A = mixed_matrix(5, 0.95, seed=5)
    with pytest.raises(ValueError, match=r"λ_pf\(\|A\|\) = 0.95 ≥ κ = 0.9"):
        rescale(make_model(A), 0.9)
    with pytest.raises(ValueError, match="positively homogeneous"):
        rescale(make_model(A * 0.5, "tanh"), 0.9)
    with pytest.raises(ValueError, match="irreducible"):
        rescale(make_model(np.tril(np.ones((4, 4)), -1)), 0.9, method="pf")
    two_blocks = np.kron(np.eye(2), np.array([[0.0, 0.5], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="2 components"):
        rescale(make_model(two_blocks), 0.9, method="pf")
    with pytest.raises(ValueError, match="'resolvent' or 'pf'"):
        rescale(make_model(A * 0.5), 0.9, method="power")
    with pytest.raises(ValueError, match="kappa"):
        rescale(make_model(A * 0.5), 1.2)


# ---- report ------------------------------------------------------------------------------------
def test_report_feed_forward_with_large_weights():
    A = np.tril(np.full((5, 5), 10.0), -1)
    r = wellposedness_report(A)
    assert (
        r["well_posed"]
        and r["triangular"]
        and r["conditions"] == ["triangular", "pf<1", "per_block"]
    )
    assert r["pf_eigenvalue"] == 0.0 and r["inf_norm"] == 40.0 and r["n_cyclic"] == 0
    assert r["largest_cyclic_block"] == 0 and "feed-forward" in r["reason"]


def test_report_contraction_pf_and_blocks():
    A = mixed_matrix(6, 0.8, seed=6)
    assert inf_norm(A) > 1.0
    r = wellposedness_report(A * 0.1 / inf_norm(A))
    assert r["conditions"] == ["inf_norm<1", "pf<1", "per_block"] and "‖A‖_∞" in r["reason"]
    r = wellposedness_report(A, kappa=0.9)
    assert r["conditions"] == ["pf<1", "per_block"] and "Perron" in r["reason"]
    assert r["n_components"] == 1 and r["largest_cyclic_block"] == 6
    assert r["kappa"] == 0.9 and not r["in_ball"] and r["pf<kappa"]
    # cyclic blocks of sizes 3 and 2 coupled by large feed-forward weights
    B = np.zeros((5, 5))
    B[:3, :3] = np.roll(np.eye(3), 1, axis=1) * 0.8
    B[3:, 3:] = [[0.0, 0.6], [0.7, 0.0]]
    B[3:, :3] = 100.0
    r = wellposedness_report(sp.csr_matrix(B))
    assert r["well_posed"] and r["n_cyclic"] == 2 and r["largest_cyclic_block"] == 3
    assert r["pf_eigenvalue"] == pytest.approx(0.8) and "inf_norm<1" not in r["conditions"]


def test_report_ill_posed_names_the_block():
    A = np.zeros((4, 4))
    A[0, 1] = 5.0
    A[2, 3] = A[3, 2] = 1.5
    r = wellposedness_report(A)
    assert not r["well_posed"] and r["conditions"] == []
    assert (
        "no sufficient condition" in r["reason"] and "2 states starting at state 2" in r["reason"]
    )
    assert "λ_pf(|A_kk|) = 1.5" in r["reason"]
