"""Map a function over chunks of work, serially, with joblib (loky) or on a Dask cluster."""

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


# ---- a cluster that keeps per-partition data on its workers ---------------------------------------
DATA_BACKENDS = ("memory", "dask")


class Cluster:
    """Where partitioned computations run: in this process ("memory") or on dask.distributed.

    `submit(fn, items, *args)` runs fn(item, *args) per item and keeps each result where it was
    computed (a handle: the value itself in memory, a Future on Dask); `map` does the same and
    gathers the results, in order. Handles may be items of later calls, so per-partition data
    stays on its worker and only what `map` returns travels; a worker frees a result once no
    handle to it (and no pending task needing it) is left. Use as a context manager: a Dask
    LocalCluster of `workers` single-threaded processes is started (or the scheduler at
    `address` joined) on entry and closed on exit.
    """

    def __init__(self, backend: str = "memory", workers: int = 1, address: str | None = None):
        if backend not in DATA_BACKENDS:
            raise ValueError(f"data backend must be one of {DATA_BACKENDS}, got {backend!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.backend, self.workers, self.address = backend, workers, address
        self.client = self._cluster = None

    def __enter__(self) -> Cluster:
        if self.backend == "dask" and self.client is None:
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:
                raise ValueError("data_backend 'dask' needs dask[distributed]: "
                                 "pip install 'implicit_cvx[dask]'") from None
            if self.address is None:
                self._cluster = LocalCluster(n_workers=self.workers, processes=True,
                                             threads_per_worker=1, dashboard_address=":0")
                self.client = Client(self._cluster)
            else:
                self.client = Client(self.address)
            self.address = self.client.scheduler.address
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def submit(self, fn: Callable, items: Iterable, *args) -> list:
        """Handles of fn(item, *args) for every item, computed where the item lives."""
        items = list(items)
        if self.client is None:
            return [fn(item, *args) for item in items]
        from dask.distributed import Future

        def on_cluster(item) -> bool:
            parts = item if isinstance(item, tuple) else (item,)
            return any(isinstance(p, Future) for p in parts)

        local = [i for i, item in enumerate(items) if not on_cluster(item)]
        if local:  # data goes to the workers directly, not through the task graph
            for i, future in zip(local, self.client.scatter([items[i] for i in local], hash=False),
                                 strict=True):
                items[i] = future
        return self.client.map(_Call(fn, args), items, pure=False)

    def map(self, fn: Callable, items: Iterable, *args) -> list:
        """[fn(item, *args) for item in items] computed on the cluster, gathered in order."""
        return self.gather(self.submit(fn, items, *args))

    def gather(self, handles: list) -> list:
        return list(handles) if self.client is None else self.client.gather(handles)

    def row_parallel(self, backend: str, n_jobs: int, address: str | None) -> dict:
        """Options of the row solvers: on Dask they join this cluster instead of starting one."""
        if backend == "dask" and address is None and self.client is not None:
            address = self.address
        return dict(backend=backend, n_jobs=n_jobs, address=address)


class _Call:
    """fn(item, *args): one picklable callable for all the tasks of a map (args sent once)."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args

    def __call__(self, item):
        return self.fn(item, *self.args)
