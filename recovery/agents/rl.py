"""The ``rl`` agent: a stable-baselines3 PPO policy trained on ``MetalBarRecovery-v0``.

Training randomises the world: each block of fresh batches comes from one of
several process variants whose partner offsets and factory drifts are drawn
around the definition's values (``process_variants``), so the policy does not
learn one exact plant. (The causal model's posterior lives in a reduced,
per-segment space that does not map back onto the simulator's parameters, so
the randomisation is over the process definition's uncertain parameters.)

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
from simulators.definition import Process, load_process

__all__ = ["RLPolicy", "RLAgent", "train_policy", "load_policy", "process_variants", "readings_from_history",
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

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "ppo.zip")
        (path / "meta.json").write_text(json.dumps({
            "process": self.process.name, "process_digest": self.process.digest,
            "process_source": self.process.source, "timesteps": self.timesteps, "seed": self.seed,
            "seconds": self.seconds}, indent=2))
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
                    meta["seconds"])


def train_policy(process: Process | str | None = None, *, seed: int = 0, total_timesteps: int = DEFAULT_TIMESTEPS,
                 n_envs: int = 4, variants: int = 8, learning_rate: float = 3e-4, n_steps: int = 256,
                 gamma: float = 1.0, ent_coef: float = 1e-3, net_width: int = 64, progress: bool = False) -> RLPolicy:
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
    sims = [Simulator(v) for v in process_variants(process, variants, seed)] if variants else [Simulator(process)]
    env = make_vec_env(lambda: MetalBarRecoveryEnv(simulators=sims), n_envs=n_envs, seed=seed)
    # Rewards are worth thousands of currency units; PPO learns on normalised returns.
    # Observations are not normalised, so a saved policy needs no statistics to act.
    env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=gamma)
    t = time.perf_counter()
    model = PPO("MlpPolicy", env, learning_rate=learning_rate, n_steps=n_steps, batch_size=min(64, n_steps * n_envs),
                gamma=gamma, ent_coef=ent_coef, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": [net_width, net_width]})
    model.learn(total_timesteps=total_timesteps, progress_bar=progress)
    return RLPolicy(model, process, total_timesteps, seed, time.perf_counter() - t)


def readings_from_history(process: Process, history) -> np.ndarray:
    """Gauge readings (n_insp, max_sample, n_chars) from a batch's step data (NaN: none)."""
    a = process.arrays
    out = np.full((len(process.inspections), int(a.insp_sample.max()), process.n_chars), np.nan)
    m = history[history["kind"] == "measurement"]
    q_of = {s: q for q, s in enumerate(process.inspection_steps)}
    for step, var, bar, val in zip(m["step"], m["variable"].astype(str), m["bar_id"], m["value"]):
        q = q_of.get(int(step))
        c = process.char_index.get(var)
        if q is not None and c is not None and bar is not None and bar == bar and int(bar) < out.shape[1]:
            out[q, int(bar), c] = float(val)
    return out


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

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        from simulators.env import _apply_action

        p = situation.process
        if p.digest != self.policy.process.digest:
            raise ValueError("the policy was trained on another process")
        readings = readings_from_history(p, situation.history)
        plan = situation.plan.copy()
        lo, hi = p.lever_bounds()
        ints = np.array([lv.integer for lv in p.levers])
        per_use = np.array([lv.cost_per_use for lv in p.levers])
        per_unit = np.array([lv.cost_per_unit for lv in p.levers])
        obs = np.zeros(self.layout.size)
        steps = self.layout.decision_steps
        for d in np.flatnonzero(steps > situation.step):
            self.layout.fill(readings, int(steps[d] - 1), int(d), obs)
            action, _ = self.policy.model.predict(obs.astype(np.float32), deterministic=True)
            _apply_action(np.asarray(action, dtype=np.float64), self._levers_at[d], lo, hi - lo, ints,
                          p.nominal_plan(), per_use, per_unit, plan)
        return Proposal(plan, note=f"PPO policy ({self.policy.timesteps} training steps)")
