"""Scale-out benchmark: SIM and adjoint on row partitions, in memory and on 1 and 2 Dask workers.

SIM: synthetic inputs U ~ N(0, 1) with p = 64, generated partition by partition on the workers
(never in the driver), a random feed-forward ReLU teacher 64-64-32-10 (n = 96 states), λ = 1e-3,
κ = 0.99, m = 10⁴ … 10⁶ in partitions of at most 50,000 rows. The in-memory path (one partition
in one process, the same data) runs beside it up to m = 10⁵. Adjoint: the full MNIST training set
(n = 100, D = 0, 2 outer iterations, the MNIST-5k settings of reproduce_training.py), m = 15,000
and 60,000 rows, in memory and on 1 and 2 workers.

Reported per run: wall time of the fit (cluster start excluded), peak resident memory of each
worker process (ru_maxrss; a fresh cluster per run) or of the in-memory process, every SIM row
certified (max duality gap), and the largest weight difference to the in-memory model where both
ran; the log-log slope of time vs m per backend. The machine (2 cores) is shared with other
developers: timings are noisy, compare within one run.

Command (writes results/bench_scale.{json,md,csv}):
    python experiments/bench_scale.py
Quick check (small m, 1 outer iteration, writes *_quick files):
    python experiments/bench_scale.py --quick
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from common import (
    limit_blas,
    make_parser,
    mnist_path,
    provenance,
    write_csv,
    write_json,
    write_markdown,
)

from implicit_cvx.convert import from_layers
from implicit_cvx.parallel import Cluster
from implicit_cvx.partitions import generated

P, LAYERS, SEED = 64, (64, 32, 10), 0
SIM_OPTIONS = dict(lam=1e-3, kappa=0.99)
PARTITION_ROWS = 50_000
ADJOINT_OPTIONS = dict(n_states=100, include_D=False, kappa=0.95, anchor_mu=1e-2, lam_l2=1e-2,
                       max_outer=2, seed=0)
COLUMNS = ["method", "backend", "workers", "m", "partitions", "seconds", "peak_mib_per_worker",
           "max_duality_gap", "max_weight_diff_to_memory", "train_accuracy", "slope_time_vs_m"]


def make_rows(seed: int, rows: int):
    """One partition of the synthetic inputs (no targets: SIM fits the teacher's states)."""
    return np.random.default_rng(seed).standard_normal((rows, P)), None


def sim_teacher():
    rng = np.random.default_rng(SEED)
    sizes = (P, *LAYERS)
    Ws = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [0.1 * rng.standard_normal(o) for o in sizes[1:]]
    return from_layers(Ws, bs, "relu")


def partition_sizes(m: int) -> list[int]:
    k = -(-m // PARTITION_ROWS)
    edges = np.linspace(0, m, k + 1).round().astype(int)
    return np.diff(edges).tolist()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _weights(model) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(getattr(model, k))) for k in "ABCD"])


# ---- SIM --------------------------------------------------------------------------------------------
def sim_dask(m: int, workers: int) -> tuple[dict, np.ndarray]:
    from implicit_cvx.train.sim import fit_sim

    with Cluster("dask", workers) as cluster:
        parts = generated(make_rows, partition_sizes(m), SEED)
        t0 = time.perf_counter()
        res = fit_sim(parts, task="classification", teacher=sim_teacher(), data_backend="dask",
                      address=cluster.address, **SIM_OPTIONS)
        seconds = time.perf_counter() - t0
        peak = max(cluster.client.run(_peak_rss_mib).values())
    return {"method": "sim", "backend": "dask", "workers": workers, "m": m,
            "partitions": len(parts), "seconds": seconds, "peak_mib_per_worker": peak,
            "max_duality_gap": res.summary["max_duality_gap"]}, _weights(res.model)


def _sim_memory_child(m: int):
    from implicit_cvx.partitions import gather
    from implicit_cvx.train.sim import fit_sim

    with limit_blas(1):
        U, _ = gather(generated(make_rows, partition_sizes(m), SEED))
        t0 = time.perf_counter()
        res = fit_sim(U, task="classification", teacher=sim_teacher(), **SIM_OPTIONS)
        seconds = time.perf_counter() - t0
    return seconds, _peak_rss_mib(), res.summary["max_duality_gap"], _weights(res.model)


