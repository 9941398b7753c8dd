"""Simulation-campaign throughput: in-process versus Dask with 1 and 2 workers.

Prints JSON. Usage: ``python benchmarks/campaign.py [--batches 20000] [--repeat 3]``.

Each run simulates ``--batches`` batches of the default process in chunks of
1,000 and streams them to Parquet in a temporary folder (the real
``recovery simulate`` path). Cluster start-up is timed apart from the
campaign. Reported: batches/s per path (median of repeats), the 2-worker
scaling ratio, the overhead of the distributed path at 1 worker, and a
projection of the workers 10 million batches need to finish in an hour.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from recovery.distributed import cluster_client, ordered_map
from simulators.campaign import CHUNK, chunk_output, n_chunks, simulate_to_files, write_campaign
from simulators.definition import load_process


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    process = load_process()
    n = args.batches
    out: dict = {"machine": platform.machine(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "batches": n, "chunk": CHUNK, "process": process.name}
    with tempfile.TemporaryDirectory() as tmp:
        simulate_to_files(process, CHUNK, 0, Path(tmp) / "warm.parquet", progress=False)  # compile
        times = []
        for r in range(args.repeat):
            t = time.perf_counter()
            simulate_to_files(process, n, r, Path(tmp) / "a.parquet", truth=Path(tmp) / "t.parquet",
                              progress=False)
            times.append(time.perf_counter() - t)
        out["in_process_batches_per_s"] = n / float(np.median(times))
        for workers in (1, 2):
            t = time.perf_counter()
            with cluster_client(f"local:{workers}") as client:
                client.run(lambda: chunk_output(process, CHUNK, 0, chunk=0))  # compile on workers
                startup = time.perf_counter() - t
                times = []
                for r in range(args.repeat):
                    t = time.perf_counter()
                    outs = ordered_map(client, chunk_output, n_chunks(n), process, n, r, truth=True)
                    write_campaign(process, n, outs, Path(tmp) / "b.parquet", truth=Path(tmp) / "u.parquet")
                    times.append(time.perf_counter() - t)
            out[f"dask_{workers}_batches_per_s"] = n / float(np.median(times))
            out[f"dask_{workers}_startup_s"] = startup
    one, two, local = out["dask_1_batches_per_s"], out["dask_2_batches_per_s"], out["in_process_batches_per_s"]
    out["scaling_2_over_1"] = two / one
    out["overhead_dask1_vs_in_process"] = local / one - 1.0
    # Projection: per-batch cost from the 1-worker run; the parent writes every chunk, so
    # its write rate bounds a single writer; past that, write one file per worker.
    per_batch_s = 1.0 / one
    out["projection_10M_in_1h"] = {
        "per_batch_worker_seconds": per_batch_s,
        "workers_needed_ideal": int(np.ceil(10_000_000 * per_batch_s / 3600)),
        "workers_needed_at_measured_scaling": int(np.ceil(10_000_000 * per_batch_s / 3600 / (two / one / 2))),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
