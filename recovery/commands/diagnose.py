"""``recovery diagnose``: state estimate and root cause of batches from their history."""

from __future__ import annotations

import argparse
import json
from recovery.cli import UserError
from recovery.commands._common import read_history, read_store_history


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="estimate a batch's hidden state and the root cause of its deviation",
        description="For each batch in a history file or folder of Parquet parts (step data "
                    "in the schema), print the "
                    "posterior of its hidden characteristics at its last inspection and the "
                    "posterior over root causes (step, fault type or characteristic) with the "
                    "causal path in words, and per step the probability that its own "
                    "contribution is the one out of the ordinary. --store URL --batch ID reads "
                    "the batch from a store instead. --json prints a list with one object per batch: "
                    '{"batch_id", "step", "state": {variable: {"mean", "hdi_low", "hdi_high", '
                    '"unit"}}, "root_cause": [{"step", "cause", "probability", "path"}], '
                    '"steps": [{"step", "name", "probability"}], '
                    '"out_of_range"}; both lists are sorted by probability, highest first.')
    p.add_argument("--model", required=True, help="model directory written by 'recovery fit'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--history", help="step data of one or more batches: a .parquet file, a .csv "
                                       "file in the step-data schema, or a folder of .parquet parts")
    src.add_argument("--store", metavar="URL", help="read the batch from a store (with --batch)")
    p.add_argument("--batch", help="diagnose only this batch (default: every batch in the file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--top", type=int, default=5, help="root causes to print in text mode (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.causal.model import CausalModel, DataError, ModelLoadError
    from recovery.causal.queries import batches_in

    try:
        model = CausalModel.load(args.model)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    if args.store is not None:
        if args.batch is None:
            raise UserError("--store needs --batch ID (the batch to diagnose)")
        history = read_store_history(args.store, model.graph_.process, batch=args.batch)
    else:
        history = read_history(args.history, batch=args.batch, check=True, process=model.graph_.process,
                               csv=True)   # as recommend reads it
    results = []
    try:
        for b in batches_in(history):
            rows = history[history["batch_id"].astype(str) == b]
            st = model.state(rows)
            rc = model.root_cause(rows)
            results.append((st, rc))
    except DataError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps([{
            "batch_id": st.batch_id,
            "step": st.step,
            "state": st.to_dict(),
            "root_cause": [c.to_dict() for c in rc.causes],
            "steps": [s.to_dict() for s in rc.steps],
            "out_of_range": bool(st.out_of_range or rc.out_of_range),
            **({"note": rc.note} if rc.note else {}),
        } for st, rc in results], indent=1))
        return 0
    for st, rc in results:
        print(f"batch {st.batch_id}: state at step {st.step} (posterior mean, 94% HDI)")
        for name, e in st.variables.items():
            print(f"  {name:20s} {e.mean:12.5g} {e.unit:6s} [{e.hdi_low:.5g}, {e.hdi_high:.5g}]")
        where = f"flagged at step {rc.step}" if rc.flagged else f"not flagged; readings up to step {rc.step}"
        print(f"root cause ({where}; P(deviation) {rc.p_deviation:.2f}):")
        for i, c in enumerate(rc.causes[: args.top], 1):
            print(f"  {i}. {c.probability:5.3f}  step {c.step:3d}  {c.cause}")
            print(f"           {c.path}")
        if rc.steps:
            print("  by step (its own contribution out of the ordinary): " + ", ".join(
                f"step {s.step} {s.name} {s.probability:.2f}" for s in rc.steps[: args.top]))
        if rc.note:
            print(f"  {rc.note}")
        reasons = list(dict.fromkeys(st.reasons + rc.reasons))
        if reasons:
            print("OUT OF RANGE: the answers extrapolate beyond the training data:")
            for r in reasons:
                print(f"  - {r}")
        print()
    return 0
