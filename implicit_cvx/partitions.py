"""Samples as row partitions that load themselves wherever they run (out-of-core data).

A `Part` describes rows [start, stop) of the inputs U (and targets Y) without holding them: an
in-memory array slice, rows of a memory-mapped `.npy`, one `.npz`/`.npy` shard of a directory, a
block of a `dask.array`, or rows generated from a seed. `Part.load()` returns (U_p, Y_p) as
float64 inputs (after the part's input transform) and targets, on the process that calls it — a
Dask worker, or the driver for the in-memory path (one part holding the whole array).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_SUFFIXES = (".npy", ".npz")


# ---- loaders of one block of rows ------------------------------------------------------------
@dataclass(frozen=True)
class ArrayRows:
    """A block of rows of an array in memory (a view: only these rows travel with a task)."""

    array: np.ndarray

    def load(self) -> np.ndarray:
        return np.asarray(self.array)


@dataclass(frozen=True)
class NpyRows:
    """Rows [start, stop) of a `.npy` file, read through a memory map (only those rows are read)."""

    path: str
    start: int
    stop: int

    def load(self) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[self.start:self.stop])


@dataclass(frozen=True)
class NpzRows:
    """Rows [start, stop) of array `key` of an `.npz` shard (the shard's member is read whole)."""

    path: str
    key: str
    start: int
    stop: int

    def load(self) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as f:
            return np.asarray(f[self.key][self.start:self.stop])


@dataclass(frozen=True)
class DaskRows:
    """One row block of a dask.array, computed in the calling process (its own small graph)."""

    block: object  # dask.delayed of the block

    def load(self) -> np.ndarray:
        return np.asarray(self.block.compute(scheduler="sync"))


@dataclass(frozen=True)
class GeneratedRows:
    """Rows made by `make(seed, rows) → (U, Y)` on the process that loads them (synthetic data
    that is never materialized in the driver)."""

    make: Callable
    seed: int
    rows: int

    def load(self):
        return self.make(self.seed, self.rows)


# ---- one partition -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """Rows of the samples: inputs (a loader), targets (a loader, an array, or None), the input
    transform applied after loading (None: identity) and the number of rows."""

    inputs: object
    targets: object
    rows: int
    transform: object = None

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(U_p float64 (rows, p), Y_p or None), validated finite."""
        if isinstance(self.inputs, GeneratedRows):
            U, Y = self.inputs.load()
        else:
            U = self.inputs.load()
            Y = _load_targets(self.targets)
        U = np.asarray(U, dtype=float) if self.transform is None else self.transform.apply(U)
        if U.ndim != 2 or U.shape[0] != self.rows:
            raise ValueError(f"a partition loaded inputs of shape {U.shape}, expected ({self.rows}, p)")
        if not np.all(np.isfinite(U)):
            raise ValueError(f"a partition of {self.rows} rows has NaN or inf inputs")
        if Y is not None and len(Y) != self.rows:
            raise ValueError(f"a partition has {self.rows} input rows but {len(Y)} targets")
        return U, Y


def _load_targets(targets):
    if targets is None:
        return None
    return np.asarray(targets.load() if hasattr(targets, "load") else targets)


# ---- building partitions -----------------------------------------------------------------------
def _bounds(m: int, partitions: int | None, rows: int | None) -> list[tuple[int, int]]:
    """Row ranges of `partitions` near-equal parts, or of `rows` rows each (default: one part)."""
    if m < 1:
        raise ValueError("the data has no rows (m = 0): give at least one sample")
    if rows is not None:
        if rows < 1:
            raise ValueError(f"partition rows must be ≥ 1, got {rows}")
        edges = list(range(0, m, rows)) + [m]
    else:
        k = 1 if partitions is None else int(partitions)
        if k < 1:
            raise ValueError(f"partitions must be a positive integer, got {partitions!r}")
        edges = np.linspace(0, m, min(k, m) + 1).round().astype(int).tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def _target_slice(Y, start, stop):
    if Y is None:
        return None
    if isinstance(Y, (str, Path)):
        return NpyRows(str(Y), start, stop)
    if _is_dask(Y):
        return DaskRows(_single_block(Y[start:stop]))
    return np.asarray(Y[start:stop])


def _is_dask(a) -> bool:
    return type(a).__module__.startswith("dask.array")


def _single_block(a):
    return a.rechunk({0: a.shape[0]} | {i: -1 for i in range(1, a.ndim)}).to_delayed().ravel()[0]


def _array_parts(U, Y, bounds, transform) -> list[Part]:
    if isinstance(U, (str, Path)):
        make = lambda a, b: NpyRows(str(U), a, b)  # noqa: E731
    elif _is_dask(U):
        make = lambda a, b: DaskRows(_single_block(U[a:b]))  # noqa: E731
    else:
        make = lambda a, b: ArrayRows(U[a:b])  # noqa: E731
    return [Part(make(a, b), _target_slice(Y, a, b), b - a, transform) for a, b in bounds]


def _shape(U) -> tuple:
    if isinstance(U, (str, Path)):
        return tuple(np.load(U, mmap_mode="r").shape)
    return tuple(U.shape)


def _shard_parts(directory: Path, Y, transform, x_key: str, y_key: str) -> list[Part]:
    """Each `.npz` (arrays x_key, y_key) or `.npy` (inputs only) file of `directory`, sorted by name."""
    files = sorted(f for f in directory.iterdir() if f.suffix in SHARD_SUFFIXES)
    if not files:
        raise ValueError(f"data directory {directory} holds no .npy/.npz shards")
    parts, offset = [], 0
    for f in files:
        if f.suffix == ".npy":
            rows = int(np.load(f, mmap_mode="r").shape[0])
            target = _target_slice(Y, offset, offset + rows)
            parts.append(Part(NpyRows(str(f), 0, rows), target, rows, transform))
        else:
            with np.load(f, allow_pickle=False) as z:
                if x_key not in z:
                    raise ValueError(f"shard {f} has no array {x_key!r} (arrays: {sorted(z.files)})")
                rows = int(z[x_key].shape[0])
                has_y = y_key in z
            target = NpzRows(str(f), y_key, 0, rows) if has_y else _target_slice(Y, offset, offset + rows)
            parts.append(Part(NpzRows(str(f), x_key, 0, rows), target, rows, transform))
        offset += rows
    return parts


def partition(U, Y=None, *, partitions: int | None = None, rows: int | None = None,
              transform=None, x_key: str = "X", y_key: str = "y") -> list[Part]:
    """The samples (U, Y) as a list of Parts, each loaded where it is used.

    Arrays and files are cut into `partitions` near-equal parts or parts of `rows` rows (default:
    one part); a directory of shards gives one part per shard; a dask.array one part per row
    range; an existing list of Parts is returned as is.

    Parameters
    ----------
    U : array_like, str, Path, dask array or list of Part
        An array (also np.memmap), a path to a `.npy` (memory-mapped), a directory of `.npy` /
        `.npz` shards (`.npz` shards carry arrays x_key and y_key), a dask.array, or Parts.
    Y : array_like, str or dask array, optional
        Targets aligned with U's rows (an array, a `.npy` path or a dask.array).
    partitions : int, optional
        Number of parts.
    rows : int, optional
        Rows per part, instead of `partitions`.
    transform : InputTransform, optional
        Applied to the inputs after loading (raw rows travel, float64 is made where loaded).
    x_key : str, default="X"
        The inputs' array name in `.npz` shards.
    y_key : str, default="y"
        The targets' array name in `.npz` shards.

    Returns
    -------
    list of Part
        The parts; ``part.load()`` returns (U_p, Y_p), validated finite.

    Raises
    ------
    ValueError
        If the inputs are not 2-D, the targets do not align, or a path is neither a .npy file
        nor a directory of shards.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx.partitions import partition
    >>> parts = partition(np.arange(20.0).reshape(10, 2), np.arange(10), partitions=3)
    >>> [part.rows for part in parts]
    [3, 4, 3]
    >>> parts[0].load()
    (array([[0., 1.],
           [2., 3.],
           [4., 5.]]), array([0, 1, 2]))
    """
    if isinstance(U, list) and all(isinstance(p, Part) for p in U):
        return U
    if isinstance(U, (str, Path)) and Path(U).is_dir():
        return _shard_parts(Path(U), Y, transform, x_key, y_key)
    if isinstance(U, (str, Path)):
        if not Path(U).is_file() or Path(U).suffix != ".npy":
            raise ValueError(f"data {str(U)!r} is neither a .npy file nor a directory of shards")
    elif not (_is_dask(U) or isinstance(U, np.ndarray)):
        U = np.asarray(U)
    shape = _shape(U)
    if len(shape) != 2:
        raise ValueError(f"inputs must be 2-D (samples as rows), got shape {shape}")
    if Y is not None and _shape(Y)[0] != shape[0]:
        raise ValueError(f"targets have {_shape(Y)[0]} rows but the inputs have {shape[0]}")
    return _array_parts(U, Y, _bounds(shape[0], partitions, rows), transform)


def generated(make: Callable, rows_per_part: list[int], seed: int = 0) -> list[Part]:
    """Parts whose rows are generated on the loading process: part i is make(seed + i, rows_i)."""
    return [Part(GeneratedRows(make, seed + i, int(r)), None, int(r)) for i, r in enumerate(rows_per_part)]


def is_partitioned(U) -> bool:
    """True for data the fitting paths must read through partitions (not one in-memory array)."""
    if isinstance(U, list) and U and all(isinstance(p, Part) for p in U):
        return True
    return isinstance(U, (str, Path)) or _is_dask(U)


def gather(parts: list[Part]) -> tuple[np.ndarray, np.ndarray | None]:
    """All rows in one process (for data that fits): U stacked, Y stacked or None."""
    loaded = [p.load() for p in parts]
    Ys = [Y for _, Y in loaded]
    Y = None if any(y is None for y in Ys) else np.concatenate(Ys)
    return np.vstack([U for U, _ in loaded]), Y
