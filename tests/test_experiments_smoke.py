"""Every experiment and benchmark script runs end to end in its --quick mode and writes its files.

(The training scripts have their own smoke tests in test_experiments_training.py.)"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    # script: (arguments after --quick, files it must write, relative to tmp_path)
    "sim_sparsity": (["--out", "{tmp}"], ["sim_sparsity_quick.csv"]),
    "bench_equilibrium": (["--json", "{tmp}/be.json", "--blas-threads", "1"], ["be.json"]),
    "bench_certify": (["--json", "{tmp}/bc.json"], ["bc.json"]),
    "certify_gap": (["--out", "{tmp}"], ["certify_gap_quick.csv", "certify_gap_quick.json", "certify_gap_quick.png"]),
    "certified_curves": (["--out", "{tmp}"], ["certified_curves_quick.csv"]),
    "robust_tradeoff": (["--out", "{tmp}"], ["robust_tradeoff_quick.csv"]),
    "attacks_table1": (["--out", "{tmp}"], ["table1_attacks_quick.csv"]),
    "bench_sim": (["--json", "{tmp}/bs.json"], ["bs.json"]),
    "bench_scale": (["--out", "{tmp}"], ["bench_scale_quick.csv", "bench_scale_quick.json"]),
    "regression_defaults": (["--out", "{tmp}"], ["regression_defaults_quick.md",
                                                  "regression_defaults_quick.json"]),
    "convert_zoo": (["--out", "{tmp}"], ["convert_zoo_quick.csv", "convert_zoo_quick.json"]),
    "architecture": (["--out", "{tmp}"], ["architecture_quick.csv", "architecture_quick.json"]),
    "paper_certificates": (["--out", "{tmp}"], ["paper_certificates_quick.json",
                                                "paper_certificates_quick.md"]),
    "mnist_adjoint": (["--out", "{tmp}"], ["mnist_adjoint_quick.json", "mnist_adjoint_quick.md"]),
}
NEEDS_TORCH = {"convert_zoo"}  # the optional extra implicit_cvx[torch]
MNIST_MODES = {
    # script: the files its `--quick --dataset mnist` run must write (JSON with a `rows` list)
    "attacks_table1": ["table1_mnist_quick.csv", "table1_mnist_quick.md", "table1_mnist_quick.json"],
    "sim_sparsity": ["sim_mnist_quick.csv", "sim_mnist_quick.md", "sim_mnist_quick.png",
                     "sim_mnist_quick.json"],
}
NEEDS_MNIST = {"mnist_adjoint"}  # the full MNIST file (the script skips without it, writing nothing)


def _mnist_path():
    """experiments/common.py's mnist_path(): $IMPLICIT_CVX_DATA or ../shared/data/mnist.npz."""
    spec = importlib.util.spec_from_file_location("experiments_common", ROOT / "experiments" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    return common.mnist_path()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_mode_runs_and_writes_results(script, tmp_path):
    if script in NEEDS_TORCH:
        pytest.importorskip("torch")
    if script in NEEDS_MNIST and _mnist_path() is None:
        pytest.skip("the full MNIST file is absent (IMPLICIT_CVX_DATA or ../shared/data/mnist.npz)")
    args, files = SCRIPTS[script]
    cmd = [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick",
           *(a.format(tmp=tmp_path) for a in args)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in files:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, (name, sorted(p.name for p in tmp_path.iterdir()))
        if name.endswith(".json"):
            json.loads(path.read_text())


@pytest.mark.parametrize("script", sorted(MNIST_MODES))
def test_quick_mnist_mode_writes_rows_beside_the_paper(script, tmp_path):
    """The full-MNIST modes on their quick slices: files written, every row labelled, with a
    protocol and our number (skipped when the MNIST file is not on this machine)."""
    if _mnist_path() is None:
        pytest.skip("full MNIST not found: set IMPLICIT_CVX_DATA or put it at ../shared/data/mnist.npz")
    cmd = [sys.executable, str(ROOT / "experiments" / f"{script}.py"), "--quick", "--dataset",
           "mnist", "--out", str(tmp_path)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in MNIST_MODES[script]:
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / MNIST_MODES[script][-1]).read_text())
    assert report["rows"] and report["versions"] and report["argv"]
    for row in report["rows"]:
        assert row["label"] and row["protocol"].startswith("ours") and "paper" in row
        assert 0 <= row["ours"] <= 100, row
