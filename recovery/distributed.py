"""Campaigns on Dask: seeded chunks on a cluster, results consumed in chunk order.

We do not schedule anything ourselves. Dask runs the chunks; when a worker
dies, the scheduler reruns the chunks it held (``retries`` covers a task that
fails outright). Results are keyed by chunk index and taken exactly once, in
chunk order, so nothing is lost or counted twice, and the output does not
depend on how many workers ran it.

``--cluster local:N`` starts a ``LocalCluster`` of N single-threaded worker
processes; any other value is the address of a running scheduler
(``tcp://host:8786``).

:func:`simulate_on_client` runs a simulation campaign: with a dataset folder
as output, each worker writes the part files of the chunks it simulated and
sends back only their counts (a few hundred bytes), so nothing funnels through
one writer; with one ``.parquet`` file, the chunks travel to this process,
which writes the file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

__all__ = ["cluster_client", "ordered_map", "simulate_on_client", "LOCAL_WORKER_CONFIG"]

#: Dask settings for ``local:N`` workers. The nanny normally starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``; setting it at all switches off glibc's dynamic mmap
#: threshold, so every large array of a chunk's frames is mmapped, faulted in and unmapped
#: again (measured: the worker's system time doubles, 0.7-1.0 s instead of 0.4 s for 5,000
#: batches). Without it a worker keeps more freed memory, bounded by one chunk's frames.
#: For workers started with ``dask worker``, put the same in a YAML file of their Dask
#: configuration (``distributed: nanny: pre-spawn-environ: MALLOC_TRIM_THRESHOLD_: null``,
#: e.g. in ``~/.config/dask/``; the ``DASK_...`` environment form lower-cases the name and
#: does not work).
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextlib.contextmanager
def cluster_client(spec: str):
    """A ``dask.distributed.Client`` for ``local:N`` or a scheduler address.

    ``local:N`` workers are started with :data:`LOCAL_WORKER_CONFIG`.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--cluster local:N needs a whole number of workers, got '{spec}'") from None
        if n < 1:
            raise ValueError(f"--cluster local:N needs N >= 1, got {n}")
        # One thread per worker process: numba and BLAS parallelism stay out of the way.
        with dask.config.set(LOCAL_WORKER_CONFIG):
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


def simulate_on_client(client, process, n_batches: int, seed: int, out: Path, *,
                       truth: Path | None = None, explore: float = 0.2, faults: bool = True,
                       progress: Callable[[Iterator, int], Iterable] | None = None) -> dict:
    """Run a simulation campaign on the cluster behind ``client``.

    Parameters
    ----------
    client : dask.distributed.Client
    process : simulators.definition.Process
    n_batches, seed : int
        Campaign size and seed (the data do not depend on the worker count).
    out, truth : Path
        Two ``.parquet`` files or two folders
        (:func:`simulators.campaign.check_outputs`). Folders must be reachable
        at the same path from every worker (a shared filesystem); they are
        prepared here (created, stale parts removed).
    explore : float
        Share of batches with moved levers.
    faults : bool
        Inject faults.
    progress : callable, optional
        Wraps the result iterator, e.g. ``lambda it, n: tqdm(it, total=n)``.

    Returns
    -------
    dict
        The campaign summary (:func:`simulators.campaign.sum_counts`), the same
        for a file or a folder, in-process or on any number of workers.
    """
    from simulators.campaign import (check_outputs, chunk_output, chunk_to_folder, finish_folders,
                                     n_chunks, prepare_folders, sum_counts, write_campaign)

    n = n_chunks(n_batches)
    wrap = progress or (lambda it, _n: it)
    if not check_outputs(out, truth):  # chunks travel here and this process writes the file
        results = ordered_map(client, chunk_output, n, process, n_batches, seed, explore=explore,
                              faults=faults, truth=truth is not None)
        return write_campaign(process, n_batches, wrap(results, n), out, truth=truth)
    out = Path(out).resolve()
    truth = Path(truth).resolve() if truth is not None else None
    prepare_folders(out, truth)
    results = ordered_map(client, chunk_to_folder, n, process, n_batches, seed, out=out, truth=truth,
                          explore=explore, faults=faults)  # workers write parts, return counts
    summary = sum_counts(process, n_batches, wrap(results, n))
    finish_folders(out, truth)
    return summary
