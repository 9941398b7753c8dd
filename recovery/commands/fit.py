"""``recovery fit``: fit the Bayesian causal process model to step data (a .parquet file,
a folder of Parquet parts, or a store)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, positive_int, read_history, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit the causal process model to step data",
        description="Fit the Bayesian causal process model (PyMC) to step data and write it to a "
                    "directory. Prints convergence diagnostics: R-hat, effective sample size, "
                    "divergences.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="step data in the step-data schema: a .parquet file or a "
                                     "folder of .parquet parts (as 'recovery simulate' writes)")
    src.add_argument("--store", metavar="URL", help="read the step data from a store instead")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--process", default=None,
                   help="process file the data belong to (default: the built-in 50-step process; "
                        "'small' for the built-in 12-step one)")
    p.add_argument("--edits", help="engineers' graph edits and priors, a .toml file "
                                   "(see examples/expert_edits.toml)")
    p.add_argument("--update", metavar="MODEL_DIR",
                   help="update this fitted model with the new batches in the data (previous "
                        "posterior as prior) instead of fitting from scratch")
    p.add_argument("--method", choices=["nuts", "advi"], default="nuts",
                   help="NUTS (default; nutpie when available) or fast approximate ADVI")
    p.add_argument("--draws", type=positive_int, default=500, help="posterior draws per chain (default 500)")
    p.add_argument("--tune", type=positive_int, default=500, help="tuning steps per chain (default 500)")
    p.add_argument("--chains", type=positive_int, default=2, help="chains (default 2)")
    p.add_argument("--advi-steps", type=positive_int, default=20000, help="ADVI steps (default 20000)")
    p.add_argument("--likelihood", choices=["auto", "dense"], default="auto",
                   help="auto (default): factorise the likelihood along the causal graph where that "
                        "is exact (one bar per batch or every bar gauged, no gauge sigma), which is "
                        "much faster on wide lines; dense: always the multivariate normal of a "
                        "batch's readings (the same density, the reference)")
    p.add_argument("--warm-start", metavar="TUNE", type=positive_int, nargs="?", const=200, default=None,
                   help="NUTS: start from the adapted state an earlier healthy fit of the same process "
                        "structure left in the fit cache, with TUNE tuning steps (default 200); the "
                        "draws then depend on the cache, so a cold fit (the default) is what the same "
                        "seed reproduces anywhere")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="do not calibrate the process file's physics on the data (by default the "
                        "calibration is saved in OUT/calibration/ and recommend, evaluate, train-rl "
                        "and the service plan with it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _read(args, process):
    if args.data:
        return read_history(args.data)
    try:
        from recovery.data.store import open_store
    except ImportError:
        raise UserError("--store needs recovery.data.store, which is not installed") from None
    try:
        return open_store(args.store).read_steps(process=process.name)
    except Exception as exc:  # noqa: BLE001 - store errors carry their own message
        raise UserError(f"cannot read step data from the store: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from recovery.causal.graph import ExpertEditError
    from recovery.causal.model import CausalModel, DataError, FitConfig, ModelLoadError

    config = FitConfig(method=args.method, draws=args.draws, tune=args.tune, chains=args.chains,
                       advi_steps=args.advi_steps, seed=args.seed, likelihood=args.likelihood,
                       warm_tune=args.warm_start)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    try:
        if args.update:
            previous = CausalModel.load(args.update)
            process = previous.graph_.process
            data = _read(args, process)
            print(f"updating model {previous.version_.id} ({previous.report_.n_batches} batches) ...")
            model = previous.update(data, progress=not args.quiet, config=config)
        else:
            process = load_process_arg(args.process)
            data = _read(args, process)
            model = CausalModel(process, edits=args.edits, config=config)
            print(f"fitting '{process.name}' ({process.n_steps} steps, digest {process.digest}) ...")
            model.fit(data, progress=not args.quiet)
    except (DataError, ExpertEditError, ModelLoadError) as exc:
        raise UserError(str(exc)) from None
    for line in model.report_.lines():
        print(line)
    model.save(out)
    print(f"model        {out} (version {model.version_.id})")
    if not args.no_calibrate:
        import sys

        from recovery.pipeline import calibrate_into
        calibrate_into(data, process, out, seed=args.seed, log=sys.stdout)
    if not model.report_.converged:
        print("warning      the sampler did not converge (R-hat >= 1.1 or divergences); "
              "fit again with more --tune/--draws before trusting the answers")
    return 0
