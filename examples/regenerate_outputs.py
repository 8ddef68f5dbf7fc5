"""Rerun every example and store what it prints, for the tutorial pages.

Each example runs twice: in its default mode (its output goes to
docs/tutorials/output/<name>.txt, its figure to docs/tutorials/img/) and with --quick (output to
<name>.quick.txt; figures to a scratch directory). The pages include these files; the tests rerun
the quick mode and compare what it prints with <name>.quick.txt.

    python examples/regenerate_outputs.py [NAME ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "tutorials" / "output"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run(script: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(names: list[str]) -> None:
    scripts = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != Path(__file__).name)
    for script in scripts:
        if names and script.stem not in names:
            continue
        (OUTPUT / f"{script.stem}.txt").write_text(run(script))
        with tempfile.TemporaryDirectory() as scratch:
            (OUTPUT / f"{script.stem}.quick.txt").write_text(run(script, "--quick", "--out", scratch))
        print(f"{script.name}: outputs written")


if __name__ == "__main__":
    main(sys.argv[1:])
