"""What the commands share: loading a model, choosing the samples a model is evaluated on, ε and
the input domain in raw units, writing tables and plots."""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import load_dataset, load_file
from ..files import write_text_atomic
from ..model import ImplicitModel
from ..train.fit import split_rows
from ..transform import bounds_arrays


def load_model(path) -> ImplicitModel:
    """A model file, or the model.npz inside a run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.npz").is_file():
            raise FileNotFoundError(f"{path} is a directory without a model.npz; give a model file")
        path = path / "model.npz"
    return ImplicitModel.load(path)


def print_table(rows) -> None:
    """Aligned `key  value` lines (floats to 6 significant digits)."""
    rows = list(rows)
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.6g}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


def write_csv(path, header: list, rows) -> None:
    """A CSV table written atomically (a killed run never leaves half a file)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


@dataclass
class Samples:
    """The labelled samples a command evaluates a model on: raw inputs, class indices of the
    model, the rows of the source they came from, and where they came from."""

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    source: dict


def describe_source(samples: Samples) -> str:
    """Words for where the samples came from, e.g. "360 test rows of digits (seed 0, …)"."""
    src = samples.source
    if "data" in src:
        return f"{len(samples.y)} rows of {src['data']}"
    return (f"{len(samples.y)} {src['split']} rows of {src['dataset']} (seed {src['seed']}, test "
            f"size {src['test_size']:g}, from {src['from']})")


def _provenance(model) -> dict | None:
    prov = model.metadata.get("provenance") or {}
    return prov.get("config")


def _refuse_conflicts(cfg: dict, args) -> None:
    """Flags that contradict the split recorded in the model are refused, naming both values."""
    given = {"dataset": args.dataset, "seed": args.seed, "test size": args.test_size}
    recorded = {"dataset": cfg["dataset"]["name"], "seed": cfg["seed"],
                "test size": cfg["dataset"]["test_size"]}
    for key, value in given.items():
        if value is not None and value != recorded[key]:
            raise ValueError(
                f"--{key.replace(' ', '-')} {value} conflicts with the model's own split "
                f"({key} {recorded[key]!r}, recorded when it was fitted): its test rows would "
                "include training rows; omit the flag, or certify another file with --data")


def select_samples(model, args) -> Samples:
    """The samples of --data FILE (all rows), of the model's own split (dataset, seed, test size,
    max_train and validation hold-out from its provenance), or of --dataset for a model without
    one; then --split and --limit."""
    if args.data is not None:
        ds = load_file(args.data, seed=0, test_size=0.5, label=args.label)
        index, source = np.arange(len(ds.y)), {"data": str(args.data)}
    else:
        cfg = _provenance(model)
        if cfg is not None:
            _refuse_conflicts(cfg, args)
            ds, parts = split_rows(cfg)
            source = {"dataset": ds.name, "seed": cfg["seed"], "test_size": cfg["dataset"]["test_size"],
                      "from": "the model's provenance"}
        else:
            if args.dataset is None:
                raise ValueError("this model records no data split (a converted or estimator model): "
                                 "pass --dataset NAME (with --seed, --test-size) or --data FILE")
            seed = 0 if args.seed is None else args.seed
            test_size = 0.2 if args.test_size is None else args.test_size
            ds = load_dataset(args.dataset, seed=seed, test_size=test_size)
            parts = {"train": ds.train_index, "test": ds.test_index}
            source = {"dataset": ds.name, "seed": seed, "test_size": test_size, "from": "flags"}
        index = np.arange(len(ds.y)) if args.split == "all" else parts[args.split]
        source["split"] = args.split
    if args.limit is not None:
        index = index[: args.limit]
    if ds.task != "classification":
        raise ValueError(f"{source} is a regression data set: certify and attack need a classifier")
    return Samples(ds.X[index], class_indices(model, ds.y[index]), index, source)


def class_indices(model, labels) -> np.ndarray:
    """Labels of a data set as indices into the model's classes (refused if unknown)."""
    classes = model.metadata.get("classes")
    if classes is None:
        raise ValueError("the model stores no class labels: certify and attack need a classifier")
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in np.asarray(labels).tolist()} - set(lookup))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the model's classes {classes}")
    return np.array([lookup[str(v)] for v in np.asarray(labels).tolist()], dtype=int)


def input_bounds(model, domain_flag: str | None):
    """(domain, feature range) in raw units: the domain from --domain lo,hi or the model's record
    (None when unbounded), the per-feature range from the domain if finite, else the training
    range recorded in the model (None when neither is known)."""
    record = model.metadata.get("input") or {}
    p = model.n_inputs
    if domain_flag is not None:
        try:
            lo, hi = (float(v) for v in domain_flag.split(","))
        except ValueError:
            raise ValueError(f"--domain must be 'lo,hi' in raw input units, got {domain_flag!r}") from None
        domain = (np.full(p, lo), np.full(p, hi))
    else:
        domain = bounds_arrays(record.get("domain"))
    width = None
    if domain is not None and np.all(np.isfinite(domain[1] - domain[0])):
        width = domain[1] - domain[0]
    elif record.get("train_range") is not None:
        lo, hi = bounds_arrays(record["train_range"])
        width = hi - lo
    return domain, width


def radius_scale(units: str, width) -> tuple[np.ndarray | None, str]:
    """Per-feature multipliers of ε and the words that name its unit."""
    if units == "raw":
        return None, "raw input units"
    if width is None:
        raise ValueError("--eps-units range needs each feature's range, which this model does not "
                         "record; give --domain lo,hi or use --eps-units raw")
    return np.asarray(width, dtype=float), "fraction of each feature's range"


def domain_json(domain):
    if domain is None:
        return None
    lo, hi = domain
    same = np.all(lo == lo[0]) and np.all(hi == hi[0])
    clean = lambda v: [None if not np.isfinite(x) else float(x) for x in v]  # noqa: E731
    return [clean(lo[:1])[0], clean(hi[:1])[0]] if same else {"low": clean(lo), "high": clean(hi)}


def axes_style(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Readable axes: labels, a light grid, ticks that do not crowd."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(6))


def figure(width: float = 5.5, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from ..files import atomic_write

    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a share in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (0.1 is 10%), got {text}")
    return value
