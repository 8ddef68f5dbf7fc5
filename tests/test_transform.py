"""InputTransform: algebra (compose, inverse), exact folding into a model's weights and back,
scikit-learn scalers, stored records, and clear errors."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, StandardScaler

from implicit_cvx.model import ImplicitModel
from implicit_cvx.transform import (
    InputTransform,
    bounds_arrays,
    check_input_record,
    fold_outputs,
)

N, P, Q = 6, 4, 3
EQ = dict(tol=1e-11)  # both sides solved to the same tight (absolute) tolerance


def _model(seed=0, sparse=False, kappa=0.6):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N))
    A *= kappa / np.abs(A).sum(axis=1).max()
    B, C, D = rng.normal(size=(N, P)), rng.normal(size=(Q, N)), rng.normal(size=(Q, P))
    if sparse:
        B, D = sp.csr_matrix(B * (rng.random(B.shape) < 0.5)), sp.csr_matrix(D)
    return ImplicitModel(A, B, C, D, rng.normal(size=N), rng.normal(size=Q),
                         metadata={"kappa": kappa})


def _transform(seed, scalar=False):
    rng = np.random.default_rng(seed)
    if scalar:
        return InputTransform(rng.normal() * 10, rng.uniform(0.01, 3.0), ("scalar",))
    sign = rng.choice([-1.0, 1.0], P)
    return InputTransform(rng.normal(size=P) * 100, sign * rng.uniform(1e-3, 10.0, P), ("features",))


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sparse=st.booleans(), scalar=st.booleans())
def test_fold_is_exact_on_raw_inputs(seed, sparse, scalar):
    model, T = _model(seed, sparse), _transform(seed + 1, scalar)
    X_raw = np.random.default_rng(seed + 2).normal(size=(7, P)) * 50 + 20
    folded = T.fold(model)
    assert _rel(folded.predict(X_raw, **EQ), model.predict(T.apply(X_raw), **EQ)) <= 1e-12
    assert sp.issparse(folded.B) == sp.issparse(model.B)
    np.testing.assert_array_equal(folded.A, model.A)  # A (and so the ball) is untouched
    back = T.unfold(folded)
    for name in ("B", "D", "b_x", "b_y"):
        got, want, mid = (getattr(m, name) for m in (back, model, folded))
        got, want, mid = (M.toarray() if sp.issparse(M) else M for M in (got, want, mid))
        # biases pass through b − Bsμ, which may be far larger than b: rounding is relative to it
        scale = max(np.abs(want).max(), np.abs(mid).max()) if name.startswith("b_") else None
        assert _rel(got, want) <= 1e-12 if scale is None else np.abs(got - want).max() <= 1e-12 * scale, name
    assert "input" not in back.metadata


def test_fold_records_transform_domain_and_range():
    T = InputTransform(0.0, 1 / 16, ("pixels / 16",))
    folded = T.fold(_model(), domain=(0.0, 16.0), train_range=(np.zeros(P), [1.0, 2.0, None, 4.0]))
    record = folded.metadata["input"]
    assert record["transform"] == {"offset": 0.0, "scale": 0.0625, "steps": ["pixels / 16"]}
    assert record["domain"] == {"low": [0.0] * P, "high": [16.0] * P}
    assert record["train_range"]["high"] == [1.0, 2.0, None, 4.0]
    assert folded.metadata["preprocessing"] == {"kind": "none"}
    low, high = bounds_arrays(record["train_range"])
    assert high[2] == np.inf and low[0] == 0.0
    assert check_input_record(record, P) is record
    # folding again composes: the record holds raw → fitting units
    T2 = InputTransform(5.0, 2.0, ("outer",))
    twice = T2.fold(folded)
    composed = InputTransform.from_json(twice.metadata["input"]["transform"])
    X = np.random.default_rng(0).normal(size=(3, P))
    np.testing.assert_allclose(composed.apply(X), T.apply(T2.apply(X)), rtol=1e-14)
    assert composed.steps == ("outer", "pixels / 16")


def test_algebra_compose_inverse_invert():
    T1, T2 = _transform(1), _transform(2)
    X = np.random.default_rng(3).normal(size=(5, P)) * 30
    np.testing.assert_allclose(T1.then(T2).apply(X), T2.apply(T1.apply(X)), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(T1.inverse().apply(T1.apply(X)), X, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(T1.invert(T1.apply(X)), X, rtol=1e-12, atol=1e-10)
    assert InputTransform.identity().is_identity and not T1.is_identity
    assert InputTransform.identity().then(T1).apply(X).tolist() == T1.apply(X).tolist()
    again = InputTransform.from_json(T1.to_json())
    assert again.to_json() == T1.to_json()


def test_standardizer_and_legacy_specs():
    X = np.random.default_rng(0).normal(size=(50, P)) * 3 + 7
    X[:, 2] = 4.0  # a constant feature keeps std 1
    U = InputTransform.standardizer(X).apply(X)
    np.testing.assert_allclose(U.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(U.std(axis=0), [1, 1, 0, 1], atol=1e-12)
    spec = {"kind": "scale", "offset": 0.0, "scale": 1 / 255}
    np.testing.assert_array_equal(InputTransform.from_spec(spec).apply(X), X * (1 / 255))
    assert InputTransform.from_spec({"kind": "none"}).is_identity
    assert InputTransform.from_spec(None).is_identity


@pytest.mark.parametrize("scaler", [
    StandardScaler(), StandardScaler(with_mean=False), StandardScaler(with_std=False),
    MinMaxScaler(), MinMaxScaler(feature_range=(-1.0, 2.0)), MaxAbsScaler(),
], ids=lambda s: repr(s))
def test_sklearn_scalers_match_their_transform(scaler):
    X = np.random.default_rng(1).normal(size=(40, P)) * [1.0, 10.0, 100.0, 0.01] - 3
    X[:, 1] = 2.5  # a constant feature (zero range / zero variance)
    scaler.fit(X)
    T = InputTransform.from_sklearn(scaler)
    X_new = np.random.default_rng(2).normal(size=(9, P)) * 5
    np.testing.assert_allclose(T.apply(X_new), scaler.transform(X_new), rtol=1e-12, atol=1e-12)
    assert T.steps == (f"sklearn.preprocessing.{type(scaler).__name__}",)


def test_fold_outputs_is_exact():
    model = _model(3)
    offset, scale = np.array([1.0, -200.0, 3.5]), np.array([77.0, 0.5, -2.0])
    out = fold_outputs(model, offset, scale)
    X = np.random.default_rng(0).normal(size=(6, P))
    assert _rel(out.predict(X, **EQ), model.predict(X, **EQ) * scale + offset) <= 1e-14
    np.testing.assert_array_equal(out.A, model.A)
    np.testing.assert_array_equal(out.B, model.B)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: InputTransform([0.0, 1.0], [1.0, 0.0]), "zero entry"),
    (lambda: InputTransform([0.0, 1.0], [1.0, 2.0, 3.0]), "offset has 2 entries but scale has 3"),
    (lambda: InputTransform(np.nan, 1.0), "finite"),
    (lambda: InputTransform(0.0, 1j), "real"),
    (lambda: InputTransform([[0.0]], 1.0), "1-D"),
    (lambda: InputTransform.from_spec({"kind": "log"}), "unknown preprocessing kind 'log'"),
    (lambda: InputTransform.from_spec({"kind": "scale", "scale": 2.0}), r"lacks \['offset'\]"),
    (lambda: InputTransform.from_json({"offset": 0.0}), "needs 'offset' and 'scale'"),
    (lambda: InputTransform.from_sklearn(Normalizer().fit(np.ones((3, P))), "norm"),
     r"step 'norm' \(Normalizer\) is not an affine scaler"),
    (lambda: InputTransform.from_sklearn(StandardScaler()), "not fitted"),
    (lambda: InputTransform.from_sklearn(MinMaxScaler(clip=True).fit(np.eye(P))), "clip=True"),
    (lambda: InputTransform(np.zeros(P + 1), 1.0).fold(_model()),
     f"offset has {P + 1} entries but the model takes {P} inputs"),
    (lambda: InputTransform(0.0, 1.0).fold(_model(), domain=(1.0, 0.0)), "low ≤ high"),
    (lambda: InputTransform(0.0, 1.0).fold(_model(), domain=(0.0,)), "pair"),
    (lambda: check_input_record({"domain": {"low": [0.0]}}, P), "input.domain"),
    (lambda: check_input_record({"colour": 1}, P), r"unknown key\(s\) \['colour'\]"),
])
def test_bad_transforms_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
