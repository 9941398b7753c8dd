"""The ``rl`` agent: a stable-baselines3 PPO policy trained on ``MetalBarRecovery-v0``.

Training randomises the world: each block of fresh batches comes from one of
several process variants whose partner offsets and factory drifts are drawn
around the definition's values (``process_variants``), so the policy does not
learn one exact plant. (The causal model's posterior lives in a reduced,
per-segment space that does not map back onto the simulator's parameters, so
the randomisation is over the process definition's uncertain parameters.)
With a calibration (``train_policy(posterior=...)``, ``recovery train-rl
--model DIR``), each variant also takes its physics from a posterior draw, so
the policy trains on the plant as calibrated, physics randomised per block of
episodes, instead of on the file.

By default the policy is *residual*: it corrects the engineer's rule
(``recovery.agents.baselines.EngineerRule``), which the env asks after each
inspection; the policy sees the rule's action for the step ahead and adds its
own (``MetalBarRecoveryEnv(base=...)``). PPO starts near the rule (small
initial exploration) instead of near "do nothing", which a sparse end reward
over 14 levers and 6 decisions does not teach it to leave. ``base=None``
trains a policy from scratch.

A decision is instant: the policy is rolled through the lever steps ahead of
the batch with the gauge readings it has, one ``predict`` per step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation
from recovery.agents.baselines import readings_from_history
from simulators.definition import Process, load_process

__all__ = ["RLPolicy", "RLAgent", "train_policy", "load_policy", "process_variants", "training_simulators",
           "readings_from_history",
           "DEFAULT_TIMESTEPS"]

DEFAULT_TIMESTEPS = 150_000


def process_variants(process: Process, n: int, seed: int, *, scale: float = 0.5) -> list[Process]:
    """``n`` copies of ``process`` with partner offsets and factory drifts redrawn.

    Offsets and drifts (in batch-sigma units) move by ``scale`` standard deviations.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        partners = tuple(replace(pt, offset=pt.offset + scale * rng.standard_normal()) for pt in process.partners)
        factories = tuple(replace(f, drift=f.drift + scale * rng.standard_normal()) for f in process.factories)
        out.append(replace(process, partners=partners, factories=factories))
    return out


@dataclass
class RLPolicy:
    """A trained policy with what it was trained for."""

    model: object              # stable_baselines3.PPO
    process: Process
    timesteps: int
    seed: int
    seconds: float
    base: str | None = None    # "heuristic": residual on the engineer's rule
    physics: str = "file"      # or "calibration (N draws)": what the training simulators ran on

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "ppo.zip")
        (path / "meta.json").write_text(json.dumps({
            "process": self.process.name, "process_digest": self.process.digest,
            "process_source": self.process.source, "timesteps": self.timesteps, "seed": self.seed,
            "seconds": self.seconds, "base": self.base, "physics": self.physics}, indent=2))
        return path


def load_policy(path: str | Path, process: Process | None = None) -> RLPolicy:
    """Load a policy saved with ``RLPolicy.save``; the process must match."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    path = Path(path)
    if not (path / "ppo.zip").exists():
        raise FileNotFoundError(f"{path}: no trained policy here (expected ppo.zip and meta.json)")
    meta = json.loads((path / "meta.json").read_text())
    if process is None:
        src = meta["process_source"]
        process = load_process(None if src == "default.toml" else "small" if src == "small.toml" else src)
    if process.digest != meta["process_digest"]:
        raise ValueError(f"{path}: policy was trained on process '{meta['process']}' "
                         f"(digest {meta['process_digest']}), not on '{process.name}' ({process.digest})")
    return RLPolicy(PPO.load(path / "ppo.zip", device="cpu"), process, meta["timesteps"], meta["seed"],
                    meta["seconds"], meta.get("base"), meta.get("physics", "file"))


def train_policy(process: Process | str | None = None, *, seed: int = 0, total_timesteps: int = DEFAULT_TIMESTEPS,
                 n_envs: int = 4, variants: int = 8, learning_rate: float = 3e-4, n_steps: int = 256,
                 gamma: float = 1.0, ent_coef: float = 1e-3, net_width: int = 64, progress: bool = False,
                 base: str | None = "heuristic", log_std_init: float | None = None,
                 posterior=None, physics_draws: int = 64) -> RLPolicy:
    """Train PPO on the env with domain randomisation.

    Parameters
    ----------
    process : Process or str, optional
    seed : int
    total_timesteps : int
        Env steps (decisions) of training.
    n_envs : int
        Envs in SB3's vectorised wrapper.
    variants : int
        Process variants for domain randomisation (0: the definition only).
    learning_rate, n_steps, gamma, ent_coef, net_width
        PPO hyperparameters (see ``recovery.tuning.sample_ppo_params``).
    base : str or None
        ``"heuristic"`` (default): learn corrections to the engineer's rule;
        None: learn the whole plan.
    log_std_init : float, optional
        Initial log standard deviation of the Gaussian policy (default -1.5
        with a base, so exploration starts around the rule; 0 without).
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics of ``process``: the training simulators take their
        physics from ``physics_draws`` posterior draws (each with its own partner
        and factory variant), one simulator per block of episodes. Default: the
        file's physics.
    physics_draws : int
        Posterior draws (training simulators) with a ``posterior``.
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from simulators.env import MetalBarRecoveryEnv
    from simulators.process import Simulator

    torch.set_num_threads(1)
    if not isinstance(process, Process):
        process = load_process(process)
    sims = training_simulators(process, seed=seed, variants=variants, posterior=posterior,
                               physics_draws=physics_draws)
    rule = _base_policy(base, process)
    env = make_vec_env(lambda: MetalBarRecoveryEnv(simulators=sims, base=rule), n_envs=n_envs, seed=seed)
    # Rewards are worth thousands of currency units; PPO learns on normalised returns.
    # Observations are not normalised, so a saved policy needs no statistics to act.
    env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=gamma)
    t = time.perf_counter()
    model = PPO("MlpPolicy", env, learning_rate=learning_rate, n_steps=n_steps, batch_size=min(64, n_steps * n_envs),
                gamma=gamma, ent_coef=ent_coef, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": [net_width, net_width],
                               "log_std_init": (-1.5 if base else 0.0) if log_std_init is None else log_std_init})
    model.learn(total_timesteps=total_timesteps, progress_bar=progress)
    physics = "file" if posterior is None else f"calibration ({len(sims)} draws)"
    return RLPolicy(model, process, total_timesteps, seed, time.perf_counter() - t, base, physics)


