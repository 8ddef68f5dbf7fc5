"""The command line end to end: info, predict, and clear errors for bad input."""

import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from implicit_cvx import from_sklearn
from implicit_cvx.cli import main


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    d = load_digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((32,), max_iter=60, random_state=0).fit(d.data / 16, d.target)
    model = from_sklearn(mlp)
    model.metadata["preprocessing"] = {"kind": "scale", "offset": 0.0, "scale": 1 / 16}
    path = tmp_path_factory.mktemp("m") / "model.npz"
    model.save(path)
    return path, mlp, d


def test_info_prints_structure(digits_model, capsys):
    path, _, _ = digits_model
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "inf_norm_A" in out and "pf_eigenvalue" in out and "well-posed" in out


def test_predict_npz_and_csv_agree_with_the_mlp(digits_model, tmp_path, capsys):
    path, mlp, d = digits_model
    X, y = d.data[:50], d.target[:50]
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["predict", str(path), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["command"] == "predict" and report["samples"] == 50
    assert report["accuracy"] == pytest.approx(np.mean(mlp.predict(X / 16) == y))
    preds = np.loadtxt(tmp_path / "o" / "predictions.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_array_equal(preds, mlp.predict(X / 16))
    csv = tmp_path / "d.csv"
    header = ",".join(f"p{j}" for j in range(64)) + ",label"
    np.savetxt(csv, np.column_stack([X, y]), delimiter=",", header=header, comments="")
    assert main(["predict", str(path), "--data", str(csv), "--quiet"]) == 0
    assert f"accuracy: {report['accuracy']:.4f}" in capsys.readouterr().out


def test_errors_are_reported_not_raised(digits_model, tmp_path, capsys):
    path, _, _ = digits_model
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert main(["info", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", X=np.zeros((3, 5)))
    assert main(["predict", str(path), "--data", str(tmp_path / "wrong.npz")]) == 2
    assert "expected (m, 64)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", str(path), "--dataset", "digits", "--kind", "pgd", "--fraction", "1.5",
              "--out", str(tmp_path)])
