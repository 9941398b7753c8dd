"""The end-to-end pipeline: history -> fitted model -> trained policy, loaded or built.

``recovery evaluate`` runs from nothing: without ``--model`` it simulates
``--train-batches`` historical batches on a separate seed and fits the causal
model on them; without ``--policy`` it trains the rl agent with its default
budget. Both are saved under ``--workdir`` (default: a folder in the user's
cache directory named after the process digest and seed), so workers of a
cluster can load them by path and a second run reuses them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_model", "load_policy", "load_or_fit_model", "load_or_train_policy", "workdir"]


def load_model(path: str | Path):
    """Load a fitted causal model saved with ``save``."""
    from recovery.causal.model import CausalModel

    return CausalModel.load(path)


def load_policy(path: str | Path, process=None):
    """Load a trained rl policy."""
    from recovery.agents.rl import load_policy as _load

    return _load(path, process)


def workdir(args, process) -> Path:
    import platformdirs

    base = Path(getattr(args, "workdir", None) or platformdirs.user_cache_dir("recovery"))
    d = base / f"{process.name}-{process.digest}-seed{args.seed}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def fit_config(budget: str, seed: int):
    """The fit settings ``evaluate`` uses when it fits from nothing."""
    from recovery.causal.model import FitConfig

    if budget == "tiny":
        return FitConfig(method="advi", advi_steps=300, draws=50, seed=seed, keep_draws=50)
    return FitConfig(method="nuts", draws=500, tune=500, chains=2, seed=seed, keep_draws=500)


def load_or_fit_model(args, process, *, log):
    """(model, model_dir): ``--model``, or a model fitted on simulated history.

    History: ``--train-batches`` batches simulated on seed ``seed + 1`` (never the
    evaluation's own seed), with past engineers' lever moves on a fifth of them.
    The fitted model is saved under :func:`workdir` and reused by a later run.
    """
    from recovery.errors import UserError

    if getattr(args, "model", None):
        try:
            return load_model(args.model), str(args.model)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--model {args.model}: {exc}") from None
    from recovery.causal.model import CausalModel
    from simulators.process import Simulator

    budget = getattr(args, "budget", "default")
    d = workdir(args, process) / f"model-{args.train_batches}-{budget}"
    if (d / "meta.json").exists() or (d / "model.json").exists():
        try:
            model = load_model(d)
            print(f"using the model fitted earlier in {d}", file=log)
            return model, str(d)
        except (FileNotFoundError, ValueError) as exc:
            print(f"not using the model in {d} ({exc}); fitting a new one", file=log)
    print(f"simulating {args.train_batches} historical batches (seed {args.seed + 1}) and fitting "
          f"the causal model ...", file=log)
    data = Simulator(process).simulate(args.train_batches, args.seed + 1, explore=0.2).observations
    model = CausalModel(process, config=fit_config(budget, args.seed)).fit(data, progress=not getattr(args, "quiet", False))
    for line in model.report_.lines():
        print("  " + line, file=log)
    model.save(d)
    return model, str(d)


def load_or_train_policy(args, process, model, *, log):
    """(policy, path): ``--policy``, or PPO trained with the default budget and saved."""
    from recovery.agents.rl import DEFAULT_TIMESTEPS, train_policy
    from recovery.errors import UserError

    if getattr(args, "policy", None):
        try:
            return load_policy(args.policy), str(args.policy)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--policy {args.policy}: {exc}") from None
    budget = getattr(args, "budget", "default")
    steps = 2_000 if budget == "tiny" else DEFAULT_TIMESTEPS
    d = workdir(args, process) / f"policy-residual-{steps}"  # policies from scratch were "policy-{steps}"
    if (d / "ppo.zip").exists():
        print(f"using the policy trained earlier in {d}", file=log)
        return load_policy(d, process), str(d)
    print(f"training the rl policy ({steps} steps) ...", file=log)
    policy = train_policy(process, seed=args.seed, total_timesteps=steps)
    policy.save(d)
    return policy, str(d)
