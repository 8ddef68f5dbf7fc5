"""The fitting protocol and the one driver that runs every fitting method.

A method is a small class with three verbs over a serializable state:
    start(rng) → state,   step(state) → (state, record, stop),   finish(state, model) → FitResult.
The driver owns everything around them, identically for every method: option validation, data
validation, the outer loop, history records (iteration, seconds), validation metrics and early
stopping (the best model on validation data), atomic checkpoints and resume, progress, timing,
and the list of uncertified steps a fit was allowed to continue past.

A state is a dataclass: a field `model` (the current ImplicitModel), a field `rng` (the one
Generator all randomness comes from), and any other fields — ImplicitModels, numpy arrays, or
JSON values. That convention is all the driver needs to checkpoint and restore it exactly.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..config import make_options, option_specs
from ..model import ImplicitModel
from ..numerics import check_rows
from ..partitions import is_partitioned
from .init import as_generator
from .objective import check_task, default_loss, evaluate, prepare_data
from .runlog import EarlyStopping, progress_bar, restore_rng, rng_state


@dataclass
class FitResult:
    """What every fitting method returns: the model, one history record per outer iteration, and
    the summary a report shows (train_loss, outer_iterations, max_duality_gap, metrics…)."""

    model: ImplicitModel
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass
class FitData:
    """Validated training (and optional validation) data in the loss's form."""

    U: np.ndarray
    Y: np.ndarray
    task: str
    loss: str
    n_outputs: int
    U_val: np.ndarray | None = None
    Y_val: np.ndarray | None = None

    @classmethod
    def prepare(cls, U, Y, task, loss, U_val=None, Y_val=None) -> FitData:
        U, Y, loss, q, U_val, Y_val = prepare_data(U, Y, task, loss, U_val, Y_val)
        return cls(U, Y, task, loss, q, U_val, Y_val)


@dataclass
class Step:
    """The outcome of one outer iteration."""

    state: object
    record: dict
    stop: bool = False


class FitMethod:
    """Base of the fitting methods: subclasses set `name`, `Options`, `State` and implement
    `start`, `step` and `finish`; `max_steps` is the number of outer iterations allowed."""

    name: ClassVar[str]
    Options: ClassVar[type]
    State: ClassVar[type]
    needs_targets: ClassVar[bool] = True  # False: Y may be None (a teacher supplies the targets)
    iterative: ClassVar[bool] = True  # False: one step, nothing to checkpoint or validate

    def __init__(self, options, data: FitData, seed=None, progress: bool = False):
        self.opts, self.data, self.seed, self.progress = options, data, seed, progress

    @property
    def max_steps(self) -> int:
        raise NotImplementedError

    def start(self, rng: np.random.Generator):
        raise NotImplementedError

    def step(self, state) -> Step:
        raise NotImplementedError

    def finish(self, state, model: ImplicitModel) -> FitResult:
        raise NotImplementedError

    @classmethod
    def fit(cls, U, Y=None, **kwargs) -> FitResult:
        """Fit this method: see `fit` (the module function)."""
        return fit(cls, U, Y, **kwargs)


class AlternatingMethod(FitMethod):
    """A method of alternating certified convex steps (adjoint, fenchel): `max_outer` outer
    iterations, ℓ1/ℓ2 penalties, row problems on `n_jobs` workers, uncertified steps refused
    unless `accept_uncertified`."""

    @property
    def max_steps(self) -> int:
        return self.opts.max_outer

    @property
    def penalties(self) -> tuple:
        return self.opts.lam_l1, self.opts.lam_l2

    def solver_kw(self) -> dict:
        o = self.opts
        return dict(n_jobs=o.n_jobs, backend=o.backend, address=o.address,
                    accept_uncertified=o.accept_uncertified)


