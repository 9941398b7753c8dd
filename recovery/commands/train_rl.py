"""``recovery train-rl``: train the rl agent's PPO policy and save it."""

from __future__ import annotations

import argparse

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-rl", help="train the rl agent's policy",
        description="Train a PPO policy on the MetalBarRecovery-v0 env (domain randomisation over "
                    "process variants) and save it to a folder for 'recommend --agent rl' and "
                    "'evaluate --policy'.")
    p.add_argument("--out", required=True, help="folder to save the policy in")
    p.add_argument("--timesteps", type=positive_int, default=None, help="training steps (default 150,000)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--process", default=None, help="process file (default: built-in; ignored with --model)")
    p.add_argument("--model", help="fitted model folder: train on its calibrated physics (the "
                                   "calibration in MODEL/calibration/, physics drawn from it per block "
                                   "of episodes) and its process; default: the process file's physics")
    p.add_argument("--base", choices=["heuristic", "none"], default="heuristic",
                   help="'heuristic' (default): learn corrections to the engineer's rule (residual "
                        "policy); 'none': learn the whole plan from scratch")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.agents.rl import DEFAULT_TIMESTEPS, train_policy

    posterior = None
    if args.model:
        from recovery.calibration import CalibrationLoadError
        from recovery.pipeline import load_model, load_posterior
        try:
            process = load_model(args.model).graph_.process
            posterior = load_posterior(args.model)
        except (FileNotFoundError, ValueError) as exc:  # CalibrationLoadError is a ValueError
            raise UserError(f"--model {args.model}: {exc}") from None
        if posterior is None:
            print(f"physics      {args.model} holds no calibration: training on the process file's physics")
        else:
            try:
                posterior.check_process(process)
            except CalibrationLoadError as exc:
                raise UserError(f"--model {args.model}: {exc}") from None
    else:
        process = load_process_arg(args.process)
    steps = args.timesteps or DEFAULT_TIMESTEPS
    base = None if args.base == "none" else args.base
    policy = train_policy(process, seed=args.seed, total_timesteps=steps, progress=not args.quiet, base=base,
                          posterior=posterior)
    path = policy.save(args.out)
    how = "corrections to the engineer's rule" if base else "plans from scratch"
    print(f"trained {steps} steps ({how}) in {policy.seconds:.0f} s on '{process.name}' "
          f"with {policy.physics} physics; saved to {path}")
    return 0
