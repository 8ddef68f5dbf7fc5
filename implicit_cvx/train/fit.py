"""One entry point for every fitting method: a validated config in, a model and its report out.

Used by `implicit-cvx fit CONFIG --out DIR` and by the experiment scripts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import ConfigError, Field, load_yaml, validate
from .init import unfold_saved_init
from .objective import metrics

METHODS = ("sim", "adjoint", "fenchel", "gradient")

SCHEMA = {
    "method": Field("str", "adjoint", choices=METHODS, help="fitting method"),
    "seed": Field("int", 0, low=0),
    "dataset": {
        "name": Field("str", "digits", help="built-in name or path to .npz/.csv"),
        "test_size": Field("float", 0.2, low=0, high=1, open_low=True, open_high=True),
        "label": Field("str", None, help="label column of a .csv"),
        "validation_fraction": Field("float", 0.0, low=0, high=0.5, open_high=True),
        "max_train": Field("int", None, low=2, help="use only this many training samples (seeded)"),
    },
    "model": {
        "n_states": Field("int", 64, low=1),
        "init": Field("str", "random",
                      help="random | data (biases placed inside the data) | path to a saved model"),
        "kappa": Field("float", 0.95, low=0, high=1, open_low=True, open_high=True),
        "activation": Field("str", "relu", choices=("relu", "leaky_relu", "tanh", "sigmoid", "identity")),
        "include_D": Field("bool", True, help="direct input-output path D"),
    },
    "loss": Field("str", None, choices=("squared", "cross_entropy", "hinge")),
    "sim": {
        "teacher_hidden": Field("any", [64, 32], help="hidden layer sizes of the MLP teacher"),
        "teacher_max_iter": Field("int", 300, low=1),
        "formulation": Field("str", "l1", choices=("l1", "elastic_net", "equality", "robust", "group_lasso")),
        "lam": Field("float", 1e-3, low=0),
        "l2": Field("float", 0.0, low=0),
        "beta": Field("float", None, low=0, open_low=True),
        "gamma": Field("float", None, low=0, open_low=True),
        "group_lam": Field("float", 0.0, low=0),
        "solver": Field("str", "native", choices=("native", "SCS", "CLARABEL")),
        "threshold": Field("float", 1e-8, low=0),
        "chunk_size": Field("int", None, low=1),
        "tol": Field("float", 1e-9, low=0, open_low=True),
    },
    "adjoint": {
        "max_outer": Field("int", 50, low=1),
        "batch_size": Field("int", None, low=2, help="rows per outer iteration (None: full batch)"),
        "eta": Field("float", 1.0, low=0, open_low=True),
        "anchor_mu": Field("float", 1e-2, low=0, open_low=True),
        "lam_l1": Field("float", 0.0, low=0),
        "lam_l2": Field("float", 0.0, low=0),
        "tol": Field("float", 1e-9, low=0, open_low=True),
    },
    "fenchel": {
        "max_outer": Field("int", 30, low=1),
        "lam": Field("float", 1.0, low=0, open_low=True),
        "lam_growth": Field("float", 1.5, low=1),
        "rho": Field("float", 1.0, low=0, open_low=True),
        "tol": Field("float", 1e-9, low=0, open_low=True),
    },
    "gradient": {
        "lr": Field("float", 3e-3, low=0, open_low=True),
        "epochs": Field("int", 200, low=1),
        "batch_size": Field("int", None, low=1),
        "lam_l2": Field("float", 0.0, low=0),
    },
    "run": {
        "n_jobs": Field("int", 1, low=1),
        "backend": Field("str", "serial", choices=("serial", "loky", "dask")),
        "address": Field("str", None, help="dask scheduler address (else a LocalCluster)"),
        "checkpoint_every": Field("int", 5, low=1),
        "early_stopping": Field("bool", False),
        "patience": Field("int", 10, low=1),
    },
}


def load_config(path) -> dict:
    """A validated config with defaults filled in."""
    raw = load_yaml(path)
    try:
        return validate(raw, SCHEMA)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _teacher(cfg, ds, U, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    hidden = cfg["sim"]["teacher_hidden"]
    if not (isinstance(hidden, list) and hidden and all(isinstance(h, int) and h > 0 for h in hidden)):
        raise ConfigError(f"config key 'sim.teacher_hidden': value {hidden!r} is not allowed; "
                          "allowed: a list of positive integers")
    cls = MLPClassifier if ds.task == "classification" else MLPRegressor
    est = cls(hidden_layer_sizes=tuple(hidden), max_iter=cfg["sim"]["teacher_max_iter"],
              random_state=cfg["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(U, y)
    return est


def _method_kwargs(cfg: dict, ds, U, y) -> dict:
    method, model_cfg, run_cfg = cfg["method"], cfg["model"], cfg["run"]
    common = dict(task=ds.task, seed=cfg["seed"])
    if method in ("sim", "fenchel") and model_cfg["activation"] != "relu":
        raise ConfigError(f"config key 'model.activation': value {model_cfg['activation']!r} is not "
                          f"allowed with method {method!r}; allowed: 'relu' (use adjoint or gradient)")
    if method == "sim":
        if model_cfg["init"] != "random":
            raise ConfigError("config key 'model.init' is not used by method 'sim' (the teacher "
                              "gives the states); remove it")
        s = dict(cfg["sim"])
        teacher = _teacher(cfg, ds, U, y)
        s.pop("teacher_hidden"), s.pop("teacher_max_iter")
        return dict(common, teacher=teacher, kappa=model_cfg["kappa"],
                    include_D=model_cfg["include_D"], n_jobs=run_cfg["n_jobs"],
                    backend=run_cfg["backend"], address=run_cfg["address"], **s)
    kwargs = dict(common, n_states=model_cfg["n_states"], kappa=model_cfg["kappa"],
                  include_D=model_cfg["include_D"], init=unfold_saved_init(model_cfg["init"], ds.transform),
                  loss=cfg["loss"], **cfg[method])
    if method in ("adjoint", "fenchel") and run_cfg["backend"] != "serial":
        kwargs.update(n_jobs=run_cfg["n_jobs"], backend=run_cfg["backend"])
    if method in ("adjoint", "gradient"):
        kwargs.update(activation=model_cfg["activation"], early_stopping=run_cfg["early_stopping"],
                      patience=run_cfg["patience"])
    return kwargs


def _fitter(method: str):
    if method == "sim":
        from .sim import fit_sim as f
    elif method == "adjoint":
        from .adjoint import fit_adjoint as f
    elif method == "fenchel":
        from .fenchel import fit_fenchel as f
    else:
        from .gradient import fit_gradient as f
    return f


def _metrics(model, U, y, task, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics(task, model.predict(U), y).items()}


def run_fit(cfg: dict, out_dir, *, config_path=None, resume=False, progress=True):
    """Fit the model a validated config describes; write model.npz, report.json, A's sparsity plot."""
    from ..data import load_dataset
    from ..report import base_report, model_fields, write_report
    from .runlog import RunLog

    t0 = time.perf_counter()
    phases = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(cfg["dataset"]["name"], seed=cfg["seed"], test_size=cfg["dataset"]["test_size"],
                      label=cfg["dataset"]["label"])
    U, y = ds.split("train")
    U_test, y_test = ds.split("test")
    rng = np.random.default_rng(cfg["seed"])
    if cfg["dataset"]["max_train"] is not None and cfg["dataset"]["max_train"] < len(U):
        keep = np.sort(rng.permutation(len(U))[: cfg["dataset"]["max_train"]])
        U, y = U[keep], y[keep]
    val = {}
    frac = cfg["dataset"]["validation_fraction"]
    if frac > 0 and cfg["method"] != "sim":
        perm = rng.permutation(len(U))
        nv = max(1, int(round(frac * len(U))))
        val = {"U_val": U[perm[:nv]], "Y_val": y[perm[:nv]]}
        U, y = U[perm[nv:]], y[perm[nv:]]
    phases["data"] = time.perf_counter() - t0

    method = cfg["method"]
    kwargs = _method_kwargs(cfg, ds, U, y)
    phases["teacher"] = time.perf_counter() - t0 - phases["data"] if method == "sim" else 0.0
    if method == "sim":
        kwargs.update(U_test=U_test, Y_test=y_test)
        result = _fitter(method)(U, y, progress=progress, **kwargs)
    else:
        run = RunLog(out, checkpoint_every=cfg["run"]["checkpoint_every"], resume=resume)
        result = _fitter(method)(U, y, run=run, progress=progress, **kwargs, **val)
    t_fit = time.perf_counter()
    model = ds.fold(result.model)  # fitted on transformed inputs; saved to take raw inputs
    U, U_test = ds.transform.invert(U), ds.transform.invert(U_test)
    model.metadata.update(
        method=method, kappa=cfg["model"]["kappa"], classes=ds.classes, task=ds.task,
        dataset=ds.name,
        provenance={"config": cfg, "config_path": str(config_path) if config_path else None,
                    "seed": cfg["seed"]},
    )
    model.save(out / "model.npz")

    report = base_report("fit", method=method, task=ds.task, dataset=ds.name, seed=cfg["seed"],
                         config=cfg)
    report.update(model_fields(model, U))
    report.update(_metrics(model, U, y, ds.task, "train"))
    report.update(_metrics(model, U_test, y_test, ds.task, "test"))
    report.update({k: v for k, v in result.summary.items() if k not in report or report[k] is None})
    phases["fit"] = t_fit - t0 - sum(phases.values())
    plot_sparsity(model, out / "A_sparsity.png")
    phases["report"] = time.perf_counter() - t_fit
    report["seconds"] = time.perf_counter() - t0
    report["seconds_by_phase"] = {**result.summary.get("seconds_by_phase", {}), **phases}
    write_report(out, report)
    return model, report


def plot_sparsity(model, path) -> None:
    """A picture of A's nonzero pattern (and B's), the architecture SIM found."""
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
    fig.suptitle(f"sparsity pattern, ‖A‖_∞ = {np.abs(model.A).sum(axis=1).max():.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
