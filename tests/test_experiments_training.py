"""Smoke tests of the training experiments: --quick runs write their tables with the right columns."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS_DIR))

import bench_training  # noqa: E402
import common  # noqa: E402
import reproduce_training  # noqa: E402


def test_mean_std_and_summary():
    assert common.mean_std([1.0, 3.0], 2) == "2.00 ± 1.41"
    assert common.mean_std([0.5]) == "0.500"
    assert common.mean_std([None]) == "—"
    s = common.summarize([1.0, 2.0, None, 3.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 3)


def test_tables_round_trip(tmp_path):
    rows = [{"a": 1, "b": "x|y"}, {"a": 2.5}]
    common.write_csv(tmp_path / "t.csv", rows, ["a", "b"])
    with open(tmp_path / "t.csv") as fh:
        assert list(csv.DictReader(fh)) == [{"a": "1", "b": "x|y"}, {"a": "2.5", "b": ""}]
    md = common.markdown_table(rows, ["a", "b"])
    assert md.splitlines()[2] == "| 1 | x\\|y |" and md.splitlines()[3] == "| 2.5 | — |"


def test_time_to_target_is_the_first_hit():
    cur = {"seconds": [1.0, 2.0, 3.0, 4.0], "train_loss": [5.0, 2.0, 3.0, 1.0]}
    assert bench_training.time_to_target(cur, 2.5) == 2.0
    assert bench_training.time_to_target(cur, 0.5) is None


def _read_csv(path):
    with open(path) as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


@pytest.mark.slow
def test_reproduce_quick_writes_tables(tmp_path):
    checks = reproduce_training.main(["--quick", "--out", str(tmp_path),
                                      "--only", "regression", "--only", "digits"])
    assert set(checks) == {"regression", "digits"}
    for name, task in (("regression", "regression"), ("digits", "classification")):
        stem = tmp_path / f"training_{name}"
        header, rows = _read_csv(stem.with_suffix(".csv"))
        assert header == reproduce_training.csv_columns(task)
        exp = reproduce_training.EXPERIMENTS[name]
        assert [r["method"] for r in rows] == list(exp.methods) + list(exp.baselines)
        assert "| method |" in stem.with_suffix(".md").read_text()
        data = json.loads(stem.with_suffix(".json").read_text())
        assert data["quick"] is True and data["seeds"] == 1
        assert {r["method"] for r in data["records"]} == {r["method"] for r in rows}
    assert checks["regression"]["check"].startswith("adjoint mean test_rmse")
    # two different test targets: the noisy y and the noiseless f
    reg = json.loads((tmp_path / "training_regression.json").read_text())["records"]
    assert all(r["test_rmse"] != r["test_rmse_noiseless"] for r in reg)


@pytest.mark.slow
def test_bench_quick_writes_json_and_png(tmp_path):
    path = tmp_path / "bench.json"
    out = bench_training.main(["--quick", "--out", str(tmp_path), "--json", str(path)])
    assert path.exists() and path.with_suffix(".png").stat().st_size > 1000
    data = json.loads(path.read_text())
    assert set(data["problems"]) == {"regression_7_1", "digits"}
    for res in data["problems"].values():
        assert set(res["methods"]) == {"adjoint", "fenchel", "gradient"}
        base = res["baseline"]
        assert [float(k) for k in base["final_loss_by_lr"]] == list(bench_training.LEARNING_RATES)
        assert res["target_train_loss"] == min(base["final_loss_by_lr"].values())
        grad = res["methods"]["gradient"]
        assert grad["seconds_to_target"] is not None  # the tuned baseline reaches its own loss
        for rec in res["methods"].values():
            assert len(rec["curve"]["seconds"]) == len(rec["curve"]["train_loss"]) >= 2
    assert out["acceptance"]["speedup"] == data["problems"]["regression_7_1"]["speedup_vs_gradient"]["adjoint"]
