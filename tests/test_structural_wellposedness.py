"""Well-posedness by structure and by blockwise Lipschitz constants: each condition against a
model it must accept and one it must refuse; the structured solver's closed-form self-loops
against back-substitution by hand; the Remark 2.5 example end to end."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.activations import ActivationMap, MaxPoolBlock, SoftmaxBlock
from implicit_cvx.equilibrium import IllPosedError, equilibrium_residual, solve_equilibrium
from implicit_cvx.model import ImplicitModel
from implicit_cvx.robust.bounds import sensitivity_matrix
from implicit_cvx.robust.certify import certify
from implicit_cvx.structure import block_structure
from implicit_cvx.wellposed import blip_eigenvalue, blip_matrix, wellposedness_report

REMARK_A = np.array([[-2.0, 0.5], [0.0, 0.3]])


def model_of(A, activation="relu", p=2, q=2, seed=0):
    rng = np.random.default_rng(seed)
    n = A.shape[0]
    return ImplicitModel(A, rng.normal(size=(n, p)), rng.normal(size=(q, n)), np.zeros((q, p)),
                         rng.normal(size=n), activation=activation)


# ---- Remark 2.5 --------------------------------------------------------------------------------
def test_remark_2_5_example_accepted_solved_exactly_and_checked():
    r = wellposedness_report(REMARK_A, activation="relu")
    assert r["well_posed"] and r["conditions"] == ["per_block"] and r["self_loops"] == 2
    assert r["inf_norm"] == 2.5 and r["pf_eigenvalue"] == 2.0 and "Remark 2.5" in r["reason"]
    assert not wellposedness_report(REMARK_A)["well_posed"]  # unknown φ: no CONE condition holds
    model = model_of(REMARK_A)
    U = np.random.default_rng(1).normal(size=(200, 2)) * 3
    X, info = solve_equilibrium(model, U, "structured")
    # back-substitution by hand: x_1 = (c_1)₊ / (1 − 0.3), then x_0 = (c_0 + 0.5 x_1)₊ / (1 + 2)
    K = U @ model.B.T + model.b_x
    x1 = np.maximum(K[:, 1], 0) / 0.7
    x0 = np.maximum(K[:, 0] + 0.5 * x1, 0) / 3.0
    np.testing.assert_allclose(X, np.c_[x0, x1], rtol=1e-15, atol=1e-15)
    assert info.converged and info.iterations == 1
    assert equilibrium_residual(model, U, X) <= 1e-15
    assert solve_equilibrium(model, U, "auto")[1].solver == "structured"


@pytest.mark.parametrize("diag, activation, ok", [
    (1.5, "relu", False), (1.0, "relu", False), (0.99, "relu", True), (-50.0, "relu", True),
    (1.5, "identity", True), (1.0, "identity", False),
    (3.0, {"name": "leaky_relu", "alpha": 0.5}, True),  # slopes 1 − 3 and 1 − 1.5: both < 0
    (1.5, {"name": "leaky_relu", "alpha": 0.5}, False),  # slopes −0.5 and 0.25: not monotone
    (3.9, "sigmoid", True), (4.0, "sigmoid", False), (-9.0, "tanh", True),
])
def test_selfloop_condition_accepts_and_refuses(diag, activation, ok):
    A = np.array([[0.0, 0.5], [0.0, diag]])
    r = wellposedness_report(A, activation=activation)
    assert r["well_posed"] == ok and r["pf_eigenvalue"] == abs(diag)
    model = model_of(A, activation)
    U = np.random.default_rng(2).normal(size=(50, 2)) * 4
    if not ok:
        assert "self-loop" in r["reason"]
        with pytest.raises(IllPosedError, match="not known to be well-posed"):
            solve_equilibrium(model, U)
        return
    X, info = solve_equilibrium(model, U, "structured")
    assert info.converged and equilibrium_residual(model, U, X) <= 1e-13


def test_forced_ill_posed_selfloop_is_reported_not_converged():
    model = model_of(np.array([[1.5]]), p=1, q=1)
    U = np.array([[3.0], [-3.0]])  # c > 0 has no solution under ReLU when a = 1.5
    X, info = solve_equilibrium(model, U + 10, "structured", force=True, raise_on_failure=False)
    assert not info.converged and info.residual > 1e-3


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), upper=st.booleans())
def test_triangular_with_diagonal_matches_back_substitution(seed, n, upper):
    """Triangular A with any diagonal < 1 under ReLU: one sweep equals back-substitution."""
    rng = np.random.default_rng(seed)
    A = np.triu(rng.normal(size=(n, n)) * 3, 1)
    A[np.diag_indices(n)] = rng.uniform(-5, 0.95, n) * (rng.random(n) < 0.8)
    A = A if upper else A.T
    model = model_of(A, p=3, seed=seed)
    U = rng.normal(size=(20, 3)) * 2
    assert wellposedness_report(A, activation="relu")["well_posed"]
    X, _ = solve_equilibrium(model, U, "structured")
    K = U @ model.B.T + model.b_x
    ref = np.zeros_like(X)
    for i in (range(n - 1, -1, -1) if upper else range(n)):
        c = K[:, i] + ref @ A[i] - ref[:, i] * A[i, i]
        ref[:, i] = np.maximum(c, 0) / (1 - A[i, i])
    np.testing.assert_allclose(X, ref, rtol=1e-12, atol=1e-12)


# ---- BLIP (Thm 2.7) ----------------------------------------------------------------------------
def softmax_cycle(scale: float, k: int = 4):
    """k states under one softmax block reading themselves with ‖A‖_∞ = scale."""
    A = np.random.default_rng(5).normal(size=(k, k))
    return A * scale / np.abs(A).sum(axis=1, keepdims=True)


def test_blip_condition_accepts_and_refuses():
    # softmax has γ = 1/2, so ‖A‖_∞ = 1.8 still contracts: λ_pf(N) = 0.9
    ok = wellposedness_report(softmax_cycle(1.8), activation="softmax")
    assert ok["well_posed"] and ok["blip_eigenvalue"] == pytest.approx(0.9)
    assert ok["conditions"] == ["blip<1", "per_block"]  # ‖A‖ and λ_pf(|A|) do not count here
    bad = wellposedness_report(softmax_cycle(2.2), activation="softmax")
    assert not bad["well_posed"] and "λ_pf(N_kk) = 1.1" in bad["reason"]
    model = model_of(softmax_cycle(1.8), "softmax", p=3, q=4)
    U = np.random.default_rng(6).normal(size=(30, 3))
    for method in ("picard", "structured", "anderson"):
        X, info = solve_equilibrium(model, U, method, tol=1e-13)
        assert info.converged and equilibrium_residual(model, U, X) <= 1e-13
    with pytest.raises(IllPosedError):
        solve_equilibrium(model_of(softmax_cycle(2.2), "softmax", p=3, q=4), U)


def test_sigmoid_lipschitz_quarter_extends_pf_condition():
    A = np.random.default_rng(7).normal(size=(5, 5))
    A *= 3.0 / np.abs(A).sum(axis=1, keepdims=True)  # ‖A‖_∞ = 3, λ_pf(|A|) ≈ 3
    r = wellposedness_report(A, activation="sigmoid")
    assert r["well_posed"] and "blip<1" in r["conditions"] and "pf<1" not in r["conditions"]
    assert r["blip_eigenvalue"] == pytest.approx(r["pf_eigenvalue"] / 4)
    assert not wellposedness_report(A, activation="tanh")["well_posed"]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_blip_matrix_matches_its_definition(seed):
    """N_lk = γ_l max_{i∈l} Σ_{j∈k} |A_ij| against a loop over node pairs, dense and sparse."""
    rng = np.random.default_rng(seed)
    pool = MaxPoolBlock((1, 2, 2), 2)
    amap = ActivationMap.build([("sigmoid", 2), (pool, 4), ("tanh", 1), ("softmax", 3)], 10)
    A = rng.normal(size=(10, 10)) * (rng.random((10, 10)) < 0.5)
    nodes = [[0], [1], [2, 3, 4, 5], [6], [7, 8, 9]]
    gamma = [0.25, 0.25, 1.0, 1.0, 0.5]
    ref = np.array([[g * max(np.abs(A[i][cols]).sum() for i in rows) for cols in nodes]
                    for rows, g in zip(nodes, gamma, strict=True)])
    for M in (A, sp.csr_matrix(A)):
        N, node = blip_matrix(M, amap)
        np.testing.assert_allclose(N.toarray(), ref, rtol=1e-15)
    assert node.tolist() == [0, 1, 2, 2, 2, 2, 3, 4, 4, 4]
    lam = np.abs(np.linalg.eigvals(ref)).max()
    assert blip_eigenvalue(A, amap) == pytest.approx(lam, rel=1e-9, abs=1e-12)


def test_groups_keep_block_states_in_one_component():
    A = np.zeros((6, 6))
    A[2, 0] = A[3, 1] = 1.0  # states 2, 3 read 0, 1; states 4, 5 read 2
    A[4, 2] = A[5, 2] = 1.0
    plain = block_structure(A)
    grouped = block_structure(A, groups=[(2, 4)])
    assert plain.n_components == 6 and grouped.n_components == 5
    assert [c.tolist() for c in grouped.components if c.size > 1] == [[2, 3]]
    assert grouped.is_triangular  # a group without internal edges is not a cycle
    A[2, 3] = 0.5  # now the block reads itself
    assert not block_structure(A, groups=[(2, 4)]).is_triangular


# ---- the robustness bounds refuse structure-only models ---------------------------------------
def test_robustness_bounds_refuse_the_remark_example():
    model = model_of(REMARK_A)
    with pytest.raises(ValueError, match="λ_pf\\(\\|A\\|\\) < 1"):
        sensitivity_matrix(model)
    with pytest.raises(ValueError, match="λ_pf\\(\\|A\\|\\) < 1"):
        U = np.random.default_rng(3).normal(size=(5, 2)) * 3
        certify(model, U, model.predict(U).argmax(axis=1), [0.1])


def test_describe_uses_the_activation():
    assert model_of(REMARK_A).describe()["well_posed"]
    assert not model_of(np.array([[1.5]]), p=1, q=1).describe()["well_posed"]


def test_rescale_refuses_block_activations():
    from implicit_cvx.wellposed import rescale

    A = softmax_cycle(0.5)
    with pytest.raises(ValueError, match="block activation"):
        rescale(model_of(A, ActivationMap.build([(SoftmaxBlock(), 4)], 4), p=2), 0.9)
