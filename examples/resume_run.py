"""Resume a long run: kill a fit with SIGKILL, continue it with --resume, and check that the
result is the model an uninterrupted run gives.

`implicit-cvx fit` writes a checkpoint every `run.checkpoint_every` outer iterations (built under a
temporary name, then renamed, so a kill at any moment leaves a complete one) and its history as
one JSON line per iteration. `--resume` continues from the last checkpoint with the same config;
every random draw comes from a checkpointed generator, so the resumed run is the same run.

    python examples/resume_run.py            # the page's output and figure
    python examples/resume_run.py --quick    # fewer iterations (the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from implicit_cvx import ImplicitModel
from implicit_cvx.cli import main as main_cli

IMG = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "img"
CONFIG = """\
method: adjoint
seed: 0
dataset: {{name: digits, max_train: 600}}
model: {{n_states: 32, kappa: 0.95, include_D: false, init: data}}
adjoint: {{max_outer: {iterations}, batch_size: 200, anchor_mu: 0.1}}
run: {{checkpoint_every: 2}}
"""


def cli(command: str) -> tuple[int, str]:
    """An `implicit-cvx ...` command line run in this process: (exit code, stdout + stderr)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main_cli(shlex.split(command)[1:])
    return code, printed.getvalue()


def start_and_kill(work: Path) -> int:
    """Start the fit as its own process, SIGKILL it once its first checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", "implicit_cvx.cli", "fit", "config.yaml",
                             "--out", "run", "--no-progress"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (work / "run" / "LATEST").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len((work / "run" / "history.jsonl").read_text().splitlines())
    print(f"the fit was killed by SIGKILL: {proc.returncode == -signal.SIGKILL}; "
          f"a checkpoint exists: {(work / 'run' / 'LATEST').exists()}")
    return killed_at


def main(quick: bool, work: Path, out: Path) -> None:
    iterations = 8 if quick else 24
    (work / "config.yaml").write_text(CONFIG.format(iterations=iterations))
    os.chdir(work)
    killed_at = start_and_kill(work)
    code, text = cli("implicit-cvx fit config.yaml --out run")
    print(f"without --resume the directory is refused (exit code {code}):")
    print(" ", text.strip().splitlines()[-1])
    code, _ = cli("implicit-cvx fit config.yaml --out run --resume --no-progress")
    history = [json.loads(line) for line in (work / "run" / "history.jsonl").read_text().splitlines()]
    steps = [h["iteration"] for h in history]
    print(f"--resume finished (exit code {code}); history has one record per iteration "
          f"0..{iterations - 1}: {steps == list(range(iterations))}")
    cli("implicit-cvx fit config.yaml --out uninterrupted --no-progress")
    a, b = (ImplicitModel.load(work / d / "model.npz") for d in ("run", "uninterrupted"))
    diff = max(float(np.max(np.abs(getattr(a, k) - getattr(b, k)))) for k in "ABCD")
    print(f"same model as an uninterrupted run (max |Δ| of A, B, C, D ≤ 1e-9): {diff <= 1e-9}")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, [h["train_loss"] for h in history], "o-", markersize=3, label="resumed run")
    ax.axvline(killed_at - 0.5, color="red", ls="--", label="SIGKILL (this run)")
    ax.set(xlabel="outer iteration", ylabel="train loss", title="kill, then --resume")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "resume_run.png", dpi=90)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 outer iterations instead of 24")
    parser.add_argument("--out", type=Path, default=IMG, help="where the figure goes")
    args = parser.parse_args()
    out = args.out.resolve()
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as tmp:
        main(args.quick, Path(tmp), out)
