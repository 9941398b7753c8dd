"""``recovery evaluate``: agents in closed loop on fresh simulated batches."""

from __future__ import annotations

import argparse
import json
import sys

from recovery.cli import UserError
from recovery.commands._common import describe, load_plant_arg, load_process_arg, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="compare agents in closed loop on fresh batches",
        description="Simulate fresh batches with faults; every agent acts on each flagged batch "
                    "from the inspection that flags it, re-planning at each later inspection, with "
                    "the same future noise. Reports recovery rate, net value, scrap avoided, regret "
                    "against the oracle, lever-bound violations and decision latency.")
    p.add_argument("--batches", type=positive_int, required=True, help="fresh batches to simulate")
    p.add_argument("--seed", type=seed_int, required=True)
    p.add_argument("--agents", default="planner,rl,heuristic,none,oracle",
                   help="comma-separated: planner, rl, heuristic, none, oracle, planner+measure "
                        "(the planner, measuring first when it pays: docs/value-of-information.md)")
    p.add_argument("--process", default=None, help="process file the agents know: a path, 'default' or "
                                                    "'small'")
    p.add_argument("--plant", help="the world: a process file of the same structure as --process with "
                                   "other physics. History and fresh batches are simulated from it and "
                                   "the oracle plans with it; the other agents only get --process "
                                   "(default: the world is --process itself)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="plan with the process file's physics even when the model folder holds a "
                        "calibration (and do not calibrate when fitting from nothing)")
    p.add_argument("--model", help="fitted causal model directory (default: simulate "
                                   "--train-batches on another seed and fit)")
    p.add_argument("--policy", help="trained rl policy (default: train with the default budget)")
    p.add_argument("--train-batches", type=positive_int, default=1000,
                   help="historical batches to fit the model on when --model is not given")
    p.add_argument("--budget", choices=["default", "tiny"], default="default",
                   help="search and training budgets ('tiny' for smoke tests)")
    p.add_argument("--cluster", help="run the evaluation chunks on Dask: 'local:N' or a scheduler "
                                     "address (the model and policy are passed as paths)")
    p.add_argument("--json", action="store_true", help="print the JSON contract instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import recovery.voi  # noqa: F401  (registers the planner+measure agent)
    from recovery.agents import AGENTS, make_agent
    from recovery.evaluate import evaluate_agents
    from simulators.process import Simulator

    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in names if a not in AGENTS]
    if unknown or not names:
        raise UserError(f"unknown agent(s) {unknown}; choose from {', '.join(AGENTS)}")
    process = load_process_arg(args.process)
    plant = load_plant_arg(args.plant, process)
    sim = Simulator(process if plant is None else plant)  # the world
    model = policy = posterior = None
    model_dir = policy_path = None
    # rl alone fits nothing: it trains on the file unless --model brings a calibration
    if "planner" in names or "planner+measure" in names or ("rl" in names and args.model and not args.policy):
        from recovery.pipeline import load_or_fit_model, load_posterior
        model, model_dir = load_or_fit_model(args, process, log=sys.stderr, plant=plant)
        if not args.no_calibrate:
            from recovery.calibration import CalibrationLoadError
            try:
                posterior = load_posterior(model_dir)
            except CalibrationLoadError as exc:
                raise UserError(f"--model {model_dir}: {exc}") from None
    if "rl" in names:
        from recovery.pipeline import load_or_train_policy
        policy, policy_path = load_or_train_policy(args, process, model, log=sys.stderr, posterior=posterior)
    if args.cluster:
        from recovery.distributed import cluster_client
        from recovery.evaluate import evaluate_on_cluster
        try:
            with cluster_client(args.cluster) as client:
                result = evaluate_on_cluster(client, process, tuple(names), args.batches, args.seed,
                                             model_dir=model_dir, policy_path=policy_path,
                                             budget=args.budget, progress=not args.quiet, plant=plant,
                                             calibrated=not args.no_calibrate)
        except (OSError, ValueError) as exc:
            raise UserError(f"--cluster {args.cluster}: {exc}") from None
    else:
        agents = [make_agent(n, sim, model=model, policy=policy, budget=args.budget, process=process,
                             posterior=posterior) for n in names]
        result = evaluate_agents(sim, agents, args.batches, args.seed, progress=not args.quiet,
                                 process=process)
    result["plant"] = describe(sim.process, args.plant if plant is not None else args.process)
    result["process"] = describe(process, args.process)
    result["calibrated"] = posterior is not None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_tables(result, process.economics.currency))
    return 0


def format_tables(result: dict, currency: str) -> str:
    """Human-readable tables of an evaluation result."""
    lines = []
    if "plant" in result:
        pl, pr = result["plant"], result["process"]
        same = pl["digest"] == pr["digest"]
        lines += [f"plant        {pl['name']} ({pl['path']}, digest {pl['digest']})"
                  + ("  = the process file" if same else ""),
                  f"process      {pr['name']} ({pr['path']}, digest {pr['digest']}): what the agents "
                  f"know; the oracle alone plans with the plant",
                  "physics      " + ("the planner plans with the calibrated physics (model folder)"
                                     if result.get("calibrated") else "the planner plans with the process "
                                     "file's physics (no calibration)")]
    lines += [f"{result['n_flagged']} flagged of {result['n_batches']} fresh batches (seed {result['seed']})", ""]
    head = (f"{'agent':10s} {'recovered':>9s} {'net value':>11s} {'scrap avoided':>13s} "
            f"{'regret':>9s} {'violations':>10s} {'p50 ms':>8s} {'p95 ms':>8s}")
    lines += [head, "-" * len(head)]

    def num(x, fmt):
        return format(x, fmt) if x is not None else "-"

    for name, r in result["agents"].items():
        lines.append(f"{name:10s} {100 * r['recovery_rate']:8.1f}% {r['net_value']:7.0f} {currency:3s} "
                     f"{num(r['scrap_avoided'] and 100 * r['scrap_avoided'], '12.1f')}% "
                     f"{num(r['regret'], '9.0f')} {r['lever_bound_violations']:10d} "
                     f"{1000 * r['latency_p50_s']:8.1f} {1000 * r['latency_p95_s']:8.1f}")
    faults = sorted({f for r in result["agents"].values() for f in r["by_fault"]})
    names = list(result["agents"])
    lines += ["", "recovery rate by fault (n)", f"{'fault':30s} {'n':>4s} " + " ".join(f"{n:>9s}" for n in names)]
    for f in faults:
        n = next(r["by_fault"][f]["n"] for r in result["agents"].values() if f in r["by_fault"])
        cells = " ".join(f"{100 * result['agents'][a]['by_fault'].get(f, {}).get('recovery_rate', 0):8.0f}%"
                         for a in names)
        lines.append(f"{f:30s} {n:4d} {cells}")
    cal = {a: r["calibration"] for a, r in result["agents"].items() if r.get("calibration")}
    if cal:
        lines += ["", "the agent's own P(accept) at its first decision against the outcome",
                  f"{'agent':10s} {'n':>4s} {'predicted':>9s} {'observed':>9s} {'Brier':>6s}   by bin: predicted/observed (n)"]
        for a, c in cal.items():
            bins = "  ".join(f"{b['predicted']:.2f}/{b['observed']:.2f} ({b['n']})" for b in c["bins"])
            lines.append(f"{a:10s} {c['n']:4d} {c['predicted']:9.2f} {c['observed']:9.2f} {c['brier']:6.3f}   {bins}")
    return "\n".join(lines)
