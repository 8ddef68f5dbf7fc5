"""The "adaptive" equilibrium kernel behind method="auto": Picard while it is fast, Anderson
when it pays, per cyclic block in the structured sweep; always the same fixed point."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import implicit_cvx.equilibrium as eq
from implicit_cvx.equilibrium import solve_equilibrium
from implicit_cvx.model import ImplicitModel


def steady_clock(monkeypatch):
    """Make every step "take" 1 ms, Picard's and Anderson's alike: decisions that depend on
    measured step times become deterministic (Anderson pays iff it needs fewer steps)."""
    ticks = itertools.count()
    monkeypatch.setattr(eq, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 1e-3))
    monkeypatch.setattr(eq, "_MIN_SECONDS", 0.0)
    monkeypatch.setattr(eq, "_RACE_SHARE", np.inf)  # a race is never cut short by the clock


def naive_residual(model, U, X):
    A = model.A.toarray() if sp.issparse(model.A) else model.A
    return np.abs(X - np.maximum(X @ A.T + U @ model.B.T + model.b_x, 0)).max()


def model_with(A, rng, p=5):
    n = A.shape[0]
    return ImplicitModel(A, rng.standard_normal((n, p)) / np.sqrt(p), np.ones((1, n)),
                         np.zeros((1, p)), 0.1 * rng.standard_normal(n))


def slow_block(rng, n, kappa):
    """A ≥ 0 with every row summing to κ: Picard contracts at rate κ (the worst case)."""
    A = np.abs(rng.standard_normal((n, n)))
    return A * kappa / A.sum(axis=1, keepdims=True)


def fast_block(rng, n, rho):
    """Gaussian A with λ_pf(|A|) = ρ: Picard contracts far faster than ρ."""
    A = rng.standard_normal((n, n))
    return A * rho / np.max(np.linalg.eigvals(np.abs(A)).real)


def test_fast_contraction_keeps_picard():
    rng = np.random.default_rng(0)
    model = model_with(fast_block(rng, 60, 0.99), rng)
    U = rng.standard_normal((300, 5))
    Xp, picard = solve_equilibrium(model, U, "picard", tol=1e-10)
    X, info = solve_equilibrium(model, U, "auto", tol=1e-10)
    assert info.solver == "adaptive" and info.converged
    assert info.iterations == picard.iterations  # no Anderson step was taken
    np.testing.assert_allclose(X, Xp, atol=2e-10 / (1 - 0.99), rtol=0)


def test_slow_contraction_switches_to_anderson(monkeypatch):
    steady_clock(monkeypatch)
    rng = np.random.default_rng(1)
    model = model_with(slow_block(rng, 100, 0.99), rng)
    U = rng.standard_normal((500, 5))
    Xp, picard = solve_equilibrium(model, U, "picard", tol=1e-10)
    X, info = solve_equilibrium(model, U, "auto", tol=1e-10)
    assert info.converged and naive_residual(model, U, X) <= 1e-10
    assert info.iterations < picard.iterations / 5
    np.testing.assert_allclose(X, Xp, atol=1e-10 / (1 - 0.99) * 2, rtol=0)


def test_anderson_is_not_tried_when_it_cannot_pay(monkeypatch):
    """With a predicted Anderson step cost beyond Picard's steps to go, "adaptive" is Picard
    exactly; with a cheap one it solves the same problem in far fewer steps."""
    steady_clock(monkeypatch)
    rng = np.random.default_rng(2)
    A = slow_block(rng, 30, 0.95)
    K = rng.standard_normal((200, 30))

    def g(X, rows):
        return np.maximum(X @ A.T + K[rows], 0.0)

    picard = eq.run_kernel("picard", g, np.zeros_like(K), 1e-10, 5000)
    never = eq.run_kernel("adaptive", g, np.zeros_like(K), 1e-10, 5000, cost=1e9)
    assert never.iterations == picard.iterations
    np.testing.assert_allclose(never.X, picard.X, atol=2e-10 / (1 - 0.95), rtol=0)
    cheap = eq.run_kernel("adaptive", g, np.zeros_like(K), 1e-10, 5000, cost=1.0)
    assert cheap.converged and cheap.residual <= 1e-10
    assert cheap.iterations < picard.iterations / 3
    np.testing.assert_allclose(cheap.X, picard.X, atol=2e-9 / (1 - 0.95), rtol=0)
    assert np.abs(g(cheap.X, slice(None)) - cheap.X).max() <= 1e-10  # every row, sample too


def test_structured_chooses_per_block(monkeypatch):
    """A fast block feeding a slow one: the sweep keeps Picard on the first and runs Anderson
    on the second; together far fewer steps than Picard on the whole model."""
    steady_clock(monkeypatch)
    rng = np.random.default_rng(3)
    n = 60
    A = np.zeros((2 * n, 2 * n))
    A[:n, :n] = fast_block(rng, n, 0.9)
    A[n:, n:] = 0.98 * slow_block(rng, n, 1.0)
    A[n:, :n] = 0.01 * np.abs(rng.standard_normal((n, n))) / n
    model = model_with(A, rng)
    U = rng.standard_normal((400, 5))
    structure, plan = eq.sweep_plan(model.A, model.activation)
    assert [step.cyclic for step in plan] == [True, True]
    Xp, picard = solve_equilibrium(model, U, "picard", tol=1e-10)
    X, info = solve_equilibrium(model, U, "auto", tol=1e-10)
    assert info.solver == "structured" and info.converged
    assert naive_residual(model, U, X) <= 1e-10
    assert info.iterations < picard.iterations / 3
    np.testing.assert_allclose(X, Xp, atol=1e-10 / (1 - 0.99) * 2, rtol=0)


def test_quick_problems_are_not_raced(monkeypatch):
    """Below _MIN_SECONDS of predicted Picard time nothing is measured on the side: "adaptive"
    is Picard exactly, even with a cost model under which Anderson would pay."""
    monkeypatch.setattr(eq, "_MIN_SECONDS", np.inf)
    rng = np.random.default_rng(5)
    A = slow_block(rng, 30, 0.95)
    K = rng.standard_normal((200, 30))

    def g(X, rows):
        return np.maximum(X @ A.T + K[rows], 0.0)

    picard = eq.run_kernel("picard", g, np.zeros_like(K), 1e-10, 5000)
    cheap = eq.run_kernel("adaptive", g, np.zeros_like(K), 1e-10, 5000, cost=1.0)
    assert cheap.anderson_from is None and cheap.iterations == picard.iterations
    np.testing.assert_array_equal(cheap.X, picard.X)


@pytest.mark.parametrize("kind, n, m, kappa, switches", [
    ("slow", 100, 500, 0.99, True),  # Picard's rate is κ: Anderson from the first check
    ("slow sparse", 120, 400, 0.99, True),
    ("slow", 60, 300, 0.5, None),  # either may win: only the fixed point is checked
    ("fast", 80, 400, 0.99, False),  # Gaussian A, λ_pf(|A|) = 0.99, contracts far faster
])
def test_adaptive_converges_to_picards_fixed_point(monkeypatch, kind, n, m, kappa, switches):
    """The adaptive kernel reaches tol on every row and agrees with Picard's fixed point (for a
    1-Lipschitz φ and λ_pf(|A|) < 1, a residual ≤ tol puts X within ‖(I − |A|)⁻¹‖_∞·tol of it);
    it switches to Anderson at the first check when Picard's rate is 0.99 and stays on Picard
    when Picard contracts fast."""
    steady_clock(monkeypatch)
    rng = np.random.default_rng(6)
    if kind == "fast":
        A = fast_block(rng, n, kappa)
    else:
        A = slow_block(rng, n, kappa)
        if kind == "slow sparse":
            A = sp.csr_matrix(A * (rng.random((n, n)) < 0.1) + kappa * 1e-3 * np.eye(n))
            A = A.multiply(kappa / abs(A).sum(axis=1)).tocsr()
    K = rng.standard_normal((m, n))

    def g(X, rows):
        return np.maximum(eq.times_transpose(X, A) + K[rows], 0.0)

    tol = 1e-10
    picard = eq.run_kernel("picard", g, np.zeros_like(K), tol, 20_000)
    run = eq.run_kernel("adaptive", g, np.zeros_like(K), tol, 20_000, cost=eq.anderson_cost(A))
    assert picard.converged and run.converged and run.residual <= tol
    assert np.abs(g(run.X, slice(None)) - run.X).max() <= tol  # every row, race rows too
    dense = A.toarray() if sp.issparse(A) else A
    bound = 2 * tol * np.abs(np.linalg.inv(np.eye(n) - np.abs(dense))).sum(axis=1).max()
    np.testing.assert_allclose(run.X, picard.X, atol=bound, rtol=0)
    if switches is True:
        assert run.anderson_from == eq._TIMED + 1
        assert run.iterations < picard.iterations / 10
    elif switches is False:
        assert run.anderson_from is None and run.iterations == picard.iterations


def test_anderson_cost_model():
    """Anderson's extra work per step is O(memory·n): next to a dense product over n ≫ 1 states
    it is cheap; next to a tiny or very sparse product it dominates."""
    rng = np.random.default_rng(4)
    dense_big = eq.anderson_cost(rng.standard_normal((1000, 1000)))
    dense_small = eq.anderson_cost(rng.standard_normal((20, 20)))
    sparse_big = eq.anderson_cost(sp.random(1000, 1000, density=0.005, random_state=0,
                                            format="csr"))
    assert 1.0 < dense_big < 1.5 < sparse_big < dense_small
    assert eq.anderson_cost(np.eye(50), memory=10) > eq.anderson_cost(np.eye(50), memory=5)


def test_a_race_past_its_deadline_stops_unconverged():
    """The kernels' loop honours a deadline (races are bounded in time): past it, one
    evaluation and an unconverged run whose rows are evaluated points."""
    rng = np.random.default_rng(7)
    A = slow_block(rng, 20, 0.99)
    K = rng.standard_normal((40, 20))

    def g(X, rows):
        return np.maximum(X @ A.T + K[rows], 0.0)

    run = eq._iterate(g, np.zeros_like(K), 1e-10, 100, eq._anderson_step(5), deadline=0.0)
    assert run.iterations == 1 and not run.converged
    np.testing.assert_array_equal(run.G, g(run.X, slice(None)))


def _no_timed_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the timed (adaptive) kernel ran")

    monkeypatch.setattr(eq, "_adaptive", refuse)


@pytest.mark.parametrize("shape", ["one block", "blocks"])
def test_reproducible_never_times_and_matches_picard(monkeypatch, shape):
    """method="reproducible" chooses kernels by the worst-case rate rule only, so it runs with
    the timed kernel removed, and it reaches Picard's fixed point."""
    rng = np.random.default_rng(3)
    A = slow_block(rng, 300, 0.99)
    if shape == "blocks":  # a feed-forward layer in front of the cyclic block: the sweep runs
        A = np.block([[A, 0.01 * np.abs(rng.standard_normal((300, 40)))], [np.zeros((40, 340))]])
    model = model_with(A, rng)
    U = rng.standard_normal((400, 5))
    ref, _ = solve_equilibrium(model, U, method="picard", tol=1e-12, max_iter=20_000)
    _no_timed_kernel(monkeypatch)
    with pytest.raises(AssertionError, match="timed"):
        solve_equilibrium(model, U, method="auto", tol=1e-12)  # the test's premise
    X, info = solve_equilibrium(model, U, method="reproducible", tol=1e-12)
    X2, _ = solve_equilibrium(model, U, method="reproducible", tol=1e-12)
    assert info.converged and naive_residual(model, U, X) <= 1e-12 * 1.01
    assert np.array_equal(X, X2)
    assert np.abs(X - ref).max() <= 2e-12 / (1 - 0.99) * 1.01


def test_fits_use_the_reproducible_solver(monkeypatch):
    """Fits must repeat bit for bit (resume, cluster vs serial), so they never call the timed
    kernel: here it is removed and a fit on a large cyclic model still runs."""
    from implicit_cvx.train.adjoint import fit_adjoint

    _no_timed_kernel(monkeypatch)
    rng = np.random.default_rng(0)
    U = rng.random((600, 8))
    y = (U[:, 0] + U[:, 1] > 1).astype(int)
    result = fit_adjoint(U, y, task="classification", loss="cross_entropy", n_states=200, kappa=0.95,
                         max_outer=2, seed=0)
    assert result.model.n_states == 200
