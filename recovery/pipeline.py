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


def load_policy(path: str | Path):
    """Load a trained rl policy."""
    from recovery.agents.rl import load_policy as _load

    return _load(path)


def workdir(args, process) -> Path:
    import platformdirs

    base = Path(getattr(args, "workdir", None) or platformdirs.user_cache_dir("recovery"))
    d = base / f"{process.name}-{process.digest}-seed{args.seed}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_or_fit_model(args, process, *, log):
    """(model, model_dir) from ``--model``, or fitted on simulated history."""
    from recovery.cli import UserError

    if getattr(args, "model", None):
        try:
            return load_model(args.model), str(args.model)
        except FileNotFoundError as exc:
            raise UserError(f"--model {args.model}: {exc}") from None
    raise UserError("fitting the causal model from nothing is not available yet; pass --model")


def load_or_train_policy(args, process, model, *, log):
    """(policy, path) from ``--policy``, or trained with the default budget."""
    from recovery.cli import UserError

    if getattr(args, "policy", None):
        return load_policy(args.policy), str(args.policy)
    raise UserError("training the rl policy from nothing is not available yet; pass --policy")