def in_child(fn, *args):
    """fn(*args) in a fresh process (spawned), so its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def sim_memory(m: int) -> tuple[dict, np.ndarray]:
    seconds, peak, gap, W = in_child(_sim_memory_child, m)
    return {"method": "sim", "backend": "memory", "workers": 1, "m": m, "partitions": 1,
            "seconds": seconds, "peak_mib_per_worker": peak, "max_duality_gap": gap}, W


# ---- adjoint on MNIST -----------------------------------------------------------------------------
def _mnist(m: int):
    from implicit_cvx.data import load_dataset

    ds = load_dataset("mnist", path=mnist_path())
    ds.train_index = ds.train_index[:m]
    return ds


def adjoint_dask(m: int, workers: int, max_outer: int) -> tuple[dict, np.ndarray]:
    from implicit_cvx.train.adjoint import fit_adjoint

    parts = _mnist(m).partitioned("train", partitions=max(workers, 2))
    with Cluster("dask", workers) as cluster:
        t0 = time.perf_counter()
        res = fit_adjoint(parts, task="classification", data_backend="dask",
                          address=cluster.address, **{**ADJOINT_OPTIONS, "max_outer": max_outer})
        seconds = time.perf_counter() - t0
        peak = max(cluster.client.run(_peak_rss_mib).values())
    return {"method": "adjoint", "backend": "dask", "workers": workers, "m": m,
            "partitions": len(parts), "seconds": seconds, "peak_mib_per_worker": peak,
            "max_duality_gap": res.summary["max_duality_gap"],
            "train_accuracy": res.summary["train_accuracy"]}, _weights(res.model)


def _adjoint_memory_child(m: int, max_outer: int):
    from implicit_cvx.train.adjoint import fit_adjoint

    with limit_blas(1):
        U, y = _mnist(m).split("train")
        t0 = time.perf_counter()
        res = fit_adjoint(U, y, task="classification", **{**ADJOINT_OPTIONS, "max_outer": max_outer})
        seconds = time.perf_counter() - t0
    return (seconds, _peak_rss_mib(), res.summary["max_duality_gap"],
            res.summary["train_accuracy"], _weights(res.model))


def adjoint_memory(m: int, max_outer: int) -> tuple[dict, np.ndarray]:
    seconds, peak, gap, acc, W = in_child(_adjoint_memory_child, m, max_outer)
    return {"method": "adjoint", "backend": "memory", "workers": 1, "m": m, "partitions": 1,
            "seconds": seconds, "peak_mib_per_worker": peak, "max_duality_gap": gap,
            "train_accuracy": acc}, W


# ---- the table ------------------------------------------------------------------------------------
def slopes(rows: list[dict]) -> None:
    """Least-squares slope of log(time) vs log(m) per (method, backend, workers), on every row."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["backend"], r["workers"]), []).append(r)
    for group in groups.values():
        ms = np.array([r["m"] for r in group], dtype=float)
        if len(set(ms)) < 2:
            continue
        slope = float(np.polyfit(np.log(ms), np.log([r["seconds"] for r in group]), 1)[0])
        for r in group:
            r["slope_time_vs_m"] = slope


def run(sim_ms, memory_ms, adjoint_ms, workers_list, max_outer) -> list[dict]:
    rows = []
    for method, ms, dask_fn, mem_fn, extra in (
            ("sim", sim_ms, sim_dask, sim_memory, ()),
            ("adjoint", adjoint_ms, adjoint_dask, adjoint_memory, (max_outer,))):
        for m in ms:
            ref = None
            if method == "adjoint" or m in memory_ms:
                row, ref = mem_fn(m, *extra)
                rows.append(row)
                print(f"{method} m = {m} memory: {row['seconds']:.1f} s, {row['peak_mib_per_worker']:.0f} MiB")
            for w in workers_list:
                row, W = dask_fn(m, w, *extra)
                row["max_weight_diff_to_memory"] = None if ref is None else float(np.abs(W - ref).max())
                rows.append(row)
                print(f"{method} m = {m} dask ×{w}: {row['seconds']:.1f} s, "
                      f"{row['peak_mib_per_worker']:.0f} MiB/worker, Δ = {row['max_weight_diff_to_memory']}")
    slopes(rows)
    return rows


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    quick = args.quick
    stem = "bench_scale_quick" if quick else "bench_scale"
    t0 = time.perf_counter()
    have_mnist = mnist_path() is not None
    with limit_blas(args.blas_threads):
        if quick:
            rows = run([3000, 9000], [3000, 9000], [1000] if have_mnist else [], [2], 1)
        else:
            rows = run([10_000, 30_000, 100_000, 300_000, 1_000_000], [10_000, 30_000, 100_000],
                       [15_000, 60_000] if have_mnist else [], [1, 2], ADJOINT_OPTIONS["max_outer"])
    command = "python experiments/bench_scale.py" + (" --quick" if quick else "")
    notes = (f"Command: `{command}`. Seconds: wall time of the fit (cluster start excluded); peak "
             "MiB: ru_maxrss of each worker process (max over workers; a fresh LocalCluster per run) "
             "or of the in-memory process. SIM partitions hold at most 50,000 rows. "
             "max_weight_diff_to_memory: largest |ΔA|, |ΔB|, |ΔC|, |ΔD| against the in-memory model "
             "on the same data. The machine (2 cores) was shared with other developers."
             + ("" if have_mnist else " MNIST was not found: the adjoint rows were skipped."))
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{stem}.csv", rows, COLUMNS)
    write_markdown(args.out / f"{stem}.md", "Scale-out: SIM and adjoint on partitions", rows,
                   COLUMNS, notes)
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "sim_options": SIM_OPTIONS, "adjoint_options": ADJOINT_OPTIONS,
              "partition_rows": PARTITION_ROWS, "rows": rows}
    write_json(args.json or args.out / f"{stem}.json", report)
    print(f"done in {report['seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
