"""``recovery recommend``: continue, intervene or scrap for a flagged batch.

With ``--decide accept|reject|modify`` the engineer's decision on the
recommendation is stored with its audit entries exactly as the service's
``POST /api/batches/{id}/decision`` stores it (:mod:`recovery.decisions`): one
final decision per batch and step, another one refused (exit 2) unless
``--supersedes`` names the current one.
"""

from __future__ import annotations

import argparse
import json

from recovery.cli import UserError
from recovery.commands._common import model_calibration, read_history, read_store_history, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend", help="recommend continue, intervene or scrap for a batch",
        description="Read a batch's step data so far, ask an agent for a lever plan, and print the "
                    "decision with its expected costs, P(accept) with and without the plan, the "
                    "plan in physical units and the root cause.")
    p.add_argument("--model", required=True, help="fitted causal model directory (recovery fit)")
    p.add_argument("--history", help="step data of the batch so far (.parquet, .csv, or a folder of "
                                      ".parquet parts); without it, --store URL --batch ID reads the "
                                      "batch from a store")
    p.add_argument("--batch", help="batch id, when the history holds several")
    p.add_argument("--agent", default="planner", choices=["planner", "rl", "heuristic", "none"])
    p.add_argument("--policy", help="trained rl policy (for --agent rl)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--no-calibrate", action="store_true",
                   help="plan with the process file's physics even if the model folder holds a calibration")
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    d = p.add_argument_group("recording a decision (audited as the service's POST /api/batches/{id}/decision)")
    d.add_argument("--decide", choices=["accept", "reject", "modify"],
                   help="record this decision on the recommendation in the store, with an audit entry")
    d.add_argument("--plan", nargs="+", metavar="LEVER=VALUE", type=_lever_value,
                   help="with --decide modify: the levers changed (physical units); others keep the "
                        "recommended value")
    d.add_argument("--comment", default="", help="why, for the audit trail")
    d.add_argument("--store", metavar="URL", default=None,
                   help="store URL (default: $RECOVERY_STORE, else the DuckDB file in the user data "
                        "directory); without --history, the batch's step data are read from it too")
    d.add_argument("--by", metavar="NAME", default=None,
                   help="who decides, for the audit trail (default: the login name)")
    d.add_argument("--supersedes", metavar="ID", type=int, default=None,
                   help="id of the final decision this one replaces (needed when the batch has one)")
    p.set_defaults(func=run)


def _lever_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected LEVER=VALUE, got '{text}'")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected a number, got '{value}'") from None


def run(args: argparse.Namespace) -> int:
    from recovery.agents import make_agent
    from recovery.pipeline import load_model, load_policy
    from recovery.recommend import RecommendationError, recommend
    from simulators.process import Simulator
    from simulators.schema import check_rows

    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--model {args.model}: {exc}") from None
    process = model.graph_.process
    if args.history is not None:
        history = read_history(args.history, check=True, csv=True)
    elif args.store is not None and args.batch is not None:
        history = read_store_history(args.store, process, batch=args.batch)
    else:
        raise UserError("give --history FILE, or --store URL with --batch ID")
    posterior = model_calibration(args.model, process, skip=args.no_calibrate)
    bad = check_rows(history, process)
    if len(bad):
        first = bad.iloc[0]
        raise UserError(f"{args.history or args.store}: does not fit the model's process '{process.name}' "
                        f"({len(bad)} rows; first: row {first['row']}, {first['column']}: {first['reason']})")
    policy = load_policy(args.policy) if args.agent == "rl" and args.policy else None
    try:
        agent = make_agent(args.agent, Simulator(process), model=model, policy=policy, posterior=posterior)
        rec = recommend(history, model, batch=args.batch, agent=agent, seed=args.seed, posterior=posterior)
    except (RecommendationError, ValueError) as exc:
        raise UserError(str(exc)) from None
    recorded = None
    if args.decide is not None:
        recorded = _record(args, process, model.version_.id, history, rec,
                           None if posterior is None else posterior.fingerprint)
    elif args.plan or args.supersedes is not None:
        raise UserError("--plan and --supersedes go with --decide")
    if args.json:
        body = rec.to_dict()
        if recorded is not None:
            body["recorded_decision"] = recorded
        print(json.dumps(body, indent=2))
    else:
        print(format_recommendation(rec))
        if recorded is not None:
            print(f"decision {recorded['decision_id']} recorded ({recorded['decision']} after step "
                  f"{recorded['after_step']}; audit entry {recorded['audit_id']})")
    return 0


def _record(args, process, model_version: str, history, rec, physics: str | None) -> dict:
    """Store the decision as the service does; a conflicting final decision is a UserError (exit 2)."""
    import getpass

    from recovery.data.store import StoreError, open_store
    from recovery.decisions import DecisionConflict, DecisionError, decided_plan, input_hash, record_decision

    plan = dict(args.plan) if args.plan else None
    if plan is not None and len(plan) != len(args.plan):
        raise UserError("--plan names a lever twice")
    try:
        final = decided_plan(process, rec, args.decide, plan)
    except DecisionError as exc:
        raise UserError(f"--decide {args.decide}: {exc}") from None
    rows = history[history["batch_id"].astype(str) == rec.batch_id]
    actor = f"cli:{args.by or getpass.getuser()}"
    try:
        with open_store(args.store, shared=True) as st, st.transaction():
            return record_decision(
                st, process=process, batch_id=rec.batch_id, rec=rec, decision=args.decide,
                comment=args.comment, plan=final, actor=actor, partner=None, role="cli",
                model_version=model_version, input_hash=input_hash(rows, model_version, rec.seed, physics),
                supersedes=args.supersedes)
    except DecisionConflict as exc:
        raise UserError(_conflict_message(exc)) from None
    except StoreError as exc:
        raise UserError(f"--store: {exc}") from None


def _conflict_message(exc) -> str:
    b, step, current = exc.batch_id, exc.after_step, exc.current
    if exc.supersedes is None:
        return (f"batch {b} already has a final decision after step {step} (decision {current}); "
                f"to replace it, add --supersedes {current}")
    if current < 0:
        return f"batch {b} has no final decision after step {step} to supersede; leave out --supersedes"
    return (f"decision {exc.supersedes} is not the final decision of batch {b} after step {step} "
            f"(decision {current} is); to replace that one, use --supersedes {current}")


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
