"""fit → certify → attack from the command line, on small configs: files, report schema, resume,
and agreement with the Python API on the same samples."""

import csv
import json

import numpy as np
import pytest
import yaml

from implicit_cvx import ImplicitModel
from implicit_cvx.cli import main
from implicit_cvx.data import load_dataset
from implicit_cvx.robust import certify, sensitivity_attack
from implicit_cvx.wellposed import BALL_RTOL, inf_norm

ALWAYS = {"command", "method", "task", "dataset", "seed", "config", "versions", "seconds",
          "seconds_by_phase"}
MODEL_KEYS = {"kappa", "inf_norm_A", "n_states", "n_params", "nnz", "nnz_fraction",
              "equilibrium_residual"}

SMALL = {
    "adjoint": {"adjoint": {"max_outer": 3, "batch_size": 100},
                "model": {"n_states": 12, "kappa": 0.9, "include_D": False, "init": "data"}},
    "gradient": {"gradient": {"epochs": 4, "batch_size": 64},
                 "model": {"n_states": 12, "kappa": 0.9, "activation": "tanh"}},
    "fenchel": {"fenchel": {"max_outer": 2}, "model": {"n_states": 12, "kappa": 0.9}},
    "sim": {"sim": {"teacher_hidden": [16, 8], "teacher_max_iter": 100}, "model": {"kappa": 0.95}},
}


def _config(tmp_path, method, **extra):
    cfg = {"method": method, "seed": 0, "dataset": {"name": "digits", "max_train": 300},
           **SMALL[method], **extra}
    if method != "sim":  # sim has no iterations to checkpoint and no loss: it refuses those keys
        cfg.update(loss="cross_entropy", run={"checkpoint_every": 1})
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    out = tmp / "adjoint"
    assert main(["fit", str(_config(tmp, "adjoint")), "--out", str(out), "--no-progress"]) == 0
    return out


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("method", ["adjoint", "gradient", "fenchel", "sim"])
def test_fit_writes_model_and_report_in_the_schema(method, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(_config(tmp_path, method)), "--out", str(out), "--no-progress"]) == 0
    rep = _report(out)
    want = ALWAYS | MODEL_KEYS | {"train_accuracy", "test_accuracy"}
    want |= ({"teacher_accuracy", "teacher_params", "params_fraction_of_teacher", "max_duality_gap",
              "rows_escalated"} if method == "sim" else {"train_loss", "outer_iterations", "max_duality_gap"})
    if method == "fenchel":
        want.add("fenchel_gap")
    assert want <= set(rep), want - set(rep)
    assert rep["method"] == method and rep["command"] == "fit" and rep["task"] == "classification"
    model = ImplicitModel.load(out / "model.npz")
    assert inf_norm(model.A) <= rep["kappa"] * (1 + BALL_RTOL)
    assert rep["nnz"] == model.nnz and rep["n_params"] == model.n_params
    assert rep["equilibrium_residual"] <= 1e-8
    assert model.metadata["classes"] == list(range(10))
    assert model.metadata["preprocessing"] == {"kind": "none"}  # pixels / 16 folded in: raw input
    record = model.metadata["input"]
    assert record["transform"]["steps"] == ["pixels / 16"] and record["domain"]["high"] == [16.0] * 64
    assert (out / "A_sparsity.png").stat().st_size > 0
    want_act = "tanh" if method == "gradient" else "relu"  # model.activation reaches the fit
    assert {act.name for act, _, _ in model.activation.blocks} == {want_act}


@pytest.mark.parametrize("method, model, key", [("fenchel", {"activation": "tanh"}, "model.activation"),
                                                ("sim", {"init": "data"}, "model.init")])
def test_model_keys_a_method_cannot_use_are_refused_by_name(method, model, key, tmp_path, capsys):
    path = _config(tmp_path, method, model=model)
    assert main(["fit", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"'{key}'" in capsys.readouterr().err


def test_resume_of_a_finished_run_gives_the_same_model(fitted):
    before = ImplicitModel.load(fitted / "model.npz")
    cfg = fitted.parent / "adjoint.yaml"
    assert main(["fit", str(cfg), "--out", str(fitted), "--resume", "--no-progress"]) == 0
    after = ImplicitModel.load(fitted / "model.npz")
    for name in ("A", "B", "C", "D", "b_x", "b_y"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))


def _api_samples(n):
    """Raw test rows of digits: a saved model takes raw pixels in [0, 16]."""
    ds = load_dataset("digits", seed=0)
    idx = ds.test_index[:n]
    return ds.X[idx], ds.y[idx], idx


@pytest.mark.parametrize("units, eps", [("range", "0,0.01,0.02"), ("raw", "0,0.16,0.32")])
def test_certify_cli_agrees_with_the_api(fitted, tmp_path, units, eps):
    """ε as a fraction of each pixel's range [0, 16] or in raw pixels: the same radii (70 samples:
    certified in two chunks for the progress lines, merged)."""
    out = tmp_path / "cert"
    args = ["certify", str(fitted / "model.npz"), "--eps", eps, "--eps-units", units,
            "--method", "interval", "--limit", "70", "--out", str(out)]
    assert main(args) == 0
    rep = _report(out)
    assert ALWAYS <= set(rep) and rep["certify_method"] == "interval" and rep["samples"] == 70
    assert rep["eps_units"] == {"range": "fraction of each feature's range", "raw": "raw input units"}[units]
    assert rep["domain"] == [0.0, 16.0] and rep["source"]["from"] == "the model's provenance"
    model = ImplicitModel.load(fitted / "model.npz")
    U, y, idx = _api_samples(70)
    assert rep["rows"] == idx.tolist()
    res = certify(model, U, y, [0.0, 0.16, 0.32], method="interval", domain=(0.0, 16.0))
    assert rep["clean_accuracy"] == pytest.approx(res.clean_accuracy)
    for e, raw in zip(eps.split(","), (0.0, 0.16, 0.32), strict=True):
        assert rep["certified_accuracy"][str(float(e))] == pytest.approx(res.certified_accuracy[raw])
    with open(out / "samples.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in table] == idx.tolist()
    assert [int(r["label"]) for r in table] == y.tolist()
    status = np.array([[r[f"status_eps_{float(e):g}"] for e in eps.split(",")] for r in table])
    np.testing.assert_array_equal(status == "certified", res.certified)
    assert (out / "certified_accuracy.png").exists()


def test_certify_refuses_a_split_that_is_not_the_models(fitted, tmp_path, capsys):
    args = ["certify", str(fitted / "model.npz"), "--eps", "0.01", "--seed", "3", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--seed 3 conflicts with the model's own split (seed 0" in err


def test_attack_cli_agrees_with_the_api(fitted, tmp_path):
    out = tmp_path / "att"
    args = ["attack", str(fitted / "model.npz"), "--dataset", "digits", "--kind", "sensitivity",
            "--fraction", "0.1", "--limit", "80", "--seed", "0", "--out", str(out)]
    assert main(args) == 0
    rep = _report(out)
    assert rep["attack_kind"] == "sensitivity" and rep["k"] == 6 and rep["samples"] == 80
    model = ImplicitModel.load(fitted / "model.npz")
    U, y, _ = _api_samples(80)
    res = sensitivity_attack(model, U, y, fraction=0.1, domain=(0.0, 16.0), rng=np.random.default_rng(0))
    assert rep["success_rate"] == pytest.approx(res.success_rate)
