"""`implicit-cvx reproduce`: run every reproduction of the papers' experiments and write
RESULTS.md, by running the source checkout's experiments/reproduce.py.

The experiment scripts are not part of the installed package: this command works only from a
source checkout (an editable install), and says so otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "reproduce.py"


def script_path() -> Path:
    """experiments/reproduce.py of the source checkout this package runs from."""
    script = SCRIPT
    if not script.is_file():
        raise FileNotFoundError(
            f"`implicit-cvx reproduce` needs a source checkout: {script} does not exist (the "
            "package runs from an installed copy without the experiments/ directory); clone the "
            "repository, `pip install -e .` in it, and run the command from there")
    return script


def cmd_reproduce(args) -> int:
    script = script_path()
    argv = (["--quick"] if args.quick else []) + (["--report-only"] if args.report_only else [])
    argv += [a for name in args.only or [] for a in ("--only", name)]
    argv += ["--out", str(Path(args.out).resolve())] if args.out is not None else []
    root = str(script.parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(script), *argv], cwd=root, env=env).returncode


def add_commands(sub, formatter) -> None:
    s = sub.add_parser("reproduce", formatter_class=formatter,
                       help="run the papers' experiments and write experiments/RESULTS.md "
                            "(source checkout only)")
    s.add_argument("--quick", action="store_true",
                   help="small budgets (a smoke test); results and report go to --out")
    s.add_argument("--only", action="append", metavar="NAME",
                   help="run only this experiment (repeatable; names: "
                        "`python experiments/reproduce.py --help`)")
    s.add_argument("--report-only", action="store_true",
                   help="rebuild RESULTS.md from the results files without running anything")
    s.add_argument("--out", default=None,
                   help="directory for results and RESULTS.md (required with --quick)")
    s.set_defaults(func=cmd_reproduce)
