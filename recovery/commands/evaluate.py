"""``recovery evaluate``: agents in closed loop on fresh simulated batches."""

from __future__ import annotations

import argparse
import json
import sys

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, positive_int, seed_int


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
                   help="comma-separated: planner, rl, heuristic, none, oracle")
    p.add_argument("--process", default=None, help="process file, 'default' or 'small'")
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
    from recovery.agents import AGENTS, make_agent
    from recovery.evaluate import evaluate_agents
    from simulators.process import Simulator

    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in names if a not in AGENTS]
    if unknown or not names:
        raise UserError(f"unknown agent(s) {unknown}; choose from {', '.join(AGENTS)}")
    process = load_process_arg(args.process)
    sim = Simulator(process)
    model = policy = None
    model_dir = policy_path = None
    if "planner" in names:
        from recovery.pipeline import load_or_fit_model
        model, model_dir = load_or_fit_model(args, process, log=sys.stderr)
    if "rl" in names:
        from recovery.pipeline import load_or_train_policy
        policy, policy_path = load_or_train_policy(args, process, model, log=sys.stderr)
    if args.cluster:
        from recovery.distributed import cluster_client
        from recovery.evaluate import evaluate_on_cluster
        try:
            with cluster_client(args.cluster) as client:
                result = evaluate_on_cluster(client, process, tuple(names), args.batches, args.seed,
                                             model_dir=model_dir, policy_path=policy_path,
                                             budget=args.budget, progress=not args.quiet)
        except (OSError, ValueError) as exc:
            raise UserError(f"--cluster {args.cluster}: {exc}") from None
    else:
        agents = [make_agent(n, sim, model=model, policy=policy, budget=args.budget) for n in names]
        result = evaluate_agents(sim, agents, args.batches, args.seed, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_tables(result, process.economics.currency))
    return 0


def format_tables(result: dict, currency: str) -> str:
    """Human-readable tables of an evaluation result."""
    lines = [f"{result['n_flagged']} flagged of {result['n_batches']} fresh batches (seed {result['seed']})", ""]
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
