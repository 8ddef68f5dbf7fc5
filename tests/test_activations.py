"""CONE activations: non-expansive, derivatives match finite differences, bad choices refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.activations import NAMES, ActivationMap, get_activation

SPECS = ["relu", "tanh", "sigmoid", "identity", {"name": "leaky_relu", "alpha": 0.1}]
reals = st.floats(-50, 50, allow_nan=False)


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=reals, b=reals)
def test_componentwise_non_expansive(spec, a, b):
    act = get_activation(spec)
    fa, fb = act.value(np.array([a])), act.value(np.array([b]))
    assert abs(fa[0] - fb[0]) <= abs(a - b) * (1 + 1e-12) + 1e-300


@pytest.mark.parametrize("spec", SPECS)
def test_derivative_matches_central_differences_away_from_kinks(spec):
    act = get_activation(spec)
    z = np.linspace(-4, 4, 81) + 0.0137  # no point at the kink z = 0
    h = 1e-6
    fd = (act.value(z + h) - act.value(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z), fd, atol=1e-8)


def test_values_match_closed_forms():
    z = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(get_activation("relu").value(z), np.maximum(z, 0))
    np.testing.assert_allclose(get_activation("sigmoid").value(z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(get_activation({"name": "leaky_relu", "alpha": 0.2}).value(z),
                               np.where(z > 0, z, 0.2 * z))
    assert get_activation("sigmoid").value(np.array([-800.0]))[0] == 0.0  # no overflow warning


def test_positive_homogeneity_flags():
    assert get_activation("relu").positively_homogeneous
    assert get_activation("identity").positively_homogeneous
    assert not get_activation("tanh").positively_homogeneous
    assert not ActivationMap.build([("relu", 2), ("tanh", 1)], 3).positively_homogeneous


@pytest.mark.parametrize(
    "spec, fragment",
    [("gelu", "not componentwise non-expansive"), ("swish", "slope reaches"),
     ("hardswish", "unknown activation"), ({"name": "leaky_relu", "alpha": 1.5}, "alpha in [0, 1]"),
     ({"name": "relu", "beta": 1}, "needs 'name'"), (np.tanh, "custom callables are refused")],
)
def test_refusals_name_the_reason(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        get_activation(spec)


def test_per_block_map_applies_each_block_and_roundtrips():
    amap = ActivationMap.build([("relu", 2), ({"name": "leaky_relu", "alpha": 0.5}, 1), ("tanh", 2)], 5)
    Z = np.array([[-1.0, 2.0, -2.0, 0.3, -0.3]])
    np.testing.assert_allclose(amap.value(Z), [[0.0, 2.0, -1.0, np.tanh(0.3), np.tanh(-0.3)]])
    np.testing.assert_allclose(amap.derivative(Z)[0, :3], [0.0, 1.0, 0.5])
    assert ActivationMap.from_json(amap.to_json(), 5) == amap
    sub = amap.subset(np.array([1, 3, 4]))
    np.testing.assert_allclose(sub.value(Z[:, [1, 3, 4]]), amap.value(Z)[:, [1, 3, 4]])
    with pytest.raises(ValueError, match="cover 4 states but the model has 5"):
        ActivationMap.build([("relu", 4)], 5)
    assert set(NAMES) == {"relu", "leaky_relu", "tanh", "sigmoid", "identity"}
