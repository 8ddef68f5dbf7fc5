"""Options shared by several fitting methods, declared once (see config.option).

Each method's options dataclass inherits the groups it uses; a group's fields carry the config
section they live in, so the YAML schema, the keyword arguments of the fit functions and the
estimators' parameters all come from these declarations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..activations import ActivationMap, get_activation
from ..config import option
from ..model import ImplicitModel
from ..parallel import BACKENDS, DATA_BACKENDS
from .objective import LOSSES


def _check_activation(spec):
    """An activation spec a model accepts: a name, a dict, an Activation or per-block pairs."""
    if isinstance(spec, (list, tuple)):
        ActivationMap.build(spec, sum(int(size) for _, size in spec))
    else:
        get_activation(spec)
    return spec


def _check_init(init):
    """'random', 'data', an ImplicitModel, or the path of an existing model file."""
    if init in ("random", "data") or isinstance(init, ImplicitModel):
        return init
    if isinstance(init, (str, os.PathLike)):
        if not os.path.isfile(init):
            raise ValueError(f"{str(init)!r} is neither 'random', 'data' nor an existing model file")
        return init
    raise ValueError(f"init must be 'random', 'data', a model file or an ImplicitModel, got "
                     f"{type(init).__name__}")


def _check_callable(fn):
    if fn is not None and not callable(fn):
        raise ValueError(f"expected a function (w, row) → (penalty, constraints), got {fn!r}")
    return fn


@dataclass
class StateModelOptions:
    """The model a data-driven method (adjoint, fenchel, gradient) learns, and its loss."""

    n_states: int | None = option(64, low=1, nullable=True, section="model", estimator="n_states",
                                  help="number of hidden states n (null: the init model's)")
    kappa: float = option(0.95, low=0, high=1, open_low=True, open_high=True, section="model",
                          estimator="kappa", help="well-posedness constraint ‖A‖_∞ ≤ κ < 1")
    include_D: bool = option(True, section="model", estimator="include_D",
                             help="fit the direct input–output path D (False: D = 0)")
    init: object = option("random", kind="any", section="model", check_value=_check_init,
                          help="initial model: random | data (biases placed inside the data) | "
                               "path to a saved model")
    activation: object = option("relu", kind="any", section="model", check_value=_check_activation,
                                help="activation φ: relu, leaky_relu, tanh, sigmoid, identity")
    loss: str | None = option(None, kind="str", choices=LOSSES, section="top", estimator="loss",
                              help="training loss (default: cross_entropy for classification, "
                                   "squared for regression)")


@dataclass
class RowParallelOptions:
    """Where the row problems of the convex steps run."""

    n_jobs: int = option(1, low=1, section="run", help="worker processes for the row problems")
    backend: str = option("serial", choices=BACKENDS, section="run",
                          help="serial | loky (joblib processes) | dask (LocalCluster or address)")
    address: str | None = option(None, kind="str", section="run",
                                 help="dask scheduler address (default: a LocalCluster)")


@dataclass
class CertifiedStepOptions:
    """What happens when a convex step cannot be certified to its tolerance."""

    accept_uncertified: bool = option(
        False, section="run",
        help="continue when a convex step cannot be certified (default: stop with an error); "
             "the history and the report then list every such step and its gap")


@dataclass
class LoopOptions:
    """Early stopping of an iterative method on validation data (owned by the driver)."""

    early_stopping: bool = option(False, section="run", estimator="early_stopping",
                                  help="stop when the validation loss has not improved for "
                                       "`patience` iterations and return the best model")
    patience: int = option(10, low=1, section="run", help="iterations without improvement")


@dataclass
class PartitionOptions:
    """Where the samples live and where their per-sample work (states, equilibria, adjoints, Gram
    and loss sums) runs: in this process, or on a dask.distributed cluster in row partitions."""

    data_backend: str = option("memory", choices=DATA_BACKENDS, section="run",
                               help="memory (this process) | dask (per-partition work on a "
                                    "LocalCluster of `workers` processes, or at run.address)")
    partitions: int | None = option(None, kind="int", low=1, section="run",
                                    help="row partitions of the training data (null: an array "
                                         "in memory is one; on dask, or for files, partitions "
                                         "of ≤ 65,536 rows, at least one per worker)")
    workers: int = option(2, low=1, section="run",
                          help="dask LocalCluster worker processes (one thread each)")
