"""Built-in data sets: fixed seeded splits, stored preprocessing, user files with clear errors."""

import numpy as np
import pytest

from implicit_cvx.data import load_dataset, preprocess


def test_digits_split_is_fixed_and_scaled_to_unit_pixels():
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.test_index, b.test_index)
    U, y = a.split("train")
    assert U.min() >= 0 and U.max() <= 1 and a.domain == (0.0, 1.0)
    assert len(np.intersect1d(a.train_index, a.test_index)) == 0
    assert len(a.train_index) + len(a.test_index) == len(a.y)
    assert set(np.unique(y)) == set(range(10))
    assert not np.array_equal(load_dataset("digits", seed=4).test_index, a.test_index)


def test_preprocessing_roundtrip_matches_split():
    ds = load_dataset("wine", seed=0)
    U, _ = ds.split("train")
    np.testing.assert_allclose(preprocess(ds.preprocessing, ds.X[ds.train_index]), U)
    np.testing.assert_allclose(U.mean(axis=0), 0, atol=1e-12)


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
