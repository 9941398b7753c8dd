"""``recovery simulate``: write simulated step data (and, apart, the ground truth)."""

from __future__ import annotations

import argparse

import numpy as np

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, output_path, positive_int, seed_int, share


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate batches and write their step data",
        description="Simulate batches of the process and write the observed step data "
                    "(gauge readings, lever set points, context) in the step-data schema.")
    p.add_argument("--batches", type=positive_int, required=True, help="number of batches")
    p.add_argument("--seed", type=seed_int, required=True, help="random seed (same seed, same data)")
    p.add_argument("--out", required=True, help="observed step data, a .parquet file")
    p.add_argument("--truth", help="ground truth, a .parquet file: one row per injected fault; "
                                   "TRUTH.latent.parquet and TRUTH.outcome.parquet are written beside it")
    p.add_argument("--process", default=None, help="process file (default: the built-in 50-step process; "
                                                    "'small' for the built-in 12-step one)")
    p.add_argument("--explore", type=share, default=0.2,
                   help="share of batches where past engineers moved levers (default 0.2)")
    p.add_argument("--no-faults", action="store_true", help="inject no faults")
    p.add_argument("--cluster", help="run the chunks on Dask: 'local:N' (N worker processes) or a "
                                     "scheduler address such as tcp://host:8786")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulators.campaign import simulate_to_files

    process = load_process_arg(args.process)
    out = output_path(args.out)
    truth = output_path(args.truth) if args.truth else None
    if args.cluster:
        summary = _on_cluster(args, process, out, truth)
    else:
        summary = simulate_to_files(process, args.batches, args.seed, out, truth=truth,
                                    explore=args.explore, faults=not args.no_faults,
                                    progress=not args.quiet)
    print(f"process      {process.name} ({process.n_steps} steps, digest {process.digest})")
    print(f"batches      {summary['batches']}  ({summary['rows']} rows written to {out})")
    print(f"faults       {summary['faults_total']} injected in {summary['faulty_batches']} batches")
    for name, n in summary["faults"].items():
        print(f"  {name:32s} {n}")
    print("flagged at each inspection (sample mean outside a gate):")
    for step, frac in summary["flagged"].items():
        print(f"  step {step:3d}  {100 * frac:5.1f}%")
    print(f"accepted     {100 * summary['accepted']:.1f}% of batches at the end")
    if truth:
        print(f"truth        {truth} (+ .latent.parquet, .outcome.parquet)")
    return 0


def _on_cluster(args, process, out, truth) -> dict:
    from tqdm import tqdm

    from recovery.distributed import cluster_client, ordered_map
    from simulators.campaign import chunk_output, n_chunks, write_campaign

    n = n_chunks(args.batches)
    try:
        with cluster_client(args.cluster) as client:
            outputs = ordered_map(client, chunk_output, n, process, args.batches, args.seed,
                                  explore=args.explore, faults=not args.no_faults,
                                  truth=truth is not None)
            outputs = tqdm(outputs, total=n, desc=f"simulate on {args.cluster}", unit="chunk",
                           disable=args.quiet)
            return write_campaign(process, args.batches, outputs, out, truth=truth)
    except (OSError, ValueError) as exc:
        raise UserError(f"--cluster {args.cluster}: {exc}") from None
