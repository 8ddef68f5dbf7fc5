"""SDP relaxation (robust/sdp.py): our dual certificate is sound for any multipliers (sampling,
corners, PGD), and never looser than the LP of certify on the same boxes (tighter or equal)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bounds import random_model

from implicit_cvx.robust import margin_lower_bounds, pgd_attack
from implicit_cvx.robust.boxes import interval_boxes
from implicit_cvx.robust.certify import input_box
from implicit_cvx.robust.sdp import SdpRelaxation, sdp_margin_lower_bounds

DOMAIN = (0.0, 1.0)
SDP_RTOL = 1e-6  # measured: Clarabel's multipliers certify within 3.4e-7 of the LP when SDP = LP


def _seen_margins(model, U, y, eps, rng):
    """The smallest margin ŷ_y − ŷ_j found per (sample, class): uniform points, corners, PGD."""
    lo, hi = input_box(U, eps, DOMAIN)
    pts = [lo + np.round(rng.uniform(size=U.shape)) * (hi - lo) for _ in range(30)]
    pts += [rng.uniform(lo, hi) for _ in range(60)]
    pts += [pgd_attack(model, U, y, eps, steps=30, domain=DOMAIN, rng=rng, loss=kind).U_adv
            for kind in ("ce", "margin")]
    seen = np.full((len(y), model.n_outputs), np.inf)
    rows = np.arange(len(y))
    for V in pts:
        Y = model.predict(V, tol=1e-13)
        seen = np.minimum(seen, Y[rows, y][:, None] - Y)
    seen[rows, y] = np.inf
    return seen


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), eps=st.sampled_from([0.02, 0.1, 0.4]))
def test_sdp_is_sound_and_at_least_as_tight_as_lp(seed, n, eps):
    model = random_model(seed, n, 3, 3)
    rng = np.random.default_rng(seed)
    U = rng.uniform(0, 1, (3, 3))
    y = model.predict(U).argmax(axis=1)
    sdp = sdp_margin_lower_bounds(model, U, y, eps, DOMAIN, solver="CLARABEL")
    lp = margin_lower_bounds(model, U, y, eps, "lp", DOMAIN)
    finite = np.isfinite(lp)
    # tighter or equal, up to the accuracy of Clarabel's multipliers on degenerate instances
    slack = SDP_RTOL * np.maximum(1, np.abs(lp[finite]))
    assert np.all(sdp.certificate[finite] >= lp[finite] - slack)
    assert np.all(sdp.lower[finite] >= lp[finite] - slack)
    seen = _seen_margins(model, U, y, eps, rng)  # computed in float64: rounding ~1e-13
    assert np.all(seen >= sdp.lower - 1e-9) and np.all(seen >= lp - 1e-9)


def test_sdp_is_strictly_tighter_than_lp_somewhere():
    """On unstable ReLUs the quadratic constraints cut the LP's triangle."""
    gains = []
    for seed in range(4):
        model = random_model(seed, 5, 3, 3)
        U = np.random.default_rng(seed).uniform(0.1, 0.9, (3, 3))
        y = model.predict(U).argmax(axis=1)
        sdp = sdp_margin_lower_bounds(model, U, y, 0.3, DOMAIN, solver="CLARABEL").certificate
        lp = margin_lower_bounds(model, U, y, 0.3, "lp", DOMAIN)
        gains.append(np.max((sdp - lp)[np.isfinite(lp)]))
    assert max(gains) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_certificate_is_sound_for_arbitrary_multipliers(seed):
    """Weak duality does not depend on the solver: random multipliers give a (loose) valid bound."""
    model = random_model(seed, 4, 2, 2)
    rng = np.random.default_rng(seed)
    U = rng.uniform(0.2, 0.8, (1, 2))
    y = model.predict(U).argmax(axis=1)
    relax = SdpRelaxation(model, "CLARABEL")
    relax.set_sample(interval_boxes(model, U, 0.2, DOMAIN), 0)
    c, j = y[0], 1 - y[0]
    g = np.r_[model.b_y[c] - model.b_y[j], model.C[c] - model.C[j], model.D[c] - model.D[j]]
    seen = _seen_margins(model, U, y, 0.2, rng)[0, j]
    relax.lower_bound(g)  # sizes of the multiplier vectors
    sizes = {k: np.size(con.dual_value) for k, con in relax.groups.items()}
    for _ in range(5):
        duals = {k: rng.normal(0.0, 0.5, size) for k, size in sizes.items()}  # any sign: clipped inside
        assert relax.certificate(g, duals) <= seen


def test_scs_path_is_sound():
    model = random_model(7, 6, 4, 3)
    rng = np.random.default_rng(7)
    U = rng.uniform(0, 1, (2, 4))
    y = model.predict(U).argmax(axis=1)
    sdp = sdp_margin_lower_bounds(model, U, y, 0.1, DOMAIN, solver="SCS")
    off = np.ones(sdp.lower.shape, dtype=bool)
    off[np.arange(len(y)), y] = False
    assert sdp.solver == "SCS" and np.all(np.isfinite(sdp.certificate[off]))
    assert np.all(_seen_margins(model, U, y, 0.1, rng) >= sdp.lower - 1e-9)


def test_non_relu_and_bad_solver_are_refused():
    with pytest.raises(ValueError, match="ReLU models"):
        SdpRelaxation(random_model(0, 3, 2, 2, activation="tanh"))
    with pytest.raises(ValueError, match="SDP solver"):
        SdpRelaxation(random_model(0, 3, 2, 2), solver="MOSEK")


def test_certificate_never_exceeds_the_relaxation_optimum():
    """Weak duality on the relaxation itself: whatever multipliers come in (here the solver's,
    pushed negative on the inequalities — which must be clipped), the bound stays ≤ the SDP value."""
    model = random_model(2, 4, 3, 3)
    U = np.random.default_rng(2).uniform(0.2, 0.8, (1, 3))
    y = model.predict(U).argmax(axis=1)
    relax = SdpRelaxation(model, "CLARABEL")
    relax.set_sample(interval_boxes(model, U, 0.3, DOMAIN), 0)
    c = y[0]
    for j in {0, 1, 2} - {c}:
        g = np.r_[model.b_y[c] - model.b_y[j], model.C[c] - model.C[j], model.D[c] - model.D[j]]
        bound = relax.lower_bound(g)
        value = relax.problem.value
        assert bound <= value + 1e-6 and bound >= value - 1e-5
        duals = {k: np.atleast_1d(np.asarray(con.dual_value, dtype=float)) for k, con in relax.groups.items()}
        for k in duals:
            if k not in ("comp", "one"):
                pushed = {**duals, k: duals[k] - 3.0}
                assert relax.certificate(g, pushed) <= value + 1e-6, k
