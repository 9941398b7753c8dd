"""Agent tuning as shared Optuna studies on RDB storage (PostgreSQL, or SQLite locally).

Several worker processes, on one machine or many, run trials of one study by
pointing at the same storage URL; Optuna's storage does the coordination, we
add no queue of our own. Each trial evaluates an agent configuration in closed
loop on a fixed, seeded set of fresh batches and returns its net value per
flagged batch (currency), minus a latency penalty.

Search spaces are plain functions, ``sample_<agent>_params(trial) -> dict``.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

import numpy as np

__all__ = ["TuneSpec", "SEARCH_SPACES", "storage_url", "run_worker", "tune", "sample_oracle_params",
           "sample_planner_params", "sample_ppo_params"]


def sample_oracle_params(trial) -> dict:
    """Search budget of the oracle's plan search."""
    return {"n_rollouts": trial.suggest_int("n_rollouts", 4, 24, step=4),
            "grid": trial.suggest_int("grid", 3, 11, step=2),
            "n_sweeps": trial.suggest_int("n_sweeps", 1, 3),
            "n_iter": trial.suggest_int("n_iter", 0, 3)}


def sample_planner_params(trial) -> dict:
    """Settings of the Optuna planner (``recovery.agents.plan_search.PlannerConfig``)."""
    return {"n_trials": trial.suggest_int("n_trials", 16, 160, step=16),
            "max_levers": trial.suggest_int("max_levers", 2, 8),
            "screen_grid": trial.suggest_int("screen_grid", 3, 9, step=2),
            "prune_tol": trial.suggest_float("prune_tol", 0.0, 100.0),
            "sampler": trial.suggest_categorical("sampler", ["cmaes", "tpe"])}


def sample_ppo_params(trial) -> dict:
    """PPO hyperparameters for the rl agent."""
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
            "n_steps": trial.suggest_categorical("n_steps", [128, 256, 512]),
            "gamma": trial.suggest_float("gamma", 0.95, 1.0),
            "ent_coef": trial.suggest_float("ent_coef", 1e-4, 1e-2, log=True),
            "net_width": trial.suggest_categorical("net_width", [32, 64, 128])}


SEARCH_SPACES = {"oracle": sample_oracle_params, "planner": sample_planner_params, "rl": sample_ppo_params}


@dataclass(frozen=True)
class TuneSpec:
    """One tuning study.

    Attributes
    ----------
    agent : str
        ``oracle``, ``planner`` or ``rl``.
    process : str or None
        Process file (``None``: built-in default).
    batches : int
        Fresh batches per trial evaluation (same seed for every trial).
    seed : int
    latency_weight : float
        Currency per second of median decision latency subtracted from the value.
    model_dir : str, optional
        Fitted causal model (planner).
    """

    agent: str
    process: str | None = None
    batches: int = 200
    seed: int = 0
    latency_weight: float = 100.0
    model_dir: str | None = None


def storage_url(url: str) -> str:
    """SQLAlchemy URL for Optuna: ``postgresql://`` uses the psycopg 3 driver."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _objective(spec: TuneSpec):
    from recovery.evaluate import evaluate_agents
    from simulators.process import Simulator

    sim = Simulator(spec.process)
    sample = SEARCH_SPACES[spec.agent]

    def objective(trial) -> float:
        params = sample(trial)
        agent = _build(spec, sim, params)
        r = evaluate_agents(sim, [agent], spec.batches, spec.seed)["agents"][agent.name]
        trial.set_user_attr("recovery_rate", r["recovery_rate"])
        trial.set_user_attr("latency_p50_s", r["latency_p50_s"])
        return float(r["net_value"] - spec.latency_weight * r["latency_p50_s"])

    return objective


def _build(spec: TuneSpec, sim, params: dict):
    if spec.agent == "oracle":
        from recovery.agents.oracle import OracleAgent
        return OracleAgent(sim, **params)
    if spec.agent == "planner":
        from recovery.agents.planner_agent import PlannerAgent
        from recovery.agents.plan_search import PlannerConfig
        from recovery.pipeline import load_model
        if not spec.model_dir:
            raise ValueError("tuning the planner needs --model")
        return PlannerAgent(load_model(spec.model_dir), config=PlannerConfig(**params))
    if spec.agent == "rl":
        from recovery.agents.rl import RLAgent, train_policy
        policy = train_policy(sim.process, seed=spec.seed, **params)
        return RLAgent(policy)
    raise ValueError(f"unknown agent '{spec.agent}'; tunable: {sorted(SEARCH_SPACES)}")


def run_worker(url: str, study: str, spec: TuneSpec, n_trials: int, seed: int) -> int:
    """Run ``n_trials`` trials of a shared study; returns how many this worker finished."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    s = optuna.create_study(study_name=study, storage=storage_url(url), direction="maximize",
                            sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    s.optimize(_objective(spec), n_trials=n_trials)
    return n_trials


def _worker(args) -> int:
    return run_worker(*args)


def tune(url: str, study: str, spec: TuneSpec, *, trials: int, workers: int = 1) -> dict:
    """Run a shared study with ``workers`` local processes; returns its best trial.

    On several machines, run the same command on each with ``--workers 1`` and
    the same storage URL and study name.
    """
    import optuna

    import logging

    if spec.agent not in SEARCH_SPACES:
        raise ValueError(f"unknown agent '{spec.agent}'; tunable: {sorted(SEARCH_SPACES)}")
    optuna.logging.set_verbosity(logging.WARNING)
    # Create the storage schema and the study once, here: workers starting together
    # would otherwise race to initialise an empty database.
    optuna.create_study(study_name=study, storage=storage_url(url), direction="maximize",
                        load_if_exists=True)
    per = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
    jobs = [(url, study, spec, n, 1000 + i) for i, n in enumerate(per) if n > 0]
    if workers == 1:
        done = [_worker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            done = pool.map(_worker, jobs)
    s = optuna.load_study(study_name=study, storage=storage_url(url))
    finished = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = s.best_trial
    return {"study": study, "trials": len(finished), "by_worker": done, "best_value": best.value,
            "best_params": best.params, "best_recovery_rate": best.user_attrs.get("recovery_rate"),
            "values": [t.value for t in finished], "mean_value": float(np.mean([t.value for t in finished]))}
