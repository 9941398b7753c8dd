"""Campaigns on Dask: seeded chunks on a cluster, results consumed in chunk order.

We do not schedule anything ourselves. Dask runs the chunks; when a worker
dies, the scheduler reruns the chunks it held (``retries`` covers a task that
fails outright). Results are keyed by chunk index and taken exactly once, in
chunk order, so nothing is lost or counted twice, and the output does not
depend on how many workers ran it.

``--cluster local:N`` starts a ``LocalCluster`` of N single-threaded worker
processes; any other value is the address of a running scheduler
(``tcp://host:8786``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

__all__ = ["cluster_client", "ordered_map"]


@contextlib.contextmanager
def cluster_client(spec: str):
    """A ``dask.distributed.Client`` for ``local:N`` or a scheduler address."""
    from dask.distributed import Client, LocalCluster

    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--cluster local:N needs a whole number of workers, got '{spec}'") from None
        if n < 1:
            raise ValueError(f"--cluster local:N needs N >= 1, got {n}")
        # One thread per worker process: numba and BLAS parallelism stay out of the way.
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    else:
        client = Client(spec)
        try:
            yield client
        finally:
            client.close()


def ordered_map(client, fn: Callable, n: int, *args, retries: int = 3, window: int | None = None,
                **kwargs) -> Iterator:
    """Run ``fn(*args, i, **kwargs)``-style chunk tasks and yield results in chunk order.

    ``fn`` is called as ``fn(*args, chunk=i, **kwargs)`` for ``i`` in ``range(n)``.
    At most ``window`` chunks are in flight (default: 4 per worker), which bounds
    the memory held by results waiting for an earlier chunk.
    """
    from dask.distributed import as_completed

    if window is None:
        window = max(2, 4 * max(1, len(client.scheduler_info().get("workers", {}))))
    pending: dict[int, object] = {}
    futures = as_completed()
    submitted = 0
    nxt = 0

    def submit(i: int) -> None:
        futures.add(client.submit(fn, *args, chunk=i, key=f"chunk-{fn.__name__}-{id(futures)}-{i}",
                                  retries=retries, pure=False, **kwargs))

    while submitted < min(window, n):
        submit(submitted)
        submitted += 1
    for fut in futures:
        res = fut.result()
        pending[res.chunk if hasattr(res, "chunk") else int(fut.key.rsplit("-", 1)[1])] = res
        fut.release()
        while nxt in pending:
            yield pending.pop(nxt)
            nxt += 1
            if submitted < n:
                submit(submitted)
                submitted += 1