def training_simulators(process: Process, *, seed: int, variants: int = 8, posterior=None,
                        physics_draws: int = 64) -> list:
    """The simulators the policy trains on (the env picks one per block of episodes).

    Without a posterior: ``variants`` partner/factory variants of the file
    (:func:`process_variants`), or the file itself. With one: ``max(physics_draws,
    variants)`` simulators, each with the physics of one posterior draw (and its
    own partner/factory variant when ``variants``).
    """
    from simulators.process import Simulator

    if posterior is None:
        return [Simulator(v) for v in process_variants(process, variants, seed)] if variants else [Simulator(process)]
    n = max(physics_draws, variants, 1)
    drawn = posterior.processes(process, n, np.random.default_rng(np.random.SeedSequence([seed, 0xCA11B])))
    worlds = process_variants(process, n, seed) if variants else [process] * n
    return [Simulator(replace(w, steps=d.steps)) for w, d in zip(worlds, drawn)]


def _base_policy(base: str | None, process: Process):
    if base is None:
        return None
    if base == "heuristic":
        from recovery.agents.baselines import EngineerRule
        return EngineerRule(process)
    raise ValueError(f"unknown base policy '{base}'; known: heuristic, or None")


class RLAgent(Agent):
    """Rolls a trained policy through the decision steps ahead of the batch.

    Parameters
    ----------
    policy : RLPolicy
    """

    name = "rl"

    def __init__(self, policy: RLPolicy):
        from simulators.env import ObservationLayout

        self.policy = policy
        self.layout = ObservationLayout(policy.process)
        p = policy.process
        self._levers_at = [np.array([j for j, lv in enumerate(p.levers) if lv.step == s], dtype=np.int64)
                           for s in self.layout.decision_steps]
        self.base = _base_policy(policy.base, p)
        self._k = max((len(x) for x in self._levers_at), default=1)

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        from simulators.env import _apply_action, action_of

        p = situation.process
        if p.digest != self.policy.process.digest:
            raise ValueError("the policy was trained on another process")
        readings = readings_from_history(p, situation.history)
        plan = situation.plan.copy()
        lo, hi = p.lever_bounds()
        ints = np.array([lv.integer for lv in p.levers])
        per_use = np.array([lv.cost_per_use for lv in p.levers])
        per_unit = np.array([lv.cost_per_unit for lv in p.levers])
        nom = p.nominal_plan()
        obs = np.zeros(self.layout.size)
        steps = self.layout.decision_steps
        # as in the env: the rule plans the levers ahead afresh from the latest readings
        base = (self.base(readings, situation.step, np.where(situation.free, nom, plan))
                if self.base is not None else None)
        for d in np.flatnonzero(steps > situation.step):
            self.layout.fill(readings, int(steps[d] - 1), int(d), obs)
            x = obs
            if base is not None:
                ba = np.zeros(self._k)
                for i, j in enumerate(self._levers_at[d]):
                    ba[i] = action_of(base[j], nom[j], lo[j], hi[j])
                x = np.concatenate([obs, ba])
            action, _ = self.policy.model.predict(x.astype(np.float32), deterministic=True)
            action = np.asarray(action, dtype=np.float64)
            if base is not None:
                action = np.clip(action + ba, -1.0, 1.0)
            _apply_action(action, self._levers_at[d], lo, hi - lo, ints, nom, per_use, per_unit, plan)
        how = "corrections to the engineer's rule" if base is not None else "plan"
        return Proposal(plan, note=f"PPO policy ({self.policy.timesteps} training steps; {how})")
