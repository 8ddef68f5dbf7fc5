"""`implicit-cvx certify` and `implicit-cvx attack`: certified accuracy in ℓ∞ balls, and attacks
that try to break the certificates — on the model's own test rows, ε stated in explicit units."""

from __future__ import annotations

import time

import numpy as np

from ..files import OutputDirectory
from ..report import base_report, write_report
from ..robust import (
    METHODS,
    certify,
    certify_partitioned,
    gradient_attack,
    merge_certify_results,
    pgd_attack,
    sensitivity_attack,
)
from ..train.runlog import progress_bar
from .common import (
    axes_style,
    describe_source,
    domain_json,
    figure,
    fraction,
    input_bounds,
    load_model,
    positive_int,
    radius_scale,
    save_figure,
    select_samples,
    write_csv,
)

PROGRESS_CHUNKS = 20  # certify shows progress over at most this many chunks of samples
MIN_CHUNK = 32  # ... of at least this many samples (the bounds are batched over a chunk)


def _eps_list(text: str) -> list[float]:
    try:
        eps = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--eps must be comma-separated numbers ≥ 0, got {text!r}") from None
    if not eps or any(not np.isfinite(e) or e < 0 for e in eps):
        raise ValueError(f"--eps must be comma-separated numbers ≥ 0, got {text!r}")
    return eps


def _common_report(command: str, model, samples, units: str, domain, eps) -> dict:
    report = base_report(command, method=model.metadata.get("method"), task="classification",
                         dataset=samples.source.get("dataset") or samples.source.get("data"),
                         seed=samples.source.get("seed"))
    report.update(samples=int(len(samples.y)), rows=samples.rows.tolist(), source=samples.source,
                  eps=eps, eps_units=units, domain=domain_json(domain),
                  preprocessing=model.metadata.get("input"))
    return report


def cmd_certify(args) -> int:
    t0 = time.perf_counter()
    model = load_model(args.model)
    samples = select_samples(model, args)
    domain, width = input_bounds(model, args.domain)
    scale, units = radius_scale(args.eps_units, width)
    eps = _eps_list(args.eps)
    print(f"certifying {describe_source(samples)} by {args.method!r}; ε in {units}")
    if args.partitions and not (args.workers or args.address):
        raise ValueError("--partitions splits the samples over a Dask cluster: give --workers N "
                         "(a local cluster) or --address (a running scheduler) as well")
    options = dict(method=args.method, domain=domain, eps_scale=scale, time_limit=args.time_limit)
    if args.workers or args.address:  # partitions of the samples on a Dask cluster, merged
        res = certify_partitioned(model, samples.X, samples.y, eps, partitions=args.partitions,
                                  data_backend="dask", workers=args.workers or 1,
                                  address=args.address, **options)
    else:
        res = _certify_in_chunks(model, samples.X, samples.y, eps, options, not args.no_progress)
    report = _common_report("certify", model, samples, units, domain, eps)
    report.update(clean_accuracy=res.clean_accuracy, certify_method=args.method,
                  certified_accuracy={str(e): a for e, a in res.certified_accuracy.items()},
                  falsified=None if res.falsified is None else {str(e): v for e, v in res.falsified.items()},
                  unknown=None if res.unknown is None else {str(e): v for e, v in res.unknown.items()})
    with OutputDirectory(args.out) as out:
        header = ["row", "label", "prediction"] + [f"{what}_eps_{e:g}" for e in eps
                                                   for what in ("status", "margin_bound")]
        rows = [[int(samples.rows[i]), int(samples.y[i]), int(res.predictions[i])]
                + [v for k in range(len(eps)) for v in (res.status[i, k], f"{res.margin_bounds[i, k]:.6g}")]
                for i in range(len(samples.y))]
        write_csv(out.path / "samples.csv", header, rows)
        _plot_certified(res, eps, args.method, units, out.path / "certified_accuracy.png")
        report["seconds"] = time.perf_counter() - t0
        write_report(out.path, report)
    print(f"clean accuracy {res.clean_accuracy:.4f} on {len(samples.y)} samples")
    for e in eps:
        line = f"  ε = {e:g}: certified accuracy {res.certified_accuracy[e]:.4f}"
        if res.falsified is not None:
            line += f", falsified {res.falsified[e]:.4f}, unknown {res.unknown[e]:.4f}"
        print(line)
    print(f"wrote {out.path / 'report.json'}, samples.csv, certified_accuracy.png")
    return 0