# ---- state checkpoints ---------------------------------------------------------------------------
def pack_state(state) -> tuple[ImplicitModel, dict, dict, dict]:
    """(model, JSON fields, arrays, other models) of a state dataclass, for RunLog.checkpoint."""
    values, arrays, models = {}, {}, {}
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        if f.name == "model":
            continue
        if isinstance(v, ImplicitModel):
            models[f.name] = v
        elif isinstance(v, np.ndarray):
            arrays[f.name] = v
        elif isinstance(v, np.random.Generator):
            values[f.name] = {"__rng__": rng_state(v)}
        else:
            values[f.name] = v
    return state.model, values, arrays, models


def unpack_state(cls, model: ImplicitModel, values: dict, arrays: dict, models: dict):
    """The state dataclass `cls` back from what pack_state produced."""
    kwargs = {"model": model}
    for f in dataclasses.fields(cls):
        if f.name == "model":
            continue
        if f.name in models:
            kwargs[f.name] = models[f.name]
        elif f.name in arrays:
            kwargs[f.name] = arrays[f.name].copy()
        elif isinstance(values.get(f.name), dict) and "__rng__" in values[f.name]:
            kwargs[f.name] = restore_rng(values[f.name]["__rng__"])
        else:
            kwargs[f.name] = values.get(f.name)
    return cls(**kwargs)


# ---- the driver -------------------------------------------------------------------------------------
@dataclass
class _Loop:
    """The driver's own resumable state: elapsed time, early stopping, the best validation model."""

    start: int = 0
    elapsed: float = 0.0
    stopper: EarlyStopping | None = None
    best: ImplicitModel | None = None

    def to_json(self) -> dict:
        return {"elapsed": self.elapsed,
                "early_stopping": None if self.stopper is None else self.stopper.state()}


def _restore(method: FitMethod, run, loop: _Loop):
    """The method's state and the driver's loop state from the run's latest checkpoint."""
    ck = run.resumed
    driver = ck.state.pop("__driver__")
    loop.start, loop.elapsed = ck.iteration + 1, driver["elapsed"]
    if loop.stopper is not None and driver["early_stopping"] is not None:
        loop.stopper.load_state(driver["early_stopping"])
    loop.best = ck.models.pop("__best__", None)
    return unpack_state(method.State, ck.model, ck.state, ck.arrays, ck.models)


def _validate(method: FitMethod, model, loop: _Loop, iteration: int) -> dict:
    """Validation metrics of the current model; tracks the best one and early stopping."""
    d = method.data
    rec, _ = evaluate(model, d.U_val, d.Y_val, d.task, d.loss, tol=1e-12, prefix="val")
    if loop.stopper is not None and loop.stopper.update(rec["val_loss"], iteration):
        loop.best = model
    return rec


def drive(method: FitMethod, rng, *, run=None, progress: bool = False) -> FitResult:
    """Run `method` to completion: the outer loop with history, validation, early stopping,
    checkpoints every `run.checkpoint_every` iterations (and at the end), resume from `run`."""
    t0 = time.perf_counter()
    opts, data = method.opts, method.data
    early = getattr(opts, "early_stopping", False) and data.U_val is not None
    loop = _Loop(stopper=EarlyStopping(getattr(opts, "patience", 10)) if early else None)
    resumed = run is not None and run.resumed is not None
    state = _restore(method, run, loop) if resumed else method.start(as_generator(rng))
    history = run.history() if resumed else []
    bar = progress_bar(method.max_steps, progress, desc=method.name, initial=loop.start)
    it = logged = saved = loop.start - 1
    done = None  # (iteration, state, record) of the last completed iteration
    try:
        for it in range(loop.start, method.max_steps):
            t_it = time.perf_counter()
            outcome = method.step(state)
            rec = {"iteration": it, **outcome.record}
            if data.U_val is not None:
                rec.update(_validate(method, outcome.state.model, loop, it))
            rec["seconds"] = loop.elapsed + time.perf_counter() - t0
            rec["iteration_seconds"] = time.perf_counter() - t_it
            done = (it, outcome.state, rec)
            state = outcome.state
            history.append(rec)
            bar.update(rec)
            stop = outcome.stop or (loop.stopper is not None and loop.stopper.should_stop)
            stop = stop or it == method.max_steps - 1
            if run is not None:
                run.log(rec)
                logged = it
                if run.due(it, final=stop):
                    _checkpoint(run, it, state, loop, rec["seconds"])
                    saved = it
            if stop:
                break
    except KeyboardInterrupt:  # keep the last completed iteration: the run resumes from it
        if run is not None and done is not None and done[0] > saved:
            if done[0] > logged:
                run.log(done[2])
            _checkpoint(run, done[0], done[1], loop, done[2]["seconds"])
        raise
    finally:
        bar.close()
    result = method.finish(state, loop.best if loop.best is not None else state.model)
    result.history = history
    _summarize(result, history, it + 1, loop.elapsed + time.perf_counter() - t0)
    return result


