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

A decision is instant and runs on arrays, with no pandas and no torch call:
the policy's forward pass is done in NumPy with weights copied from the SB3
model (:class:`PolicyForward`; the model stays an SB3 zip on disk), for all
the lever steps ahead of the batch at once, on the gauge readings it has.
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

__all__ = ["RLPolicy", "RLAgent", "PolicyForward", "train_policy", "load_policy", "process_variants", "training_simulators",
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
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecNormalize

    from simulators.env import MetalBarRecoveryEnv

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
    # Without a logger of its own, SB3's learn() makes an empty tempdir/SB3-<time> folder
    # per call even at verbose=0; ours writes nowhere (nothing is read from its records).
    model.set_logger(Logger(folder=None, output_formats=[]))
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


class PolicyForward:
    """The deterministic action of a PPO ``MlpPolicy``, on NumPy arrays.

    The weights are copied once from the SB3 model (which stays an SB3 model
    on disk, loadable with ``PPO.load``); a decision is then a few small
    matrix products, without torch's per-call overhead. The arithmetic is
    SB3's, in float32: flatten, the policy MLP (linear layers and their
    activations), the action net (the Gaussian's mean, which is the
    deterministic action), clipped to the action space.

    Parameters
    ----------
    model : stable_baselines3.PPO
        A trained model whose policy is an ``ActorCriticPolicy`` with a
        flatten feature extractor, no squashed output and no state-dependent
        exploration (what :func:`train_policy` builds).

    Raises
    ------
    ValueError
        If the policy has another structure (use ``model.predict`` then).
    """

    def __init__(self, model):
        import torch

        pol = model.policy
        acts = {torch.nn.Tanh: np.tanh, torch.nn.ReLU: lambda x: np.maximum(x, np.float32(0.0)),
                torch.nn.Identity: None}
        extractor = getattr(pol, "pi_features_extractor", None)
        if (type(extractor).__name__ != "FlattenExtractor" or getattr(pol, "squash_output", True)
                or getattr(pol, "use_sde", False) or not hasattr(pol, "mlp_extractor")
                or not hasattr(pol, "action_net")):
            raise ValueError("PolicyForward takes an actor-critic MlpPolicy with a flatten extractor, "
                             "no squashed output and no gSDE")
        self.layers: list[tuple[str, object]] = []
        for m in list(pol.mlp_extractor.policy_net) + [pol.action_net]:
            if isinstance(m, torch.nn.Linear):
                w = m.weight.detach().cpu().numpy().astype(np.float32)
                b = m.bias.detach().cpu().numpy().astype(np.float32)
                self.layers.append(("linear", (np.ascontiguousarray(w.T), b)))
            elif type(m) in acts:
                if acts[type(m)] is not None:
                    self.layers.append(("act", acts[type(m)]))
            else:
                raise ValueError(f"PolicyForward: no NumPy form for layer {type(m).__name__}")
        self.low = np.asarray(model.action_space.low, dtype=np.float32)
        self.high = np.asarray(model.action_space.high, dtype=np.float32)
        self.obs_size = int(np.prod(model.observation_space.shape))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(n, k)`` of observations ``(n, obs_size)`` (float32, as SB3)."""
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_size)
        for what, f in self.layers:
            if what == "linear":
                w, b = f
                x = x @ w + b
            else:
                x = f(x)
        return np.clip(x, self.low, self.high)


class RLAgent(Agent):
    """Rolls a trained policy through the decision steps ahead of the batch.

    The decision runs on arrays (:meth:`decide`): the gauge readings, the
    engineer's rule on them, one forward pass of the policy for all decision
    steps ahead (their observations depend on the readings only, not on the
    actions before them), and the actions applied to the plan as in the env.

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
        self._levers_at = self.layout.levers_at
        self.base = _base_policy(policy.base, p)
        self._k = self.layout.action_size
        try:
            self.forward = PolicyForward(policy.model)
        except ValueError:  # another policy structure: SB3's own predict, one batch of observations
            self.forward = lambda x: np.asarray(policy.model.predict(x.astype(np.float32), deterministic=True)[0])
        lo, hi = p.lever_bounds()
        self._lo, self._hi = lo, hi
        self._int = np.array([lv.integer for lv in p.levers])
        self._per_use = np.array([lv.cost_per_use for lv in p.levers])
        self._per_unit = np.array([lv.cost_per_unit for lv in p.levers])
        self._nominal = p.nominal_plan()

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        p = situation.process
        if p.digest != self.policy.process.digest:
            raise ValueError("the policy was trained on another process")
        plan = self.decide(situation.gauge_readings(), situation.step, situation.plan)
        how = "corrections to the engineer's rule" if self.base is not None else "plan"
        return Proposal(plan, note=f"PPO policy ({self.policy.timesteps} training steps; {how})")

    def decide(self, readings: np.ndarray, step: int, plan: np.ndarray) -> np.ndarray:
        """The plan the policy sets for the levers after ``step`` (arrays only).

        Parameters
        ----------
        readings : ndarray (n_insp, max_sample, n_chars)
            Gauge readings so far, NaN where none (``Situation.gauge_readings``).
        step : int
            The last step the batch has completed.
        plan : ndarray (n_levers,)
            Lever values: as used up to ``step``, as planned after it (physical units).

        Returns
        -------
        ndarray (n_levers,)
            The plan with the levers of the decision steps after ``step`` set.
        """
        from simulators.env import _apply_action, action_of

        plan = np.array(plan, dtype=np.float64)
        lo, hi, nom = self._lo, self._hi, self._nominal
        steps = self.layout.decision_steps
        ahead = np.flatnonzero(steps > step)
        if not len(ahead):
            return plan
        # as in the env: the rule plans the levers ahead afresh from the latest readings
        base = (self.base(readings, step, np.where(self.policy.process.free_levers(step), nom, plan))
                if self.base is not None else None)
        width = self.layout.size + (self._k if base is not None else 0)
        x = np.zeros((len(ahead), width))
        ba = np.zeros((len(ahead), self._k))
        for i, d in enumerate(ahead):
            self.layout.fill(readings, int(steps[d] - 1), int(d), x[i, : self.layout.size])
            if base is not None:
                for r, j in enumerate(self._levers_at[d]):
                    ba[i, r] = action_of(base[j], nom[j], lo[j], hi[j])
        if base is not None:
            x[:, self.layout.size:] = ba
        actions = np.asarray(self.forward(x.astype(np.float32)), dtype=np.float64).reshape(len(ahead), -1)
        if base is not None:
            actions = np.clip(actions + ba, -1.0, 1.0)
        for i, d in enumerate(ahead):
            _apply_action(actions[i], self._levers_at[d], lo, hi - lo, self._int, nom, self._per_use,
                          self._per_unit, plan)
        return plan