def _certify_in_chunks(model, U, y, eps, options: dict, progress: bool):
    """`certify` over consecutive chunks of the samples (each sample's result does not depend on
    the others), merged, so that progress can be shown; one chunk when there are few samples."""
    chunks = np.array_split(np.arange(len(y)), max(1, min(PROGRESS_CHUNKS, len(y) // MIN_CHUNK)))
    bar = progress_bar(len(chunks), progress and len(chunks) > 1, desc="certify")
    results, certified, k = [], 0, int(np.argmax(eps))  # k: the largest radius
    for idx in chunks:
        results.append(certify(model, U[idx], y[idx], eps, **options))
        certified += int(results[-1].certified[:, k].sum())
        bar.update({"certified": certified / (idx[-1] + 1)})
    bar.close()
    return merge_certify_results(results)


def _plot_certified(res, eps, method, units, path) -> None:
    fig, ax = figure()
    xs = [0.0, *eps]
    ax.plot(xs, [res.clean_accuracy] + [res.certified_accuracy[e] for e in eps], "o-",
            label=f"certified ({method})")
    if res.falsified is not None:
        ax.plot(eps, [1 - res.falsified[e] for e in eps], "s--", label="not falsified (upper bound)")
    ax.set_ylim(0, 1.02)
    axes_style(ax, f"ε ({units})", "accuracy", f"certified accuracy, {len(res.predictions)} samples")
    ax.legend()
    save_figure(fig, path)


def _attack(model, samples, args, domain, scale):
    """One attack of the requested kind; PGD keeps, per sample, the worst of its restarts."""
    rng = np.random.default_rng(args.seed_attack)
    lo_hi = domain
    if args.kind == "pgd":
        radius = args.eps if scale is None else args.eps * scale
        best = None
        for _ in range(args.restarts):
            res = pgd_attack(model, samples.X, samples.y, eps=radius, steps=args.steps,
                             domain=lo_hi, rng=rng)
            best = res if best is None else _worse(best, res)
        return best
    if lo_hi is None:
        raise ValueError("this attack draws values from the input domain, which the model does not "
                         "record: give --domain lo,hi (raw input units)")
    attack = sensitivity_attack if args.kind == "sensitivity" else gradient_attack
    return attack(model, samples.X, samples.y, fraction=args.fraction, domain=lo_hi, rng=rng)


def _worse(a, b):
    """Per sample, the restart whose adversarial margin is smaller (the stronger attack)."""
    take = b.adversarial_margins < a.adversarial_margins
    for name in ("U_adv", "adversarial_predictions", "adversarial_margins", "changed"):
        getattr(a, name)[take] = getattr(b, name)[take]
    a.success_rate = float(a.changed.sum() / a.n_correct) if a.n_correct else float("nan")
    return a


def cmd_attack(args) -> int:
    t0 = time.perf_counter()
    model = load_model(args.model)
    samples = select_samples(model, args)
    domain, width = input_bounds(model, args.domain)
    scale, units = radius_scale(args.eps_units, width) if args.kind == "pgd" else (None, None)
    res = _attack(model, samples, args, domain, scale)
    robust = float(np.mean(res.correct & ~res.changed)) if len(samples.y) else float("nan")
    report = _common_report("attack", model, samples, units, domain,
                            args.eps if args.kind == "pgd" else None)
    report.update(attack_kind=args.kind, fraction=args.fraction if args.kind != "pgd" else None,
                  k=res.k, success_rate=res.success_rate, robust_accuracy=robust,
                  clean_accuracy=float(np.mean(res.correct)),
                  steps=args.steps if args.kind == "pgd" else None,
                  restarts=args.restarts if args.kind == "pgd" else None)
    with OutputDirectory(args.out) as out:
        header = ["row", "label", "prediction", "adversarial_prediction", "changed", "adversarial_margin"]
        rows = [[int(samples.rows[i]), int(samples.y[i]), int(res.predictions[i]),
                 int(res.adversarial_predictions[i]), int(res.changed[i]),
                 f"{res.adversarial_margins[i]:.6g}"] for i in range(len(samples.y))]
        write_csv(out.path / "samples.csv", header, rows)
        _plot_attack(res, samples, args, out.path / "attack.png")
        report["seconds"] = time.perf_counter() - t0
        write_report(out.path, report)
    what = f"k = {res.k} inputs" if args.kind != "pgd" else f"ε = {args.eps:g} ({units})"
    print(f"{args.kind} attack ({what}) on {len(samples.y)} samples: success rate "
          f"{res.success_rate:.4f}, robust accuracy {robust:.4f} (clean {np.mean(res.correct):.4f})")
    print(f"wrote {out.path / 'report.json'}, samples.csv, attack.png")
    return 0


def _plot_attack(res, samples, args, path) -> None:
    fig, ax = figure()
    margins = res.adversarial_margins[res.correct]
    if margins.size:
        ax.hist(margins, bins=30, color="tab:red", alpha=0.8)
    ax.axvline(0.0, color="k", lw=1)
    axes_style(ax, "margin after the attack (< 0: misclassified)", "samples",
               f"{args.kind}: success {res.success_rate:.1%} of {res.n_correct} correct samples")
    save_figure(fig, path)


def _add_data_args(s, formatter) -> None:
    s.add_argument("model", help="model file written by `implicit-cvx fit` (or its run directory)")
    s.add_argument("--data", default=None, help="a labelled .npz/.csv of raw inputs (all its rows)")
    s.add_argument("--label", default=None, help="label column of a --data .csv")
    s.add_argument("--dataset", default=None,
                   help="built-in data set; default: the one the model was fitted on")
    s.add_argument("--split", choices=("test", "train", "all"), default="test",
                   help="which rows of the data set")
    s.add_argument("--seed", type=int, default=None,
                   help="split seed; default: the model's own (a different one is refused)")
    s.add_argument("--test-size", type=float, default=None,
                   help="test share; default: the model's own (a different one is refused)")
    s.add_argument("--limit", type=positive_int, default=None, help="only the first N samples")
    s.add_argument("--domain", default=None,
                   help="input domain lo,hi in RAW units; default: the one the model records")
    s.add_argument("--eps-units", choices=("range", "raw"), default="range",
                   help="ε as a fraction of each feature's range, or in raw input units")
    s.add_argument("--out", required=True, help="output directory")


def add_commands(sub, formatter) -> None:
    s = sub.add_parser("certify", formatter_class=formatter,
                       help="certified accuracy in ℓ∞ balls of radius ε around the samples")
    _add_data_args(s, formatter)
    s.add_argument("--eps", required=True, help="comma-separated radii, e.g. 0.01,0.02,0.05")
    s.add_argument("--method", choices=METHODS, default="linear",
                   help="box < interval < linear < linear_alpha ≤ lp (bounds), exact (decides)")
    s.add_argument("--time-limit", type=float, default=10.0,
                   help="seconds per sample and ε for --method exact")
    s.add_argument("--workers", type=positive_int, default=None,
                   help="certify partitions of the samples on a local Dask cluster of N workers")
    s.add_argument("--address", default=None,
                   help="certify on the Dask scheduler at this address instead")
    s.add_argument("--partitions", type=positive_int, default=None,
                   help="number of sample partitions with --workers/--address (default: one per worker)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    s.set_defaults(func=cmd_certify)

    s = sub.add_parser("attack", formatter_class=formatter,
                       help="sensitivity / gradient-saliency / PGD attacks, robust accuracy")
    _add_data_args(s, formatter)
    s.add_argument("--kind", choices=("sensitivity", "gradient", "pgd"), required=True,
                   help="which attack")
    s.add_argument("--fraction", type=fraction, default=0.1,
                   help="share of inputs perturbed by the sensitivity / gradient attacks, in (0, 1]")
    s.add_argument("--eps", type=float, default=0.1, help="ℓ∞ radius of PGD (see --eps-units)")
    s.add_argument("--steps", type=positive_int, default=40, help="PGD steps per restart")
    s.add_argument("--restarts", type=positive_int, default=1, help="PGD random restarts")
    s.add_argument("--seed-attack", type=int, default=0, help="seed of the attack's random draws")
    s.set_defaults(func=cmd_attack)
