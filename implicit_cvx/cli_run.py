"""The long-running commands of `implicit-cvx`: fit, certify, attack (argument parsing and output)."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def cmd_fit(args) -> int:
    from .train.fit import load_config, run_fit

    cfg = load_config(args.config)
    if args.seed is not None:
        cfg["seed"] = args.seed
    print(f"fitting {cfg['method']!r} on {cfg['dataset']['name']!r} (seed {cfg['seed']}) → {args.out}")
    model, report = run_fit(cfg, args.out, config_path=args.config, resume=args.resume,
                            progress=not args.no_progress)
    keys = [k for k in ("train_accuracy", "test_accuracy", "train_rmse", "test_rmse",
                        "teacher_accuracy", "teacher_rmse", "params_fraction_of_teacher",
                        "train_loss", "outer_iterations", "max_duality_gap", "rows_escalated",
                        "kappa", "inf_norm_A", "equilibrium_residual", "nnz", "n_params", "seconds")
            if report.get(k) is not None]
    width = max(len(k) for k in keys)
    for k in keys:
        v = report[k]
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    print(f"wrote {Path(args.out) / 'model.npz'}, report.json, A_sparsity.png")
    return 0


def _dataset_samples(model, args):
    """(U in the model's units, labels as class indices, row indices in the data set)."""
    from .data import load_dataset, preprocess

    ds = load_dataset(args.dataset, seed=args.seed, test_size=args.test_size)
    index = {"test": ds.test_index, "train": ds.train_index,
             "all": np.arange(len(ds.y))}[args.split]
    if args.limit is not None:
        index = index[: args.limit]
    classes = model.metadata.get("classes")
    if classes is None:
        raise ValueError("the model stores no class labels: certify and attack need a classifier")
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in ds.y[index].tolist()} - set(lookup))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} of {args.dataset!r} are not among the model's classes")
    y = np.array([lookup[str(v)] for v in ds.y[index].tolist()])
    U = preprocess(model.metadata.get("preprocessing", {"kind": "none"}), ds.X[index])
    return U, y, index, ds


def _domain(args, ds):
    if args.domain is not None:
        lo, hi = (float(v) for v in args.domain.split(","))
        return (lo, hi)
    return ds.domain


def cmd_certify(args) -> int:
    from .cli import _load_model
    from .data import describe_units
    from .report import base_report, write_report
    from .robust import certify

    t0 = time.perf_counter()
    model = _load_model(args.model)
    U, y, index, ds = _dataset_samples(model, args)
    eps = [float(e) for e in args.eps.split(",")]
    res = certify(model, U, y, eps, method=args.method, domain=_domain(args, ds))
    units = describe_units(model.metadata.get("preprocessing", {"kind": "none"}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = base_report("certify", method=model.metadata.get("method"), task="classification",
                         dataset=args.dataset, seed=args.seed)
    report.update(clean_accuracy=res.clean_accuracy,
                  certified_accuracy={str(e): a for e, a in res.certified_accuracy.items()},
                  certify_method=args.method, samples=len(U),
                  preprocessing=model.metadata.get("preprocessing", {"kind": "none"}),
                  eps_units=units, domain=_domain(args, ds), split=args.split)
    with open(out / "samples.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "label", "prediction"] + [f"certified_eps_{e:g}" for e in eps])
        for i in range(len(U)):
            w.writerow([int(index[i]), int(y[i]), int(res.predictions[i])]
                       + [int(bool(c)) for c in res.certified[i]])
    _plot_certified(res, eps, args.method, units, out / "certified_accuracy.png")
    report["seconds"] = time.perf_counter() - t0
    write_report(out, report)
    print(f"clean accuracy {res.clean_accuracy:.4f} on {len(U)} samples ({args.split} split); ε in {units}")
    for e in eps:
        print(f"  ε = {e:g}: certified accuracy ({args.method}) {res.certified_accuracy[e]:.4f}")
    print(f"wrote {out / 'report.json'}, samples.csv, certified_accuracy.png")
    return 0


def _plot_certified(res, eps, method, units, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [0.0] + list(eps)
    ax.plot(xs, [res.clean_accuracy] + [res.certified_accuracy[e] for e in eps], "o-", label=method)
    ax.set_xlabel(f"ε ({units})")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_attack(args) -> int:
    from .cli import _load_model
    from .report import base_report, write_report
    from .robust import gradient_attack, pgd_attack, sensitivity_attack

    t0 = time.perf_counter()
    model = _load_model(args.model)
    U, y, _, ds = _dataset_samples(model, args)
    domain = _domain(args, ds) or (float(U.min()), float(U.max()))
    rng = np.random.default_rng(args.seed)
    if args.kind == "pgd":
        res = pgd_attack(model, U, y, eps=args.eps, domain=domain, rng=rng)
    else:
        attack = sensitivity_attack if args.kind == "sensitivity" else gradient_attack
        res = attack(model, U, y, fraction=args.fraction, domain=domain, rng=rng)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = base_report("attack", method=model.metadata.get("method"), task="classification",
                         dataset=args.dataset, seed=args.seed)
    report.update(attack_kind=args.kind, fraction=args.fraction if args.kind != "pgd" else None,
                  k=getattr(res, "k", None), success_rate=res.success_rate, samples=len(U),
                  eps=args.eps if args.kind == "pgd" else None, domain=domain, split=args.split)
    report["seconds"] = time.perf_counter() - t0
    write_report(out, report)
    what = f"k = {res.k} inputs" if args.kind != "pgd" else f"ε = {args.eps:g}"
    print(f"{args.kind} attack ({what}) on {len(U)} samples: success rate {res.success_rate:.4f}")
    print(f"wrote {out / 'report.json'}")
    return 0


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (0.1 is 10%), got {text}")
    return v


def _add_data_args(s) -> None:
    s.add_argument("model", help="model file written by `implicit-cvx fit`")
    s.add_argument("--dataset", required=True, help="built-in name (digits, mnist, …) or .npz/.csv")
    s.add_argument("--split", choices=("test", "train", "all"), default="test")
    s.add_argument("--limit", type=int, default=None, help="only the first N samples of the split")
    s.add_argument("--seed", type=int, default=0, help="split seed (use the fit's seed)")
    s.add_argument("--test-size", type=float, default=0.2)
    s.add_argument("--domain", default=None, help="input domain lo,hi in model units (default: the data set's)")
    s.add_argument("--out", required=True, help="output directory")


def add_commands(sub) -> None:
    s = sub.add_parser("fit", help="fit a model from a YAML config (methods sim, adjoint, fenchel, gradient)")
    s.add_argument("config", help="YAML config, e.g. configs/adjoint_digits.yaml")
    s.add_argument("--out", required=True, help="output directory (model.npz, report.json, …)")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    s.add_argument("--seed", type=int, default=None, help="override the config's seed")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("certify", help="certified accuracy in an ℓ∞ ball of radius ε")
    _add_data_args(s)
    s.add_argument("--eps", required=True, help="comma-separated radii, e.g. 0.01,0.02,0.05")
    s.add_argument("--method", choices=("box", "interval", "lp"), default="interval")
    s.set_defaults(func=cmd_certify)

    s = sub.add_parser("attack", help="sensitivity / gradient-saliency / PGD attacks")
    _add_data_args(s)
    s.add_argument("--kind", choices=("sensitivity", "gradient", "pgd"), required=True)
    s.add_argument("--fraction", type=_fraction, default=0.1, help="share of inputs perturbed, in (0, 1]")
    s.add_argument("--eps", type=float, default=0.1, help="ℓ∞ radius for pgd")
    s.set_defaults(func=cmd_attack)
