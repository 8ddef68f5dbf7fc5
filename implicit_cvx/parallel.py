"""Map a function over chunks of work, serially, with joblib (loky) or on a Dask cluster (DESIGN §6.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

BACKENDS = ("serial", "loky", "dask")
CONNECT_TIMEOUT = "10s"  # how long to wait for a dask scheduler at a given address


def map_chunks(
    fn: Callable,
    chunks: Iterable,
    *,
    backend: str = "serial",
    n_jobs: int = 1,
    address: str | None = None,
) -> list:
    """[fn(c) for c in chunks], in order, computed on `backend`.

    dask: connects to the dask.distributed scheduler at `address`, or starts a LocalCluster of
    `n_jobs` single-threaded worker processes and closes it afterwards.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    chunks = list(chunks)
    if backend == "serial" or not chunks:
        return [fn(c) for c in chunks]
    if backend == "loky":
        from joblib import Parallel, delayed

        return list(Parallel(n_jobs=n_jobs, backend="loky")(delayed(fn)(c) for c in chunks))
    return _map_dask(fn, chunks, n_jobs, address)


def _map_dask(fn, chunks, n_jobs, address):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("backend='dask' needs dask[distributed]: pip install 'dask[distributed]'") from None
    if address is not None:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach the dask scheduler at {address!r} within "
                          f"{CONNECT_TIMEOUT} ({exc}); check run.address or start the scheduler") from None
        with client:
            return client.gather(client.map(fn, chunks, pure=False))
    with LocalCluster(
        n_workers=n_jobs, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        return client.gather(client.map(fn, chunks, pure=False))