def _checkpoint(run, iteration: int, state, loop: _Loop, seconds: float) -> None:
    model, values, arrays, models = pack_state(state)
    values["__driver__"] = {**loop.to_json(), "elapsed": seconds}  # loop.elapsed: earlier runs only
    if loop.best is not None:
        models["__best__"] = loop.best
    run.checkpoint(iteration, model, values, arrays, models)


def _summarize(result: FitResult, history: list, outer: int, seconds: float) -> None:
    """Driver-owned summary keys: iterations, time, the largest duality gap of any step, and the
    uncertified steps a fit was allowed to continue past."""
    summary = result.summary
    summary.setdefault("outer_iterations", outer)
    summary["seconds"] = seconds
    gaps = [r["max_duality_gap"] for r in history if r.get("max_duality_gap") is not None]
    if summary.get("max_duality_gap") is not None:
        gaps.append(summary["max_duality_gap"])
    summary["max_duality_gap"] = float(max(gaps)) if gaps else None
    uncertified = [dict(iteration=r["iteration"], **u) for r in history for u in r.get("uncertified", [])]
    summary["uncertified_steps"] = uncertified + summary.pop("final_uncertified", [])
    if history and "val_loss" in history[-1]:
        best = min(history, key=lambda r: r["val_loss"])
        summary.update(best_val_iteration=best["iteration"], best_val_loss=best["val_loss"])


# ---- one fit function per method --------------------------------------------------------------------
def fit(method_cls, U, Y=None, *, task: str, seed=0, U_val=None, Y_val=None, run=None,
        progress: bool = False, **options) -> FitResult:
    """Validate the options and the data, then drive `method_cls` (a FitMethod subclass)."""
    opts = make_options(method_cls.Options, options, where=f"method {method_cls.name!r}")
    if is_partitioned(U):  # files, shards, a dask array: validated per partition where it loads
        if not hasattr(opts, "data_backend"):
            raise ValueError(f"method {method_cls.name!r} needs the samples in memory as arrays; "
                             "files, shards, dask arrays and Parts are read by sim and adjoint")
        data = FitData(U, Y, check_task(task), getattr(opts, "loss", None) or default_loss(task), 0)
    elif Y is None:
        if method_cls.needs_targets:
            raise ValueError(f"method {method_cls.name!r} fits targets: pass Y (labels or values)")
        data = FitData(check_rows("U", U), None, check_task(task), None, 0)
    else:
        data = FitData.prepare(U, Y, task, getattr(opts, "loss", None), U_val, Y_val)
    return drive(method_cls(opts, data, seed, progress), seed, run=run, progress=progress)


_TYPES = {"int": "int", "float": "float", "bool": "bool", "str": "str", "floats": "list of float",
          "ints": "list of int", "any": "object"}

_FIT_PARAMETERS = """U : array_like, shape (m, p)
    Training inputs, one row per sample (methods with a ``data_backend`` option also take
    files, shard directories and dask arrays, as `implicit_cvx.partitions.partition` does).
Y : array_like, shape (m,) or (m, q), optional
    Targets: labels 0..K−1 for classification, values for regression.
task : str
    "classification" or "regression"; it sets the default loss.
seed : int, default=0
    Seed of the one random generator every random draw of the fit comes from.
U_val, Y_val : array_like, optional
    Validation data: metrics in the history, and early stopping where the method has it.
run : RunLog, optional
    Where to log the history and checkpoints, and to resume from
    (`implicit_cvx.train.runlog.RunLog`).
progress : bool, default=False
    Show a progress bar (one line per outer iteration when not on a terminal)."""

