"""``recovery sensors``: which change to the inspection plan pays for the plant.

A thin shell over :mod:`recovery.voi.plant`: load the model folder (its process
file, calibration and fault rates), the candidates, simulate a season under each
plan, print the ranking; ``--apply N --out FILE`` writes the N-th ranked change
into a copy of the process file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import model_calibration, positive_int, read_history, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensors", help="rank changes to the inspection plan by their value for the plant",
        description="Simulate a season of batches from the fitted model's world (the process file, the "
                    "calibrated physics and the fault rates the model learnt) under today's inspection "
                    "plan and under each candidate change (a characteristic added at an inspection, a "
                    "larger sample, a new inspection on a washing step), with the same batches and noise, "
                    "and rank the changes by expected gain in net value minus their cost per 1,000 "
                    "batches. See docs/value-of-information.md.")
    p.add_argument("--model", required=True, help="fitted causal model directory (recovery fit)")
    p.add_argument("--data", required=True, help="the plant's history (step data), to check that the "
                                                   "simulated world flags batches as often as the plant does")
    p.add_argument("--candidates", help="candidate changes, a .toml file (default: the documented default set)")
    p.add_argument("--policy", choices=["heuristic", "none"], default="heuristic",
                   help="what the plant does with a flagged batch in the simulation (default: the "
                        "heuristic agent's rule; see the docs for why not the planner)")
    p.add_argument("--shortlist-policy", choices=["planner"],
                   help="value the best --shortlist changes again with this policy (the planner agent on "
                        "the model folder) on --shortlist-batches batches; new stations are passed over "
                        "(the planner's causal model reads nothing there)")
    p.add_argument("--shortlist", type=positive_int, default=3, help="changes to value again (default 3)")
    p.add_argument("--shortlist-batches", type=positive_int, default=200,
                   help="batches of the shortlist's season (default 200)")
    p.add_argument("--planner-budget", choices=["default", "tiny"], default="tiny",
                   help="the planner's search budget for the shortlist (default tiny: 16 trials on 16 draws, "
                        "about 0.2 s of CPU a decision)")
    p.add_argument("--batches", type=positive_int, default=1000, help="simulated batches (default 1000)")
    p.add_argument("--season", type=positive_int, default=1000,
                   help="batches the interval's realised gain is averaged over (default 1000)")
    p.add_argument("--world-draws", type=positive_int, default=16,
                   help="draws of the world (physics and fault rates) the batches are spread over")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--no-calibrate", action="store_true", help="use the file's physics even if the model "
                                                                "folder holds a calibration")
    p.add_argument("--apply", type=positive_int, metavar="N",
                   help="write the N-th ranked change (1 = best) into a copy of the process file (--out)")
    p.add_argument("--out", help="with --apply: the changed process file to write")
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.pipeline import load_model
    from recovery.voi.candidates import CandidateError, default_candidates, load_candidates
    from recovery.voi.plant import (HeuristicPolicy, NonePolicy, changed_process, history_flag_shares,
                                    rank_candidates, world_flag_shares, world_from_model)
    from simulators.schema import check_rows

    if (args.apply is None) != (args.out is None):
        raise UserError("--apply and --out go together")
    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--model {args.model}: {exc}") from None
    process = model.graph_.process
    text_path = Path(args.model) / "process.toml"
    try:
        text = text_path.read_text("utf-8")
    except OSError as exc:
        raise UserError(f"--model {args.model}: cannot read its process file: {exc.strerror or exc}") from None
    posterior = model_calibration(args.model, process, skip=args.no_calibrate)
    history = read_history(args.data, check=True)
    bad = check_rows(history, process)
    if len(bad):
        first = bad.iloc[0]
        raise UserError(f"{args.data}: does not fit the model's process '{process.name}' "
                        f"({len(bad)} rows; first: row {first['row']}, {first['column']}: {first['reason']})")
    try:
        cands = (load_candidates(args.candidates, process) if args.candidates
                 else default_candidates(process))
    except CandidateError as exc:
        raise UserError(str(exc)) from None
    if args.apply is not None and args.apply > len(cands):
        raise UserError(f"--apply {args.apply}: there are {len(cands)} candidates")
    world = world_from_model(process, model=model, posterior=posterior, n_sets=args.world_draws,
                             seed=args.seed)
    policy = HeuristicPolicy(process) if args.policy == "heuristic" else NonePolicy()
    try:
        result = rank_candidates(text, process, cands, world, policy, n_batches=args.batches, seed=args.seed,
                                 season=args.season, progress=not args.quiet)
    except CandidateError as exc:
        raise UserError(str(exc)) from None
    if args.shortlist_policy == "planner":
        from recovery.agents.planner_agent import PlannerAgent
        from recovery.voi.plant import AgentPolicy, value_shortlist

        planner = AgentPolicy(PlannerAgent(model, posterior=posterior, budget=args.planner_budget), seed=args.seed)
        result["shortlist"] = value_shortlist(result, text, process, cands, world, planner,
                                              shortlist=args.shortlist, n_batches=args.shortlist_batches,
                                              seed=args.seed, season=args.season,
                                              skip_changes=("add_inspection",), progress=not args.quiet)
        result["shortlist"]["budget"] = args.planner_budget
    shares_hist = history_flag_shares(process, history)
    shares_world = world_flag_shares(world, min(args.batches, 2000), args.seed)
    result["flag_check"] = [{"step": i.step, "history": float(h), "world": float(w)}
                            for i, h, w in zip(process.inspections, shares_hist, shares_world)]
    result["currency"] = process.economics.currency
    result["process"] = {"name": process.name, "digest": process.digest, "path": str(text_path)}
    if args.apply is not None:
        row = result["candidates"][args.apply - 1]
        # the file exactly as valued: the ranking's gates (set on the world's physics)
        new_text, _ = changed_process(text, process, cands[row["index"]], gates=row["gates"])
        out = Path(args.out)
        try:
            out.write_text(new_text, "utf-8")
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
        result["applied"] = {"rank": args.apply, "label": row["label"], "out": str(out)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_ranking(result))
    if args.apply is not None and not args.json:
        print(f"\nwrote {result['applied']['out']}: {result['applied']['label']}", file=sys.stderr)
    return 0


def format_ranking(result: dict) -> str:
    """Human-readable ranking of a ``recovery sensors`` result.

    The changes that can alter a decision are ranked first; those that altered none
    (gain exactly 0, placed by their cost alone) are listed apart with the reason. The
    ``#`` column is the change's place in the JSON's ``"candidates"`` (``--apply N``).
    """
    cur = result["currency"]
    b = result["baseline"]
    lines = [f"process      {result['process']['name']} (digest {result['process']['digest']})",
             f"world        {result['world']}; {result['n_batches']} batches, seed {result['seed']}",
             f"policy       {result.get('policy_description', result['policy'])}",
             f"today        net {b['net_value_per_batch']:.0f} {cur}/batch, accepted {100 * b['accepted']:.1f}%, "
             f"flagged {100 * b['flagged']:.1f}%, inspections {b['inspection_cost_per_batch']:.0f} {cur}/batch",
             "flagged at each inspection, history / simulated world (nominal plan): "
             + ", ".join(f"{r['step']}: {100 * r['history']:.1f}/{100 * r['world']:.1f}%"
                         for r in result["flag_check"]),
             "",
             f"changes that can alter a decision, by net gain per 1,000 batches ({cur}); interval: 94% for a "
             f"season of {result['season']} batches",
             f"{'#':>4s} {'gain':>9s} {'94% interval':>21s} {'cost':>9s} {'net':>9s} {'payback':>8s}  change",
             ]
    ranked = [(k, r) for k, r in enumerate(result["candidates"], start=1) if r.get("alters_decisions", True)]
    inert = [(k, r) for k, r in enumerate(result["candidates"], start=1) if not r.get("alters_decisions", True)]
    for k, r in ranked:
        pb = "never" if r["payback_batches"] is None else f"{r['payback_batches']:.0f}"
        lines.append(f"{k:4d} {r['gain_per_1000']:9.0f} {r['low']:10.0f}..{r['high']:<9.0f} "
                     f"{r['cost_per_1000']:9.0f} {r['net_per_1000']:9.0f} {pb:>8s}  {r['label']}")
    if not ranked:
        lines.append("   (none)")
    sl = result.get("shortlist")
    if sl:
        lines += ["", f"shortlist valued again: {sl['policy_description']} (budget {sl.get('budget')}), "
                      f"{sl['n_batches']} batches, the rule on the same batches beside it",
                  f"{'#':>4s} {'gain':>9s} {'94% interval':>21s} {'net':>9s} {'rule gain':>10s}  change"]
        pos = {r["index"]: k for k, r in enumerate(result["candidates"], start=1)}
        for r in sl["rows"]:
            lines.append(f"{pos[r['index']]:4d} {r['gain_per_1000']:9.0f} {r['low']:10.0f}..{r['high']:<9.0f} "
                         f"{r['net_per_1000']:9.0f} {r['rule_gain_per_1000']:10.0f}  {r['label']}")
        if sl["skipped"]:
            lines.append("   passed over (the planner's model reads nothing at a new station): "
                         + "; ".join(sl["skipped"]))
    if inert:
        lines += ["", f"changes that altered no decision (gain 0 on every batch; cost per 1,000 batches, {cur}); "
                      "structural: no season could differ; season: held on every batch simulated",
                  f"{'#':>4s} {'cost':>9s}  {'basis':10s}  change: why"]
        for k, r in inert:
            lines.append(f"{k:4d} {r['cost_per_1000']:9.0f}  {r['no_decision_basis']:10s}  {r['label']}: "
                         f"{r['no_decision_reason']}")
    return "\n".join(lines)
