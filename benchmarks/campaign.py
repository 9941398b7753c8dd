"""Simulation-campaign throughput: in-process versus Dask with 1 and 2 workers.

Prints JSON. Usage: ``python benchmarks/campaign.py [--batches 20000] [--repeat 3]``.

Each run simulates ``--batches`` batches of the default process in chunks of
1,000 with the ground truth, the way ``recovery simulate`` does. The headline
paths write a Parquet dataset folder: whichever process simulated a chunk
(this one in-process, a worker on Dask) writes its part files and hands back
only the counts. For comparison, the one-file form (this process writes every
chunk into one file; on Dask the chunks travel to it) is measured too, under
``*_single_file_*`` keys. Each repeat runs every path once, in turn, so load
from other jobs on a shared machine drifts over all paths alike: first the
in-process paths (no cluster alive), then a fresh ``local:1`` and a fresh
``local:2`` cluster, whose start-up (with the numba compile on the workers) is
timed apart from the campaigns.

Reported: batches/s per path (median of repeats), the 2-worker scaling ratio,
the overhead of the distributed path at 1 worker, the CPU milliseconds per
batch of each path (this process, which hosts the local scheduler, plus the
workers: less sensitive to other jobs than wall time), and a projection of the
workers 10 million batches need to finish in an hour.

The anchor is the kernel alone on the same batches (``kernel_only``:
``simulate_chunk`` for every chunk, which samples the conditions and plans
and runs the numba rollout, and builds no table), timed in the same repeats;
``in_process_over_kernel`` is the in-process folder path's batches/s over the
kernel's (issue 21: target >= 0.3). ``in_process_write_inline`` is the same
folder with every chunk's parts written before the next chunk is simulated
(``write_behind=False``; the default writes them on a background thread).
``--in-process-only`` skips the Dask paths (a quick run on a shared machine).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import contextlib
import inspect
import json
import platform
import tempfile
import time
from pathlib import Path
import numpy as np

from recovery.distributed import cluster_client, simulate_on_client
from simulators.campaign import CHUNK, chunk_output, n_chunks, simulate_chunk, simulate_to_files
from simulators.definition import load_process

OUTPUT = "parquet dataset folder (one part file per chunk, written by the worker)"
# The script also runs against older code (PYTHONPATH of an earlier checkout), which
# writes every part inline and has no write_behind switch.
_HAS_WRITE_BEHIND = "write_behind" in inspect.signature(simulate_to_files).parameters


def _process_cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    t = os.times()
    return t.user + t.system


def _cpu(client=None) -> float:
    """CPU seconds used by this process (which also hosts a local cluster's scheduler)
    and by the cluster's worker processes."""
    return _process_cpu() + (sum(client.run(_process_cpu).values()) if client is not None else 0.0)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def _paths(process, n: int, d: Path, dask: bool = True) -> dict:
    """Path name -> (workers or None for in-process, run(client, seed))."""
    runs = {
        "kernel_only": (None, lambda c, r: [simulate_chunk(process, n, k, r) for k in range(n_chunks(n))]),
        "in_process": (None, lambda c, r: simulate_to_files(process, n, r, d / "a", truth=d / "t",
                                                            progress=False)),
        "in_process_single_file": (None, lambda c, r: simulate_to_files(
            process, n, r, d / "a.parquet", truth=d / "t.parquet", progress=False)),
    }
    if _HAS_WRITE_BEHIND:  # the same folder, parts written inline after each chunk (no writer thread)
        runs["in_process_write_inline"] = (None, lambda c, r: simulate_to_files(
            process, n, r, d / "a", truth=d / "t", progress=False, write_behind=False))
    for w in (1, 2) if dask else ():
        runs[f"dask_{w}"] = (w, lambda c, r, w=w: simulate_on_client(
            c, process, n, r, d / f"b{w}", truth=d / f"u{w}"))
        runs[f"dask_{w}_single_file"] = (w, lambda c, r, w=w: simulate_on_client(
            c, process, n, r, d / f"b{w}.parquet", truth=d / f"u{w}.parquet"))
    return runs


def _measure(process, n: int, rep: int, d: Path, out: dict, dask: bool = True) -> None:
    """Time every path ``rep`` times, interleaved; fill rates, start-ups and CPU into ``out``."""
    runs = _paths(process, n, d, dask)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    startup: dict[int, list[float]] = {1: [], 2: []}
    simulate_to_files(process, CHUNK, 0, d / "warm.parquet", progress=False)  # compile
    for r in range(rep):  # every path once per repeat: drifting load hits all paths alike
        for workers in (None, 1, 2) if dask else (None,):
            with contextlib.ExitStack() as stack:
                client = None
                if workers:  # no cluster is alive during the in-process runs
                    t = time.perf_counter()
                    client = stack.enter_context(cluster_client(f"local:{workers}"))
                    client.run(lambda: chunk_output(process, CHUNK, 0, chunk=0))  # compile
                    startup[workers].append(time.perf_counter() - t)
                for key in [k for k, (w, _) in runs.items() if w == workers]:
                    c0, t = _cpu(client), time.perf_counter()
                    runs[key][1](client, r)
                    times[key].append(time.perf_counter() - t)
                    cpu[key].append(_cpu(client) - c0)
    for key, ts in times.items():
        out[f"{key}_batches_per_s"] = n / float(np.median(ts))
    for w, ts in startup.items() if dask else ():
        out[f"dask_{w}_startup_s"] = float(np.median(ts))
    out["cpu_ms_per_batch"] = {k: 1000 * float(np.median(v)) / n for k, v in cpu.items()}
    out["_bytes_per_batch"] = (_bytes(d / "a") + _bytes(d / "t")) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--in-process-only", action="store_true", help="skip the Dask paths")
    args = ap.parse_args()
    process = load_process()
    n = args.batches
    out: dict = {"machine": platform.machine(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "batches": n, "chunk": CHUNK, "process": process.name, "output": OUTPUT}
    out["load_average_1min_at_start"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        _measure(process, n, args.repeat, Path(tmp), out, dask=not args.in_process_only)
    bytes_per_batch = out.pop("_bytes_per_batch")
    out["load_average_1min"] = os.getloadavg()[0]  # at the end
    out["in_process_over_kernel"] = out["in_process_batches_per_s"] / out["kernel_only_batches_per_s"]
    out["in_process_single_file_over_kernel"] = (out["in_process_single_file_batches_per_s"]
                                                 / out["kernel_only_batches_per_s"])
    if "in_process_write_inline_batches_per_s" in out:
        out["in_process_write_inline_over_kernel"] = (out["in_process_write_inline_batches_per_s"]
                                                      / out["kernel_only_batches_per_s"])
    if args.in_process_only:
        print(json.dumps(out, indent=2))
        return
    one, two, local = out["dask_1_batches_per_s"], out["dask_2_batches_per_s"], out["in_process_batches_per_s"]
    out["scaling_2_over_1"] = two / one
    out["overhead_dask1_vs_in_process"] = local / one - 1.0
    out["scaling_2_over_1_single_file"] = out["dask_2_single_file_batches_per_s"] / out[
        "dask_1_single_file_batches_per_s"]
    out["overhead_dask1_vs_in_process_single_file"] = (out["in_process_single_file_batches_per_s"]
                                                       / out["dask_1_single_file_batches_per_s"] - 1.0)
    cpu_ms = out["cpu_ms_per_batch"]
    out["cpu_overhead_dask1_vs_in_process"] = cpu_ms["dask_1"] / cpu_ms["in_process"] - 1.0
    # Projection. A worker's cost per batch is the 1-worker folder run (simulation, frames, its
    # own part writes and the per-chunk scheduling overhead), as wall time and as CPU time (the
    # CPU figure is what a dedicated core would take; wall time here includes waiting for other
    # jobs). Workers write their own part files, so there is no single-writer cap; what all
    # workers share is the storage the folder lives on, which must take bytes_per_batch at the
    # aggregate rate, and the scheduler (a few ms per 1,000-batch chunk).
    per_batch_s, per_batch_cpu = 1.0 / one, cpu_ms["dask_1"] / 1000
    efficiency = two / one / 2
    out["projection_10M_in_1h"] = {
        "per_batch_worker_seconds": per_batch_s,
        "per_batch_worker_cpu_seconds": per_batch_cpu,
        "per_chunk_overhead_seconds": CHUNK * (1.0 / one - 1.0 / local),
        "per_chunk_overhead_cpu_seconds": CHUNK * (cpu_ms["dask_1"] - cpu_ms["in_process"]) / 1000,
        "workers_needed_ideal": int(np.ceil(10_000_000 * per_batch_s / 3600)),
        "workers_needed_at_measured_scaling": int(np.ceil(10_000_000 * per_batch_s / 3600 / efficiency)),
        "workers_needed_from_cpu": int(np.ceil(10_000_000 * per_batch_cpu / 3600)),
        "bytes_written_per_batch": bytes_per_batch,
        "storage_write_MB_per_s_for_10M_in_1h": bytes_per_batch * 10_000_000 / 3600 / 1e6,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
