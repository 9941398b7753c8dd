"""``recovery measure``: which extra measurement pays on a flagged batch before its next lever decision."""

from __future__ import annotations

import argparse
import json

from recovery.cli import UserError
from recovery.commands._common import model_calibration, read_history, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure", help="rank the extra measurements worth taking on a flagged batch",
        description="For a flagged batch's current situation, rank the measurements that could be taken "
                    "before the next lever decision (each characteristic, now or at the next steps "
                    "before a lever acts, on n bars) by their expected value of sample information "
                    "minus their cost, by preposterior analysis on the causal model's posterior "
                    "(docs/value-of-information.md).")
    p.add_argument("--model", required=True, help="fitted causal model directory (recovery fit)")
    p.add_argument("--history", required=True, help="step data of the batch so far (.parquet, .csv, "
                                                       "or a folder of .parquet parts)")
    p.add_argument("--batch", help="batch id, when the history holds several")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--budget", choices=["default", "tiny"], default="default",
                   help="posterior draws and plan-search budget ('tiny' for tests and smoke runs)")
    p.add_argument("--top", type=int, default=10, help="candidates shown in the table (the JSON has all)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="use the process file's physics even if the model folder holds a calibration")
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.pipeline import load_model
    from recovery.voi.batch import TINY, MeasureConfig, MeasureError, measure
    from simulators.schema import check_rows

    try:
        # the analysis plans on the posterior draws only: no ArviZ (about 1 s of the command)
        model = load_model(args.model, posterior="draws")
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--model {args.model}: {exc}") from None
    history = read_history(args.history, check=True, csv=True)
    process = model.graph_.process
    bad = check_rows(history, process)
    if len(bad):
        first = bad.iloc[0]
        raise UserError(f"{args.history}: does not fit the model's process '{process.name}' "
                        f"({len(bad)} rows; first: row {first['row']}, {first['column']}: {first['reason']})")
    posterior = model_calibration(args.model, process, skip=args.no_calibrate)
    try:
        a = measure(history, model, batch=args.batch, seed=args.seed, posterior=posterior,
                    config=TINY if args.budget == "tiny" else MeasureConfig())
    except (MeasureError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(a.to_dict(), indent=2))
    else:
        print(format_analysis(a, args.top))
    return 0


def format_analysis(a, top: int = 10) -> str:
    c = a.currency
    lines = [f"batch {a.batch_id} after step {a.step}: deciding now, {a.decision_now.upper()} "
             f"(expected net value to come {a.value_now:,.0f} {c})", "",
             f"  {'step':>4s}  {'characteristic':18s} {'bars':>4s} {'EVSI':>9s} {'interval':>19s} "
             f"{'cost':>7s} {'net':>9s}"]
    for k in a.candidates[:top]:
        lines.append(f"  {k.step:4d}  {k.characteristic:18s} {k.sample:4d} {k.evsi:9,.1f} "
                     f"{'[' + f'{k.low:,.1f}, {k.high:,.1f}' + ']':>19s} {k.cost:7,.1f} {k.net:9,.1f}")
    best = a.candidates[0] if a.candidates else None
    lines.append("")
    if best is not None and best.net > 0:
        lines.append(f"  measure first: {best.characteristic} on {best.sample} bars after step {best.step}"
                     + (f"; {best.changes_decision}" if best.changes_decision else ""))
    else:
        lines.append("  no measurement pays for itself here: decide now")
    lines.append(f"  EVSI interval: {a.interval}; money in {c}")
    lines.append("  draws and rollouts use " + ("the model folder's calibrated physics" if a.physics == "calibrated"
                                                else "the process file's physics (no calibration)"))
    return "\n".join(lines)
