"""Block (BLIP) activations: values against direct definitions, Jacobians against finite
differences, interval rules, Lipschitz constants and componentwise majorants checked on random
pairs (hypothesis), JSON, and the maps that hold them; scalar self-loops against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.activations import (
    ActivationMap,
    GateBlock,
    MaxPoolBlock,
    SoftmaxBlock,
    get_activation,
)

POOLS = [
    MaxPoolBlock((2, 4, 4), 2, inner="relu"),
    MaxPoolBlock((1, 5, 5), 3, 2, 1),
    MaxPoolBlock((2, 3, 4), (2, 3), 1, inner="tanh"),
]
BLOCKS = [(b, b.size) for b in POOLS] + [
    (SoftmaxBlock(), 5),
    (GateBlock("sigmoid", "tanh"), 6),
    (GateBlock("sigmoid", "sigmoid"), 4),
    (GateBlock("tanh", "identity"), 4),
]
IDS = [f"{b.name}{i}" for i, (b, _) in enumerate(BLOCKS)]


def pool_reference(act: MaxPoolBlock, z: np.ndarray) -> np.ndarray:
    """Max-pooling by loops over windows, −∞ padding (torch.nn.MaxPool2d), ψ after the max."""
    C, H, W = act.shape
    (kh, kw), (sh, sw), (ph, pw) = act.kernel, act.stride, act.padding
    img = np.pad(z.reshape(C, H, W), ((0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    _, Ho, Wo = act.out_shape
    out = np.zeros((C, Ho, Wo))
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                out[c, i, j] = img[c, i * sh : i * sh + kh, j * sw : j * sw + kw].max()
    return np.concatenate([act.inner.value(out.ravel()), np.zeros(z.size - out.size)])


@pytest.mark.parametrize("act", POOLS, ids=["relu", "padded", "rect"])
def test_maxpool_matches_loops(act):
    z = np.random.default_rng(0).normal(size=(4, act.size))
    np.testing.assert_array_equal(act.value(z), np.stack([pool_reference(act, r) for r in z]))


def test_softmax_and_gate_match_definitions():
    z = np.random.default_rng(1).normal(size=(3, 6)) * 5
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(SoftmaxBlock().value(z), e / e.sum(axis=1, keepdims=True), rtol=1e-14)
    gate = GateBlock("sigmoid", "tanh")
    ref = 1 / (1 + np.exp(-z[:, :3])) * np.tanh(z[:, 3:])
    np.testing.assert_allclose(gate.value(z), np.hstack([ref, np.zeros((3, 3))]), rtol=1e-14)


@pytest.mark.parametrize("act, k", BLOCKS, ids=IDS)
def test_jacobian_matches_finite_differences_and_vjp(act, k):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, k)) * 2
    J = act.jacobian(z)
    h = 1e-6
    fd = np.stack([(act.value(z + h * e) - act.value(z - h * e)) / (2 * h) for e in np.eye(k)], -1)
    np.testing.assert_allclose(J, fd, atol=1e-7)
    w = rng.normal(size=(3, k))
    np.testing.assert_allclose(act.vjp(z, w), np.einsum("mi,mij->mj", w, J), atol=1e-14)


@pytest.mark.parametrize("act, k", BLOCKS, ids=IDS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), width=st.floats(0, 3))
def test_interval_contains_every_value_in_the_box(act, k, seed, width):
    rng = np.random.default_rng(seed)
    zl = rng.normal(size=(1, k)) * 3
    zu = zl + width * rng.random((1, k))
    lo, hi = act.interval(zl, zu)
    samples = zl + (zu - zl) * rng.random((200, k))
    samples[:2] = zl[0], zu[0]
    x = act.value(samples)
    assert np.all(x >= lo) and np.all(x <= hi)


@pytest.mark.parametrize("act, k", BLOCKS, ids=IDS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 10))
def test_lipschitz_constant_and_majorant_hold(act, k, seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(50, k)) * 3
    b = a + scale * rng.normal(size=(50, k))
    diff = np.abs(act.value(a) - act.value(b))
    if not np.isfinite(act.lipschitz):
        with pytest.raises(ValueError, match="no finite Lipschitz"):
            ActivationMap.build([(act, k)], k).majorant(np.eye(k))
        return
    assert np.all(diff.max(axis=1) <= act.lipschitz * np.abs(a - b).max(axis=1) * (1 + 1e-12) + 1e-15)
    J = ActivationMap.build([(act, k)], k).majorant(np.eye(k))
    J = J.toarray() if hasattr(J, "toarray") else J
    assert np.all(diff <= np.abs(a - b) @ J.T * (1 + 1e-12) + 1e-15)


def test_lipschitz_constants_are_tight_where_claimed():
    """γ is attained (up to sampling) so the constants are not vacuous overestimates."""
    assert SoftmaxBlock.lipschitz == 0.5 and POOLS[0].lipschitz == 1.0
    assert GateBlock("sigmoid", "tanh").lipschitz == 1.25
    assert GateBlock("sigmoid", "identity").lipschitz == np.inf
    z = np.array([[0.0, 0.0]])  # softmax of two equal entries: Jacobian row sum 2·(1/2)(1/2)
    assert np.abs(SoftmaxBlock().jacobian(z)[0]).sum(axis=1).max() == pytest.approx(0.5)


def test_map_with_blocks_roundtrips_and_refuses_partial_subsets():
    pool = POOLS[0]
    amap = ActivationMap.build([("relu", 3), (pool, pool.size), ("softmax", 4),
                                ({"name": "gate", "left": "sigmoid", "right": "tanh"}, 6)], 45)
    assert ActivationMap.from_json(amap.to_json(), 45) == amap
    assert amap.groups == ((3, 35), (35, 39), (39, 45)) and not amap.componentwise
    z = np.random.default_rng(3).normal(size=(2, 45))
    x = amap.value(z)
    np.testing.assert_array_equal(x[:, 3:35], pool.value(z[:, 3:35]))
    np.testing.assert_array_equal(amap.subset(np.arange(3, 39)).value(z[:, 3:39]), x[:, 3:39])
    with pytest.raises(ValueError, match="keep all or none"):
        amap.subset(np.arange(0, 10))
    with pytest.raises(ValueError, match="no elementwise derivative"):
        amap.derivative(z)
    with pytest.raises(ValueError, match="acts on 32 states but its block has 31"):
        ActivationMap.build([(pool, 31)], 31)
    with pytest.raises(ValueError, match="odd size"):
        ActivationMap.build("gate", 5)
    # two neighbouring softmax blocks stay two blocks (they normalise separately)
    two = ActivationMap.concat([ActivationMap.build("softmax", 2)] * 2)
    assert len(two.blocks) == 2 and np.allclose(two.value(np.zeros((1, 4))), 0.5)


@pytest.mark.parametrize("spec, fragment", [
    ({"name": "maxpool"}, "needs \\['shape'\\]"),
    ({"name": "maxpool", "shape": [1, 4, 4], "kernel": 2, "padding": 2}, "at most half"),
    ({"name": "maxpool", "shape": [1, 4, 4], "kernel": 2, "stride": 1, "padding": 1}, "windows"),
    ({"name": "gate", "left": "softmax"}, "scalar activation"),
    ({"name": "softmax", "axis": 1}, "unknown \\['axis'\\]"),
])
def test_block_specs_refused_with_reason(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        get_activation(spec)


# ---- scalar self-loops (Remark 2.5) ------------------------------------------------------------
def _pieces_solutions(name, alpha, a, c):
    """All solutions of x = φ(ax + c) for piecewise-linear φ, by trying each linear piece."""
    slope = {"relu": 0.0, "identity": 1.0}.get(name, alpha)
    sols = []
    for s, positive in ((1.0, True), (slope, False)):
        if 1 - a * s == 0:
            continue
        t = c / (1 - a * s)  # pre-activation on this piece: t = a·s·t + c
        if (t > 0) == positive or t == 0:
            sols.append(s * t)
    return sorted(set(np.round(sols, 12)))


@pytest.mark.parametrize("spec", ["relu", "identity", {"name": "leaky_relu", "alpha": 0.4}])
@settings(max_examples=80, deadline=None, derandomize=True)
@given(a=st.floats(-5, 5).filter(lambda v: abs(v - 1) > 1e-6 and abs(v - 2.5) > 1e-6))
def test_selfloop_rule_matches_brute_force_uniqueness(spec, a):
    act = get_activation(spec)
    counts = {len(_pieces_solutions(act.name, act.alpha, a, c)) for c in (-1.0, 0.5, 2.0)}
    assert bool(act.selfloop_ok(a)) == (counts == {1})
    if act.selfloop_ok(a):
        c = np.array([[-1.0, 0.5, 2.0]])
        x = act.solve_selfloop(a, c)
        np.testing.assert_allclose(x, act.value(a * x + c), atol=1e-14)


@pytest.mark.parametrize("spec, a", [("tanh", -7.0), ("tanh", 0.9), ("sigmoid", 3.9), ("sigmoid", -20.0)])
def test_smooth_selfloops_solved_to_rounding(spec, a):
    act = get_activation(spec)
    assert act.selfloop_ok(a) and not act.selfloop_ok(1.0 / act.lipschitz)
    c = np.linspace(-6, 6, 25)[None, :]
    x = act.solve_selfloop(a, c)
    np.testing.assert_allclose(x, act.value(a * x + c), atol=4e-16)
