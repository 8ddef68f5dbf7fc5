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
    """`robust.certify(model, U, y, eps_list, **options)` over row partitions of (U, y) on a
    cluster (a LocalCluster of `workers` single-threaded processes, the scheduler at `address`,
    or this process for data_backend "memory"), merged by `merge_certify_results`.

    U: raw inputs as `partitions.partition` accepts them (array, .npy, shard directory, dask
    array); y: labels aligned with U's rows. Cut into `partitions` parts or parts of `rows` rows
    (default: one per worker). Memory per worker: O(partition rows × (n + p)) plus what certify
    allocates per sample; only per-sample results travel back.
    """
    parts = partition(U, y, partitions=partitions or (None if rows else workers), rows=rows)
    with Cluster(data_backend, workers, address) as cluster:
        results = cluster.map(_certify_part, parts, model, eps_list, options)
    return merge_certify_results(results)


def _share(status: np.ndarray, eps: tuple, which: str) -> dict:
    return {e: float(np.mean(status[:, k] == which)) for k, e in enumerate(eps)}


def merge_certify_results(results: list[CertifyResult]) -> CertifyResult:
    """One CertifyResult from results on disjoint sample partitions (in order): per-sample arrays
    (first axis = samples) concatenated, accuracies and shares recomputed from them, seconds
    summed over partitions; every other field must agree across partitions."""
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
