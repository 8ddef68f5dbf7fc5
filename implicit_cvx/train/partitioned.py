"""Training samples in row partitions on a Cluster: the one path of the data-parallel fits.

Every per-sample quantity a fit needs (teacher states, equilibria, adjoints, Gram statistics,
losses, metrics) is computed per partition where the partition lives and reduced by sums in
partition order, so only d×d and d×k matrices travel. The in-memory path is the case of one
partition in this process: the same functions on the whole array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..numerics import cross_entropy, cross_entropy_grad, hinge, hinge_grad, predicted_labels
from ..parallel import Cluster
from ..partitions import Part, is_partitioned, partition
from .objective import prepare_targets

DEFAULT_PARTITION_ROWS = 65536  # dask default: partitions of at most this many rows


def open_cluster(opts) -> Cluster:
    """The Cluster of the options `run.data_backend`, `run.workers`, `run.address` (enter it)."""
    return Cluster(opts.data_backend, opts.workers, opts.address if opts.data_backend == "dask" else None)


def _rows(U) -> int | None:
    """Rows of an array, a .npy file or a dask array (None for shards and Parts)."""
    if isinstance(U, (str, Path)):
        return None if Path(U).is_dir() else int(np.load(U, mmap_mode="r").shape[0])
    return None if isinstance(U, list) else int(U.shape[0])


def load(item) -> tuple[np.ndarray, np.ndarray | None]:
    """(U_p, Y_p) of a partition handle: a Part is loaded here, loaded data is returned as is."""
    return item.load() if isinstance(item, Part) else item


@dataclass
class Samples:
    """The partitions of the training samples on a cluster: handles (Parts, loaded by every task
    — memory O(partition rows × (n + p)) per worker — or (U_p, Y_p) kept on the workers) and
    their row counts."""

    cluster: Cluster
    parts: list
    rows: list

    @classmethod
    def of(cls, cluster: Cluster, U, Y, opts, rows: int | None = None) -> Samples:
        """(U, Y) as Parts (arrays, files, dask arrays or Parts; see partitions.partition), cut
        into run.partitions parts, else parts of `rows` rows; else an array in memory is one
        part, and anything else (everything on Dask) parts of ≤ DEFAULT_PARTITION_ROWS rows,
        at least one per worker. Shard directories and Parts keep their own partitions."""
        if opts.partitions is None and rows is None and (opts.data_backend == "dask"
                                                         or is_partitioned(U)):
            m = _rows(U)
            workers = opts.workers if opts.data_backend == "dask" else 1
            rows = min(DEFAULT_PARTITION_ROWS, math.ceil(m / workers)) if m else None
        parts = partition(U, Y, partitions=None if rows else opts.partitions, rows=rows)
        return cls(cluster, parts, [p.rows for p in parts])

    @property
    def m(self) -> int:
        return int(sum(self.rows))

    def map(self, fn, *args) -> list:
        """fn(partition handle, *args) per partition, gathered in partition order."""
        return self.cluster.map(fn, self.parts, *args)

    def submit_with(self, fn, handles: list, *args) -> list:
        """fn((partition handle, handle_p), *args) per partition with per-partition `handles`;
        the results stay where computed."""
        return self.cluster.submit(fn, list(zip(self.parts, handles, strict=True)), *args)


# ---- metric sums --------------------------------------------------------------------------------
def score_sums(Yhat: np.ndarray, Y, task: str) -> np.ndarray:
    """[Σ score, count] of one partition: correct labels (classification; Y as class indices) or
    squared errors over all entries (regression), so metrics reduce exactly by addition."""
    Yhat = np.asarray(Yhat, dtype=float)
    if task == "classification":
        correct = predicted_labels(Yhat) == np.asarray(Y).ravel()
        return np.array([float(np.sum(correct)), float(len(Yhat))])
    Y = np.asarray(Y, dtype=float).reshape(Yhat.shape)
    return np.array([float(np.sum((Yhat - Y) ** 2)), float(Yhat.size)])


def score(sums, task: str) -> float:
    """Accuracy or RMSE from added score_sums."""
    s, n = np.sum(np.asarray(sums, dtype=float).reshape(-1, 2), axis=0)
    return float(s / n) if task == "classification" else float(np.sqrt(s / n))


# ---- losses as sums --------------------------------------------------------------------------
def loss_sum(loss: str, Yhat: np.ndarray, Y) -> float:
    """Σ over the partition's samples of the per-sample loss (objective.loss_value × rows)."""
    if loss == "squared":
        return float(np.sum((Yhat - Y) ** 2))
    return float(np.sum((cross_entropy if loss == "cross_entropy" else hinge)(Yhat, Y)))


def loss_grad_rows(loss: str, Yhat: np.ndarray, Y, m: int) -> np.ndarray:
    """The partition's rows of ∂L/∂Ŷ of the MEAN loss over all m samples (objective.loss_grad)."""
    if loss == "squared":
        return 2.0 * (Yhat - Y) / m
    return (cross_entropy_grad if loss == "cross_entropy" else hinge_grad)(Yhat, Y) / m


def load_prepared(item, loss: str):
    """(U_p, Y_p) with the targets in the loss's form (validated on the worker)."""
    U, Y = load(item)
    return U, prepare_targets(loss, Y, len(U))


def take_rows(item):
    """(U, Y, X) at local rows of a partition; item = ((U_p, Y_p), X_p, rows)."""
    (U, Y), X, rows = item
    return U[rows], Y[rows], X[rows]


def row_locations(sizes, rows: np.ndarray) -> list[np.ndarray]:
    """Global row indices (sorted) split into local indices per partition of the given sizes."""
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [rows[(rows >= a) & (rows < b)] - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
