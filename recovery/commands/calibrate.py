"""``recovery calibrate``: learn the process file's uncertain physics from a plant's history."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, seed_int


def _day(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a production day (a number), got '{text}'") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite production day, got '{text}'")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="calibrate the simulator's physics on a plant's history",
        description="Learn the process file's uncertain physics parameters (docs/process-format.md, "
                    "'Uncertain physics') from a plant's step data: posterior mean and 94%% interval "
                    "per parameter, whether the history informs it, and posterior predictive checks "
                    "per inspection and characteristic. Writes calibration.json and "
                    "calibration_draws.npy into --out. Exit status 0 when the sampler converged, "
                    "1 when not (the diagnostics say why; nothing is saved as if good).")
    p.add_argument("--data", required=True,
                   help="step data in the step-data schema: a .parquet file or a folder of .parquet "
                        "parts (as 'recovery simulate' writes)")
    p.add_argument("--out", required=True, help="directory to write the calibration to")
    p.add_argument("--process", default=None,
                   help="process file the data belong to (default: the built-in 50-step process; "
                        "'small' for the built-in 12-step one)")
    p.add_argument("--since", type=_day, default=None, metavar="DAY",
                   help="calibrate on batches of production day >= DAY only (a recent window)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--cluster", default=None, metavar="local:N|ADDRESS",
                   help="run the design simulations on Dask workers (same result for the same seed)")
    p.add_argument("--json", action="store_true", help="print the JSON contract instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.calibration import CalibrationError, calibrate
    from recovery.commands.fit import _read

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    process = load_process_arg(args.process)
    args.store = None  # ``fit``'s reader also serves --store, which calibrate does not take
    data = _read(args, process)
    try:
        post = calibrate(data, process, seed=args.seed, cluster=args.cluster, since=args.since)
    except CalibrationError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # a bad --cluster value
        raise UserError(str(exc)) from None
    if post.converged:
        post.save(out)
    else:
        # Keep the draws for a look, under a name nothing loads as a calibration.
        d = out / "not-converged"
        post.save(d)
    if args.json:
        print(json.dumps(post.to_json(), indent=2))
    else:
        _print(post, process, out)
    return 0 if post.converged else 1


def _print(post, process, out: Path) -> None:
    d = post.diagnostics
    print(f"process      {process.name} ({process.n_steps} steps, digest {process.digest})")
    print(f"history      {d.get('n_batches')} complete batches"
          + (f" from day {d['since']:g}" if d.get("since") is not None else "")
          + f"; levers moved: {', '.join(d.get('levers_moved', [])) or 'none'}")
    print(f"method       {post.method}: {len(d.get('rounds', []))} design rounds, "
          f"{d.get('summaries', {}).get('used')} summaries; {post.seconds:.0f} s")
    print(f"sampler      R-hat max {d.get('rhat_max', float('nan')):.3f}, ESS min "
          f"{d.get('ess_bulk_min', float('nan')):.0f}, divergences {d.get('divergences')}, "
          f"outside the emulator's box {d.get('outside_design_box', 0):.1%}")
    print()
    print(f"{'step':>4}  {'parameter':<18} {'unit':<8} {'file':>10} {'mean':>10} "
          f"{'94% interval':>23}  informed")
    for p in post.parameters:
        print(f"{p.step:>4}  {p.param:<18} {p.unit:<8} {p.file_value:>10.4g} {p.mean:>10.4g} "
              f"[{p.low:>10.4g}, {p.high:>10.4g}]  {'yes' if p.informed else 'no'}")
    unin = d.get("uninformed", {})
    if unin:
        print()
        for k, why in unin.items():
            print(f"uninformed   {k}: {why} (its prior is kept)")
    print()
    bad = [c for c in post.checks if not c.ok]
    print(f"checks       {len(post.checks) - len(bad)} of {len(post.checks)} inspection x "
          f"characteristic reproduced")
    for c in bad:
        print(f"  NOT REPRODUCED step {c.step} {c.characteristic}: {c.detail}")
    if post.converged:
        print(f"calibration  {out}")
    else:
        print(f"warning      not converged; draws kept in {out / 'not-converged'} for inspection, "
              f"not as a calibration")
