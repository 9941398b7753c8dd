"""``recovery recommend``: continue, intervene or scrap for a flagged batch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend", help="recommend continue, intervene or scrap for a batch",
        description="Read a batch's step data so far, ask an agent for a lever plan, and print the "
                    "decision with its expected costs, P(accept) with and without the plan, the "
                    "plan in physical units and the root cause.")
    p.add_argument("--model", required=True, help="fitted causal model directory (recovery fit)")
    p.add_argument("--history", required=True, help="step data of the batch so far (.parquet, .csv, "
                                                       "or a folder of .parquet parts)")
    p.add_argument("--batch", help="batch id, when the history holds several")
    p.add_argument("--agent", default="planner", choices=["planner", "rl", "heuristic", "none"])
    p.add_argument("--policy", help="trained rl policy (for --agent rl)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--no-calibrate", action="store_true",
                   help="plan with the process file's physics even if the model folder holds a calibration")
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    p.set_defaults(func=run)


def read_history(path: str):
    import pandas as pd

    from simulators.campaign import read_campaign
    from simulators.schema import SchemaError, validate

    f = Path(path)
    if not f.exists():
        raise UserError(f"{path}: no such file or folder")
    try:
        df = read_campaign(f) if f.is_dir() or f.suffix == ".parquet" else pd.read_csv(f)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        return validate(df)
    except SchemaError as exc:
        raise UserError(f"{path}: not step data in the schema: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from recovery.agents import make_agent
    from recovery.calibration import CalibrationLoadError
    from recovery.pipeline import load_model, load_policy, load_posterior
    from recovery.recommend import RecommendationError, recommend
    from simulators.process import Simulator
    from simulators.schema import SchemaError, check_rows

    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--model {args.model}: {exc}") from None
    history = read_history(args.history)
    process = model.graph_.process
    posterior = None
    if not args.no_calibrate:
        try:
            posterior = load_posterior(args.model)
            if posterior is not None:
                posterior.check_process(process)
        except CalibrationLoadError as exc:
            raise UserError(f"--model {args.model}: {exc}") from None
    bad = check_rows(history, process)
    if len(bad):
        first = bad.iloc[0]
        raise UserError(f"{args.history}: does not fit the model's process '{process.name}' "
                        f"({len(bad)} rows; first: row {first['row']}, {first['column']}: {first['reason']})")
    policy = load_policy(args.policy) if args.agent == "rl" and args.policy else None
    try:
        agent = make_agent(args.agent, Simulator(process), model=model, policy=policy, posterior=posterior)
        rec = recommend(history, model, batch=args.batch, agent=agent, seed=args.seed, posterior=posterior)
    except (RecommendationError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        print(format_recommendation(rec))
    return 0


def format_recommendation(rec) -> str:
    c = rec.currency
    pa, pn = rec.p_accept, rec.p_accept_do_nothing
    lines = [f"batch {rec.batch_id} after step {rec.step}: {rec.decision.upper()}",
             f"  P(accept) with the plan   {pa['mean']:.2f}  (94% interval {pa['low']:.2f}-{pa['high']:.2f})",
             f"  P(accept) doing nothing   {pn['mean']:.2f}  (94% interval {pn['low']:.2f}-{pn['high']:.2f})",
             "  expected cost: " + ", ".join(f"{k} {v:,.0f} {c}" for k, v in rec.expected_cost.items())]
    if not rec.plan and rec.note.startswith("no levers"):
        lines[1:3] = [f"  no levers; P(accept)       {pn['mean']:.2f}  (94% interval {pn['low']:.2f}-{pn['high']:.2f})"]
    if rec.p_accept_model is not None and rec.plan:
        lines.insert(3, f"  (the causal model alone: {rec.p_accept_model:.2f} with the plan)")
    if rec.out_of_range:
        lines.append("  WARNING: outside what the model's data supports: " + "; ".join(rec.reasons))
    if rec.plan:
        lines.append("")
        lines.append(f"  {'step':>4s}  {'lever':28s} {'value':>10s}  unit")
        for row in rec.plan:
            lines.append(f"  {row['step']:4d}  {row['lever']:28s} {row['value']:10.4g}  {row['unit']}")
    if rec.acts_on:
        lines += ["", "  the plan acts on:"] + [f"    {a}" for a in rec.acts_on]
    if rec.root_cause:
        lines += ["", "  root cause (posterior):"]
        for rc in rec.root_cause[:3]:
            lines.append(f"    {rc['probability']:.2f}  step {rc['step']} {rc['cause']}: {rc['path']}")
    physics = ("calibrated physics (the model folder's calibration)" if rec.physics == "calibrated"
               else "the process file's physics (no calibration)")
    lines += ["", f"  model {rec.model_version}, agent {rec.agent}, seed {rec.seed}; plans use {physics}"]
    return "\n".join(lines)
