"""Certify a test set in row partitions on a cluster and merge the per-sample results.

Every sample is certified independently (`certify` bounds each sample's own ℓ∞ ball), so the
samples split into partitions that run where they load — a Dask worker or this process — and
the per-sample rows are concatenated in partition order; the summary (clean and certified
accuracy, falsified and unknown shares) is recomputed from those rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..parallel import Cluster
from ..partitions import partition
from .certify import CertifyResult, certify


def _certify_part(part, model, eps_list, options: dict) -> CertifyResult:
    U, y = part.load()
    return certify(model, U, y, eps_list, **options)


def certify_partitioned(model, U, y, eps_list, *, partitions: int | None = None,
                        rows: int | None = None, data_backend: str = "dask", workers: int = 2,
                        address: str | None = None, **options) -> CertifyResult:
    """`robust.certify(model, U, y, eps_list, **options)` over row partitions of (U, y) on a cluster.

    On a LocalCluster of `workers` single-threaded processes, the scheduler at `address`, or this
    process for data_backend "memory"; the parts' results are merged by `merge_certify_results`.
    Memory per worker: O(partition rows × (n + p)) plus what certify allocates per sample; only
    per-sample results travel back.

    Parameters
    ----------
    model : ImplicitModel
        A classifier.
    U : array_like, str, Path or dask array
        Raw inputs as `partitions.partition` accepts them (array, .npy, shard directory, dask
        array).
    y : array_like, shape (m,)
        Labels aligned with U's rows.
    eps_list : sequence of float
        The radii.
    partitions : int, optional
        Number of parts (default: one per worker).
    rows : int, optional
        Rows per part, instead of `partitions`.
    data_backend : {"dask", "memory"}, default="dask"
        Where the parts run.
    workers : int, default=2
        LocalCluster worker processes.
    address : str, optional
        A running dask scheduler's address.
    **options
        Passed to `certify` (method, domain, eps_scale, time_limit, ...).

    Returns
    -------
    CertifyResult
        The same as `certify` on all rows at once.

    Raises
    ------
    ValueError
        If U and y do not align, or an option is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> parts = robust.certify_partitioned(model, U, y, [0.2], partitions=2, data_backend="memory",
    ...                                    method="box", domain=(0, 1))
    >>> whole = robust.certify(model, U, y, [0.2], method="box", domain=(0, 1))
    >>> bool(np.array_equal(parts.status, whole.status))
    True
    """
    parts = partition(U, y, partitions=partitions or (None if rows else workers), rows=rows)
    with Cluster(data_backend, workers, address) as cluster:
        results = cluster.map(_certify_part, parts, model, eps_list, options)
    return merge_certify_results(results)


def _share(status: np.ndarray, eps: tuple, which: str) -> dict:
    return {e: float(np.mean(status[:, k] == which)) for k, e in enumerate(eps)}


def merge_certify_results(results: list[CertifyResult]) -> CertifyResult:
    """One CertifyResult from results on disjoint sample partitions (in order).

    Per-sample arrays (first axis = samples) are concatenated, accuracies and shares recomputed
    from them, seconds summed over partitions; every other field must agree across partitions.

    Parameters
    ----------
    results : list of CertifyResult
        The partitions' results, in row order.

    Returns
    -------
    CertifyResult
        The merged result.

    Raises
    ------
    ValueError
        If the list is empty or the partitions disagree on a shared field.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> first = robust.certify(model, U[:2], y[:2], [0.2], method="box", domain=(0, 1))
    >>> second = robust.certify(model, U[2:], y[2:], [0.2], method="box", domain=(0, 1))
    >>> merged = robust.merge_certify_results([first, second])
    >>> merged.certified.ravel(), round(merged.certified_accuracy[0.2], 3)
    (array([False,  True, False]), 0.333)
    """
    if not results:
        raise ValueError("merge_certify_results needs at least one partition's result")
    sizes = [len(r.correct) for r in results]
    recomputed = {"clean_accuracy", "certified_accuracy", "falsified", "unknown", "seconds"}
    merged = {}
    for f in dataclasses.fields(CertifyResult):
        values = [getattr(r, f.name) for r in results]
        if isinstance(values[0], np.ndarray) and values[0].ndim and values[0].shape[0] == sizes[0]:
            merged[f.name] = values
        elif f.name not in recomputed and any(_differs(v, values[0]) for v in values[1:]):
            raise ValueError(f"partitions disagree on CertifyResult field {f.name!r}: they must "
                             "come from the same model, radii and options")
        else:
            merged[f.name] = values[0]
    merged.update({k: np.concatenate(v, axis=0) for k, v in merged.items() if isinstance(v, list)
                   and all(isinstance(a, np.ndarray) for a in v)})
    eps, m = merged["eps"], sum(sizes)
    merged["clean_accuracy"] = float(merged["correct"].mean()) if m else float("nan")
    merged["certified_accuracy"] = {e: float(merged["certified"][:, k].mean()) if m else float("nan")
                                    for k, e in enumerate(eps)}
    if merged.get("falsified") is not None:
        merged["falsified"] = _share(merged["status"], eps, "falsified")
        merged["unknown"] = _share(merged["status"], eps, "unknown")
    merged["seconds"] = float(sum(r.seconds for r in results))
    return CertifyResult(**merged)


def _differs(a, b) -> bool:
    try:
        return bool(np.any(np.asarray(a, dtype=object) != np.asarray(b, dtype=object)))
    except ValueError:
        return True
