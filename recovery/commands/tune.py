"""``recovery tune``: tune an agent as a shared Optuna study on RDB storage."""

from __future__ import annotations

import argparse
import json

from recovery.cli import UserError
from recovery.commands._common import positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune an agent's settings in a shared Optuna study",
        description="Run trials of a shared Optuna study (RDB storage: PostgreSQL for several "
                    "machines, SQLite for one). Every worker pointing at the same --storage and "
                    "--study adds trials to the same study.")
    p.add_argument("--agent", choices=["oracle", "planner", "rl"], required=True)
    p.add_argument("--storage", required=True,
                   help="postgresql://user:pass@host/db or sqlite:///path/to/file.db")
    p.add_argument("--study", required=True, help="study name (shared by all workers)")
    p.add_argument("--trials", type=positive_int, default=20, help="trials run by this command")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes")
    p.add_argument("--batches", type=positive_int, default=200, help="fresh batches per trial")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--process", default=None)
    p.add_argument("--model", help="fitted causal model (planner)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.tuning import TuneSpec, tune

    spec = TuneSpec(args.agent, args.process, args.batches, args.seed, model_dir=args.model)
    try:
        r = tune(args.storage, args.study, spec, trials=args.trials, workers=args.workers)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"study {r['study']}: {r['trials']} finished trials "
          f"(this run: {sum(r['by_worker'])} over {len(r['by_worker'])} worker(s))")
    print(f"best value {r['best_value']:.1f} per flagged batch, recovery {r['best_recovery_rate']}")
    for k, v in r["best_params"].items():
        print(f"  {k:16s} {v}")
    return 0
