"""One entry point for every fitting method: a validated config in, a model and its report out.

Used by `implicit-cvx fit CONFIG --out DIR` and by the experiment scripts. A config names a
method; its schema is generated from that method's registered options (train/registry.py), so a
key the method does not read is refused by name.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import ConfigError, Field, load_yaml, option_specs, validate
from ..data import load_dataset
from ..files import OutputDirectory
from ..numerics import predicted_labels
from ..report import base_report, model_fields, write_report
from .init import unfold_saved_init
from .registry import METHODS, get_method
from .runlog import RunLog

DEFAULT_METHOD = "adjoint"

DATASET = {
    "name": Field("str", "digits", help="built-in name or path to .npz/.csv"),
    "test_size": Field("float", 0.2, low=0, high=1, open_low=True, open_high=True,
                       help="share of the data held out for testing"),
    "label": Field("str", None, help="label column of a .csv"),
    "path": Field("str", None, help="local copy of a built-in data set (mnist: mnist.npz or its "
                                    "directory; default $IMPLICIT_CVX_DATA)"),
    "validation_fraction": Field("float", 0.0, low=0, high=0.5, open_high=True,
                                 help="share of the training rows held out for validation"),
    "max_train": Field("int", None, low=2, help="use only this many training samples (seeded)"),
}
CHECKPOINT_EVERY = Field("int", 5, low=1, help="checkpoint every this many outer iterations")


def config_schema(method: str) -> dict:
    """The YAML schema of a config for `method`: top-level keys, dataset, and the sections its
    options live in (model, run, the method's own)."""
    cls = get_method(method)
    schema = {"method": Field("str", DEFAULT_METHOD, choices=tuple(METHODS), help="fitting method"),
              "seed": Field("int", 0, low=0, help="seed of the split, the init and every draw"),
              "dataset": dict(DATASET)}
    for spec in option_specs(cls.Options):
        if spec.section == "python":
            continue
        section = schema if spec.section == "top" else schema.setdefault(spec.section or method, {})
        section[spec.name] = spec.field
    if cls.iterative:
        schema.setdefault("run", {})["checkpoint_every"] = CHECKPOINT_EVERY
    return schema


def _unused_key_error(raw: dict, method: str, schema: dict) -> None:
    """A clear error for a key that another method reads but `method` does not."""
    others = {name: config_schema(name) for name in METHODS if name != method}
    for key, value in raw.items():
        inner = schema.get(key)
        if key not in schema and any(key in o for o in others.values()):
            raise ConfigError(f"config section/key {key!r} is not used by method {method!r}; remove it")
        if isinstance(value, dict) and isinstance(inner, dict):
            for sub in value:
                if sub not in inner and any(sub in o.get(key, {}) for o in others.values()):
                    raise ConfigError(f"config key '{key}.{sub}' is not used by method {method!r}; "
                                      "remove it")


def load_config(path) -> dict:
    """A validated config with defaults filled in (errors name the file and the key)."""
    raw = load_yaml(path)
    try:
        method = raw.get("method", DEFAULT_METHOD)
        if not isinstance(method, str) or method not in METHODS:
            raise ConfigError(f"config key 'method': value {method!r} is not allowed; allowed: "
                              f"one of {', '.join(repr(m) for m in METHODS)}")
        schema = config_schema(method)
        _unused_key_error(raw, method, schema)
        cfg = validate(raw, schema)
        if method == "sim" and cfg["dataset"]["validation_fraction"] > 0:
            raise ConfigError("config key 'dataset.validation_fraction' is not used by method "
                              "'sim' (it has no iterations to validate); remove it")
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def method_options(cfg: dict) -> dict:
    """The keyword options of the config's method, gathered from their sections."""
    method = cfg["method"]
    out = {}
    for spec in option_specs(get_method(method).Options):
        if spec.section == "python":
            continue
        section = cfg if spec.section == "top" else cfg[spec.section or method]
        out[spec.name] = section[spec.name]
    return out


def split_rows(cfg: dict):
    """The dataset of a config and the row indices of its parts as the fit used them: "train"
    (after max_train and the validation hold-out), "validation" and "test"."""
    data = cfg["dataset"]
    ds = load_dataset(data["name"], seed=cfg["seed"], test_size=data["test_size"], label=data["label"],
                      path=data["path"])
    train = ds.train_index
    rng = np.random.default_rng(cfg["seed"])
    if data["max_train"] is not None and data["max_train"] < len(train):
        train = train[np.sort(rng.permutation(len(train))[: data["max_train"]])]
    validation = train[:0]
    if data["validation_fraction"] > 0:
        perm = rng.permutation(len(train))
        nv = max(1, int(round(data["validation_fraction"] * len(train))))
        train, validation = train[perm[nv:]], train[perm[:nv]]
    return ds, {"train": train, "validation": validation, "test": ds.test_index}


def test_metrics(model, U, y, task: str) -> dict:
    """Test accuracy or RMSE of a fitted model."""
    pred = model.predict(U)
    if task == "classification":
        return {"test_accuracy": float(np.mean(predicted_labels(pred) == y))}
    return {"test_rmse": float(np.sqrt(np.mean((pred.reshape(np.shape(y)) - y) ** 2)))}


RUN_ARTIFACTS = ("model.npz", "report.json", "A_sparsity.png", "history.jsonl", "LATEST",
                 "run.json", "ckpt_*")  # what --overwrite removes from an output directory


def run_fit(cfg: dict, out_dir, *, config_path=None, resume=False, overwrite=False, progress=True):
    """Fit the model a validated config describes; write model.npz, report.json, A's sparsity plot.

    The output directory is locked while the fit runs; a non-empty one is refused unless
    `resume` (continue the run in it, with the same config) or `overwrite`. The report shows the
    fit's own summary (train metrics, residual, gaps) — nothing is re-solved — plus the test
    metrics of the saved model."""
    with OutputDirectory(out_dir, fresh=True, resume=resume, overwrite=overwrite,
                         owned=RUN_ARTIFACTS) as out:
        return _run_fit(cfg, out.path, config_path, resume, overwrite, progress)


def _run_fit(cfg, out: Path, config_path, resume, overwrite, progress):
    t0 = time.perf_counter()
    method = cfg["method"]
    ds, rows = split_rows(cfg)
    U, y = ds.rows(rows["train"])
    U_val, y_val = ds.rows(rows["validation"]) if rows["validation"].size else (None, None)
    U_test, y_test = ds.rows(rows["test"], raw=True)
    phases = {"data": time.perf_counter() - t0}
    options = method_options(cfg)
    if method == "sim":
        options.update(U_test=ds.transform.apply(U_test), Y_test=y_test)
    elif "init" in options:
        options["init"] = unfold_saved_init(options["init"], ds.transform)
    run = None if method == "sim" else RunLog(out, checkpoint_every=cfg["run"]["checkpoint_every"],
                                              resume=resume, overwrite=overwrite, config=cfg)
    result = get_method(method).fit(U, y, task=ds.task, seed=cfg["seed"], U_val=U_val, Y_val=y_val,
                                    run=run, progress=progress, **options)
    phases["fit"] = time.perf_counter() - t0 - phases["data"]
    model = ds.fold(result.model)  # fitted on transformed inputs; saved to take raw inputs
    model.metadata.update(
        method=method, kappa=options["kappa"], classes=ds.classes, task=ds.task, dataset=ds.name,
        provenance={"config": cfg, "config_path": str(config_path) if config_path else None,
                    "seed": cfg["seed"]},
    )
    model.save(out / "model.npz")
    report = base_report("fit", method=method, task=ds.task, dataset=ds.name, seed=cfg["seed"],
                         config=cfg)
    report.update(model_fields(model))
    report.update({k: v for k, v in result.summary.items() if v is not None or k not in report})
    report.update(test_metrics(model, U_test, y_test, ds.task))
    report["notes"] = run.notes if run is not None else []
    t_plot = time.perf_counter()
    plot_sparsity(model, out / "A_sparsity.png")
    phases["report"] = time.perf_counter() - t_plot
    report["seconds"] = time.perf_counter() - t0
    report["seconds_by_phase"] = {**result.summary.get("seconds_by_phase", {}), **phases}
    write_report(out, report)
    return model, report


def plot_sparsity(model, path) -> None:
    """A picture of A's nonzero pattern (and B's), the architecture a fit found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scipy.sparse as sp

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5),
                             gridspec_kw={"width_ratios": [model.n_states, max(model.n_inputs, 1)]})
    for ax, M, name in zip(axes, (model.A, model.B), ("A", "B"), strict=True):
        dense = M.toarray() if sp.issparse(M) else M
        ax.spy(dense, markersize=1.5, aspect="auto")
        ax.set_title(f"{name}: {np.count_nonzero(dense)} nonzeros of {dense.size}")
        ax.set_xlabel("input" if name == "B" else "state j")
        ax.set_ylabel("state i")
    fig.suptitle(f"sparsity pattern, ‖A‖_∞ = {np.abs(model.A).sum(axis=1).max():.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
