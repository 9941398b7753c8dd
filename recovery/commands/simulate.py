"""``recovery simulate``: write simulated step data (and, apart, the ground truth).

The output is one ``.parquet`` file written by this process, or a Parquet
dataset folder with one part file per 1,000-batch chunk, written by whichever
process simulated the chunk (this one, or a Dask worker with ``--cluster``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import load_plant_arg, load_process_arg, output_path, positive_int, seed_int, share


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate batches and write their step data",
        description="Simulate batches of the process and write the observed step data "
                    "(gauge readings, lever set points, context) in the step-data schema, to one "
                    ".parquet file or to a dataset folder of part files (one per 1,000-batch "
                    "chunk). Existing output is replaced: files are overwritten, and part files "
                    "of an earlier run in the folders are removed first.")
    p.add_argument("--batches", type=positive_int, required=True, help="number of batches")
    p.add_argument("--seed", type=seed_int, required=True, help="random seed (same seed, same data)")
    p.add_argument("--out", required=True,
                   help="observed step data: a .parquet file (overwritten), or a folder (a name "
                        "without suffix, or an existing directory; created if missing) that gets "
                        "part-NNNNN.parquet per chunk, written by the process that simulated it")
    p.add_argument("--truth", help="ground truth, kept apart from --out and of the same form: a .parquet "
                                   "file with one row per injected fault, TRUTH.latent.parquet and "
                                   "TRUTH.outcome.parquet beside it; or a folder with faults/, latent/ "
                                   "and outcome/ part files")
    p.add_argument("--process", default=None, help="process file (default: the built-in 50-step process; "
                                                    "'small' for the built-in 12-step one)")
    p.add_argument("--plant", help="simulate this plant instead: a process file of the same structure as "
                                   "--process with other physics (the step data look the same; their "
                                   "physics is the plant's)")
    p.add_argument("--explore", type=share, default=0.2,
                   help="share of batches where past engineers moved levers (default 0.2)")
    p.add_argument("--no-faults", action="store_true", help="inject no faults")
    p.add_argument("--cluster", help="run the chunks on Dask: 'local:N' (N worker processes) or a "
                                     "scheduler address such as tcp://host:8786; with a folder --out "
                                     "the workers write the parts, so it must be reachable from every "
                                     "worker at the same path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _target(text: str) -> Path:
    """``--out``/``--truth``: a .parquet file name, or a folder whose parent exists."""
    path = Path(text)
    if path.is_dir():
        return path
    if path.suffix == ".parquet":
        return output_path(text)
    if path.suffix:
        raise UserError(f"{text}: expected a .parquet file name or a folder (a name without a "
                        f"suffix, or an existing directory)")
    if not path.parent.exists():
        raise UserError(f"{text}: directory {path.parent} does not exist")
    return path


def _prepare(out: Path, truth: Path | None) -> bool:
    """Check the output form; for folders, create them and clear stale parts. True for folders."""
    from simulators.campaign import check_outputs, prepare_folders

    try:
        folder = check_outputs(out, truth)
        if folder:
            prepare_folders(out, truth)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return folder


def run(args: argparse.Namespace) -> int:
    from simulators.campaign import n_chunks, simulate_to_files

    process = load_process_arg(args.process)
    plant = load_plant_arg(args.plant, process)
    file = process
    if plant is not None:
        process = plant  # the world the batches run in
    out = _target(args.out)
    truth = _target(args.truth) if args.truth else None
    folder = _prepare(out, truth)
    if args.cluster:
        summary = _on_cluster(args, process, out, truth)
    else:
        summary = simulate_to_files(process, args.batches, args.seed, out, truth=truth,
                                    explore=args.explore, faults=not args.no_faults,
                                    progress=not args.quiet)
    where = f"{out}/ ({n_chunks(args.batches)} part files)" if folder else str(out)
    print(f"process      {file.name} ({file.n_steps} steps, digest {file.digest})")
    if plant is not None:
        print(f"plant        {args.plant} (digest {plant.digest}): the batches ran on its physics")
    print(f"batches      {summary['batches']}  ({summary['rows']} rows written to {where})")
    print(f"faults       {summary['faults_total']} injected in {summary['faulty_batches']} batches")
    for name, n in summary["faults"].items():
        print(f"  {name:32s} {n}")
    print("flagged at each inspection (sample mean outside a gate):")
    for step, frac in summary["flagged"].items():
        print(f"  step {step:3d}  {100 * frac:5.1f}%")
    print(f"accepted     {100 * summary['accepted']:.1f}% of batches at the end")
    carried = [c.name for c in process.characteristics if c.role == "other"]
    if carried:  # the figures above say nothing about these
        print(f"not simulated {len(carried)} characteristic(s) of role 'other' ({', '.join(carried[:5])}"
              f"{', ...' if len(carried) > 5 else ''}): the simulator has no physics for them and "
              "carries them at their nominal (a station step makes them only in the causal model, "
              "learned from data), so the flags and acceptance above say nothing about them")
        if len(carried) == len(process.characteristics):
            lacks = [w for w, none in (("no levers to explore", not process.levers),
                                       ("no fault catalogue to inject from", not process.faults)) if none]
            print("self-check   means nothing for this process: every characteristic is carried at "
                  "its nominal, so 0% flagged and 100% accepted hold by construction"
                  + (f" ({' and '.join(lacks)})" if lacks else "")
                  + "; check such a line on its measured parts: recovery quality, learn-graph, fit")
    if truth and folder:
        print(f"truth        {truth}/ (faults/, latent/, outcome/)")
    elif truth:
        print(f"truth        {truth} (+ .latent.parquet, .outcome.parquet)")
    return 0


def _on_cluster(args, process, out, truth) -> dict:
    from tqdm import tqdm

    from recovery.distributed import cluster_client, simulate_on_client

    def progress(results, n):
        return tqdm(results, total=n, desc=f"simulate on {args.cluster}", unit="chunk",
                    disable=args.quiet)

    try:
        with cluster_client(args.cluster) as client:
            return simulate_on_client(client, process, args.batches, args.seed, out, truth=truth,
                                      explore=args.explore, faults=not args.no_faults,
                                      progress=progress)
    except (OSError, ValueError) as exc:
        raise UserError(f"--cluster {args.cluster}: {exc}") from None