_FIT_RETURNS = """Returns
-------
FitResult
    ``model`` (the fitted ImplicitModel), ``history`` (one record per outer iteration) and
    ``summary`` (train loss, duality gaps, ‖A‖_∞, uncertified steps, ...).

Raises
------
ConfigError
    If an option is unknown or outside its allowed values, naming it.
ValueError
    If the data are invalid (shapes, NaN, labels).
RowFitError
    If a convex step cannot be certified to its tolerance (unless ``accept_uncertified``)."""

# Quick settings of the generated example: the options the estimators map to these parameters.
_QUICK = {"max_iter": 3, "n_states": 8}


def _option_doc(spec) -> str:
    """One numpydoc Parameters entry from an option's declaration (kind, default, help)."""
    f = spec.field
    if f.choices:  # numpydoc reads the first choice as the default: list the default first
        choices = ([None] if f.default is None else []) + sorted(f.choices, key=lambda c: c != f.default)
        kind = "{" + ", ".join(repr(c) for c in choices) + "}"
    else:
        kind = _TYPES[f.kind] + (" or None" if (f.default is None or f.nullable) and f.kind != "any" else "")
    help_ = f.help.replace("null", "None") or "See the user guide"
    help_ = help_[0].upper() + help_[1:] + ("" if help_.endswith((".", ")")) else ".")
    text = textwrap.fill(help_, 88, initial_indent="    ", subsequent_indent="    ")
    return f"{spec.name} : {kind}, default={f.default!r}\n{text}"


def _example(name: str, specs) -> str:
    """A doctest fitting a tiny regression with `fit_<name>` (few iterations, few states)."""
    quick = "".join(f", {s.name}={_QUICK[s.estimator]}" for s in specs if s.estimator in _QUICK)
    return f"""Examples
--------
>>> import numpy as np
>>> from implicit_cvx.train.{name} import fit_{name}
>>> rng = np.random.default_rng(0)
>>> U = rng.uniform(-1, 1, (40, 3))
>>> Y = np.sin(U).sum(axis=1, keepdims=True)
>>> result = fit_{name}(U, Y, task="regression", seed=0{quick})
>>> result.model.n_inputs, result.model.n_outputs
(3, 1)
>>> result.summary["inf_norm_A"] <= result.summary["kappa"], result.summary["uncertified_steps"]
(True, [])"""


def fit_doc(method_cls) -> str:
    """The numpydoc docstring of `fit_<name>`: the method's own docstring, then Parameters (the
    common ones and one per declared option, from its help text), Returns, Raises, Examples."""
    specs = option_specs(method_cls.Options)
    summary = inspect.cleandoc(method_cls.__doc__ or f"Fit with the {method_cls.name!r} method.")
    options = "\n".join(_option_doc(s) for s in specs)
    return (f"{summary}\n\nParameters\n----------\n{_FIT_PARAMETERS}\n{options}\n\n{_FIT_RETURNS}"
            f"\n\n{_example(method_cls.name, specs)}\n")


def fit_function(method_cls):
    """`fit_<name>(U, Y, *, task, seed, U_val, Y_val, run, progress, **options)` for a method,
    with a signature listing every option and its default and a numpydoc docstring (for help(),
    IDEs and the API reference)."""

    def fit_method(U, Y=None, *, task, seed=0, U_val=None, Y_val=None, run=None, progress=False,
                   **options) -> FitResult:
        return fit(method_cls, U, Y, task=task, seed=seed, U_val=U_val, Y_val=Y_val, run=run,
                   progress=progress, **options)

    base = list(inspect.signature(fit_method).parameters.values())[:-1]
    extra = [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.field.default)
             for s in option_specs(method_cls.Options)]
    fit_method.__signature__ = inspect.Signature(base + extra)
    fit_method.__name__ = fit_method.__qualname__ = f"fit_{method_cls.name}"
    fit_method.__doc__ = fit_doc(method_cls)
    return fit_method
