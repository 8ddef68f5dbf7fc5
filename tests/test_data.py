"""Built-in data sets: fixed seeded splits, the input transform and its fold, user files with clear
errors."""

import numpy as np
import pytest

from implicit_cvx.data import load_dataset, synthetic_classification
from implicit_cvx.train.init import random_model


def test_digits_split_is_fixed_and_scaled_to_unit_pixels():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.test_index, b.test_index)
    U, y = a.split("train")
    assert U.min() >= 0 and U.max() <= 1 and a.domain == (0.0, 16.0)  # domain in raw pixels
    np.testing.assert_array_equal(a.split("train", raw=True)[0], a.X[a.train_index])
    np.testing.assert_array_equal(U * 16, a.X[a.train_index])
    assert len(np.intersect1d(a.train_index, a.test_index)) == 0
    assert len(a.train_index) + len(a.test_index) == len(a.y)
    assert set(np.unique(y)) == set(range(10))
    assert not np.array_equal(load_dataset("digits", seed=4).test_index, a.test_index)


def test_transform_matches_split_and_folds_into_raw_inputs():
    ds = load_dataset("wine", seed=0)
    U, _ = ds.split("train")
    np.testing.assert_allclose(ds.transform.apply(ds.X[ds.train_index]), U)
    np.testing.assert_allclose(U.mean(axis=0), 0, atol=1e-12)
    model = random_model(6, U.shape[1], 3, kappa=0.8, seed=1)
    folded = ds.fold(model)
    X_test, _ = ds.split("test", raw=True)
    want = model.predict(ds.split("test")[0], tol=1e-13)
    assert np.max(np.abs(folded.predict(X_test, tol=1e-13) - want)) <= 1e-12 * np.max(np.abs(want))
    record = folded.metadata["input"]
    assert record["domain"] is None  # wine features: no known bounds
    np.testing.assert_array_equal(record["train_range"]["low"], ds.X[ds.train_index].min(axis=0))
    assert "standardize" in record["transform"]["steps"][0] and "standardize" in ds.units


def test_regression_7_1_has_fixed_test_set_and_noise_floor():
    a, b = load_dataset("regression_7_1", seed=0), load_dataset("regression_7_1", seed=1)
    assert len(a.train_index) == 200 and len(a.test_index) == 2000
    np.testing.assert_array_equal(a.X[a.test_index], b.X[b.test_index])
    noise = a.y - a.extra["noiseless"]
    assert np.abs(noise).max() <= 1 and abs(noise.std() - 1 / np.sqrt(3)) < 0.05


@pytest.mark.parametrize("gen", ["net", "implicit"])
def test_synthetic_classification(gen):
    ds = load_dataset(f"synthetic_{gen}", seed=0)
    assert ds.X.shape == (40, 5) and set(np.unique(ds.y)) <= {0, 1}
    uniform = synthetic_classification(gen, seed=0, inputs="uniform")
    assert uniform.X.shape == (40, 5) and np.abs(uniform.X).max() <= 1.0
    assert uniform.X.min() < -0.5 < 0.5 < uniform.X.max()  # spread over the box, not N(0, 1)
    with pytest.raises(ValueError, match="inputs must be 'normal' or 'uniform', got 'box'"):
        synthetic_classification(gen, inputs="box")


def test_user_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), rng.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.task == "classification" and ds.X.shape == (30, 3)
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "\n".join(f"{r[0]},{r[1]},{int(t)}" for r, t in zip(X, y, strict=True)))
    ds = load_dataset(str(csv))
    assert ds.X.shape == (30, 2) and ds.classes == sorted(np.unique(y).tolist())


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(FileNotFoundError):
        load_dataset(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "noX.npz", Z=np.zeros(3))
    with pytest.raises(ValueError, match="needs an array 'X'"):
        load_dataset(str(tmp_path / "noX.npz"))
    (tmp_path / "bad.csv").write_text("a,label\nx,1\n")
    with pytest.raises(ValueError, match="non-numeric"):
        load_dataset(str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="test_size"):
        load_dataset("digits", test_size=1.5)
