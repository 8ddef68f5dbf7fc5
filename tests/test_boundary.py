"""A saved model takes RAW inputs everywhere: `ImplicitModel.load(p).predict(X_raw)`, the
estimators and `robust.certify` agree with the model fitted in transformed units (to 1e-12
relative, same labels), for a CLI-style digits fit, a breast-cancer estimator and a Pipeline
conversion; a saved init model is unfolded exactly into the training units."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from implicit_cvx import ImplicitClassifier, ImplicitModel, estimators, from_sklearn
from implicit_cvx.config import validate
from implicit_cvx.data import load_dataset
from implicit_cvx.robust import certify
from implicit_cvx.train import driver
from implicit_cvx.train.fit import config_schema, run_fit
from implicit_cvx.train.init import unfold_saved_init

EQ = dict(tol=1e-13)


def _close(got, want, rtol=1e-12):
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= rtol * np.max(np.abs(want)), np.max(np.abs(got - want))


def _config(method="adjoint", dataset="digits", **model):
    cfg = {"method": method, "seed": 1, "dataset": {"name": dataset, "max_train": 200}}
    if method == "sim":  # the teacher gives the states: no n_states, no checkpoints
        cfg.update(model={"kappa": 0.9}, sim={"teacher_hidden": [8], "teacher_max_iter": 200})
    else:
        cfg.update(model={"n_states": 8, "kappa": 0.9, **model}, run={"checkpoint_every": 1},
                   **{method: {"adjoint": {"max_outer": 2},
                               "gradient": {"epochs": 1, "lr": 1e-12}}[method]})
    return validate(cfg, config_schema(method))


def _record_fits(monkeypatch):
    """The FitResults the driver returns to run_fit (models in the fitting units)."""
    results, original = [], driver.drive

    def drive(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(driver, "drive", drive)
    return results


def _record_estimator_fits(monkeypatch):
    """The models the estimators fit, in the fitting (standardized) units."""
    models, original = [], estimators._ImplicitEstimator._fit_model

    def fit_model(self, U, Y):
        models.append(original(self, U, Y))
        return models[-1]

    monkeypatch.setattr(estimators._ImplicitEstimator, "_fit_model", fit_model)
    return models


def _certified_labels(model, X, y):
    res = certify(model, X, y, [0.0])
    return res.predictions, res.clean_accuracy


def test_cli_style_digits_fit(tmp_path, monkeypatch):
    fits = _record_fits(monkeypatch)
    run_fit(_config(), tmp_path, progress=False)
    fitted = fits[0].model  # fitted on pixels / 16
    ds = load_dataset("digits", seed=1)
    X_raw, y = ds.split("test", raw=True)
    want = fitted.predict(ds.split("test")[0], **EQ)
    loaded = ImplicitModel.load(tmp_path / "model.npz")
    _close(loaded.predict(X_raw, **EQ), want)
    labels, accuracy = _certified_labels(loaded, X_raw, y)
    np.testing.assert_array_equal(labels, want.argmax(axis=1))
    assert accuracy == pytest.approx(np.mean(want.argmax(axis=1) == y))
    assert loaded.metadata["input"]["domain"] == {"low": [0.0] * 64, "high": [16.0] * 64}
    assert loaded.describe()["inputs"] == ("raw inputs (folded: pixels / 16); domain [0.0, 16.0] "
                                           "for every feature")
    assert loaded.metadata["input"]["train_range"]["high"] == ds.X[ds.train_index].max(axis=0).tolist()


def test_breast_cancer_estimator(tmp_path, monkeypatch):
    seen = _record_estimator_fits(monkeypatch)
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, y_tr, X_te, y_te = X[:400], y[:400], X[400:], y[400:]
    clf = ImplicitClassifier(n_states=8, max_iter=3, random_state=0).fit(X_tr, y_tr)
    fitted = seen[0]  # fitted on standardized inputs
    want = fitted.predict(clf.input_transform_.apply(X_te), **EQ)
    loaded = ImplicitModel.load(clf.model_.save(tmp_path / "bc.npz"))
    _close(loaded.predict(X_te, **EQ), want)
    _close(clf.decision_function(X_te), want[:, 1] - want[:, 0], rtol=1e-9)  # default tol 1e-10
    np.testing.assert_array_equal(clf.predict(X_te), clf.classes_[want.argmax(axis=1)])
    labels, accuracy = _certified_labels(loaded, X_te, y_te)
    np.testing.assert_array_equal(labels, want.argmax(axis=1))
    assert accuracy == pytest.approx(clf.score(X_te, y_te))
    steps = loaded.metadata["input"]["transform"]["steps"]
    assert steps == ["standardize (estimator fit)"] and loaded.metadata["classes"] == [0, 1]


def test_pipeline_conversion(tmp_path):
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = Pipeline([("mm", MinMaxScaler()), ("std", StandardScaler()),
                         ("mlp", MLPClassifier((24,), max_iter=40, random_state=0))]).fit(X[:1200], y[:1200])
    X_te, y_te = X[1200:], y[1200:]
    want = from_sklearn(pipe[-1]).predict(pipe[:-1].transform(X_te))  # the MLP on its own inputs
    loaded = ImplicitModel.load(from_sklearn(pipe).save(tmp_path / "pipe.npz"))
    _close(loaded.predict(X_te), want)
    np.testing.assert_array_equal(loaded.predict(X_te).argmax(axis=1), pipe.predict(X_te))
    labels, accuracy = _certified_labels(loaded, X_te, y_te)
    np.testing.assert_array_equal(labels, pipe.predict(X_te))
    assert accuracy == pytest.approx(pipe.score(X_te, y_te))


def test_saved_init_is_unfolded_exactly(tmp_path):
    """A saved model takes raw pixels; as the init of a fit on pixels / 16 it is unfolded, so a
    fit that barely moves (one gradient step of size 1e-12) saves the same raw-input model."""
    first = tmp_path / "first"
    run_fit(_config(), first, progress=False)
    saved = ImplicitModel.load(first / "model.npz")
    ds = load_dataset("digits", seed=1)
    X_raw = ds.split("test", raw=True)[0]
    unfolded = unfold_saved_init(str(first / "model.npz"), ds.transform)
    _close(unfolded.predict(ds.transform.apply(X_raw), **EQ), saved.predict(X_raw, **EQ))
    assert "input" not in unfolded.metadata
    second = tmp_path / "second"
    run_fit(_config("gradient", init=str(first / "model.npz")), second, progress=False)
    again = ImplicitModel.load(second / "model.npz")
    _close(again.predict(X_raw, **EQ), saved.predict(X_raw, **EQ), rtol=1e-8)
    assert unfold_saved_init("data", ds.transform) == "data"
    with pytest.raises(ValueError, match="neither 'random', 'data' nor an existing model file"):
        unfold_saved_init(str(tmp_path / "missing.npz"), ds.transform)


def test_binary_sim_fit_has_one_logit_and_right_labels(tmp_path):
    """run_fit with method sim on breast cancer: the binary teacher gives ONE logit (class 1 iff
    ŷ > 0); the report's accuracy is that of those labels on raw inputs."""
    _, report = run_fit(_config("sim", "breast_cancer"), tmp_path, progress=False)
    model = ImplicitModel.load(tmp_path / "model.npz")
    assert model.n_outputs == 1 and model.metadata["classes"] == [0, 1]
    ds = load_dataset("breast_cancer", seed=1)
    X_raw, y = ds.split("test", raw=True)
    labels = (model.predict(X_raw)[:, 0] > 0).astype(int)
    assert report["test_accuracy"] == pytest.approx(np.mean(labels == y)) and report["test_accuracy"] >= 0.9
