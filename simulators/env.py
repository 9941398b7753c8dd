"""Gymnasium env: recover one flagged batch, from its detection inspection to the end.

``MetalBarRecovery-v0`` is registered by ``import simulators`` (by entry-point
string, so this module and numba load only when an env is made). The env is
a thin shell around the numba kernel: each ``step`` is one kernel call on one
batch's bars through ``simulators.process.KernelStep``, with random numbers drawn
and arrays checked at ``reset`` (no Generator is passed per call, which would cost
more than the whole step). ``MetalBarRecoveryVectorEnv``
runs many batches and advances every group of envs that stand at the same step
with one kernel call.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulators import ENV_ID, _kernels  # ENV_ID is registered by ``import simulators``
# the env's kernels live behind the numba wall; these names are the env's (and recovery.agents.rl's)
from simulators._kernels import DEAD_ZONE
from simulators._kernels import env_apply_action as _apply_action
from simulators._kernels import env_apply_actions as _apply_actions
from simulators._kernels import env_fill as _fill
from simulators._kernels import env_fill_many as _fill_many
from simulators.definition import Process
from simulators.process import Conditions, KernelStep, Simulator

__all__ = ["MetalBarRecoveryEnv", "MetalBarRecoveryVectorEnv", "CaseSource", "ObservationLayout",
           "ENV_ID", "action_of", "make_vector_env"]


class ObservationLayout:
    """Where each gauged (inspection, characteristic) pair sits in the observation.

    The observation is ``[means (P), mask (P), progress (1), decision one-hot (D)]``
    with ``P`` gauged pairs: sample means normalised as
    ``(mean - nominal) / (upper - lower)`` of the final band (0 until measured),
    a 0/1 mask, the share of the process done, and which decision step is next.
    """

    def __init__(self, process: Process):
        p = process
        a = p.arrays
        self.q = np.array([q for q, ins in enumerate(p.inspections) for c in range(p.n_chars)
                           if a.insp_measures[q, c]], dtype=np.int64)
        self.c = np.array([c for q, ins in enumerate(p.inspections) for c in range(p.n_chars)
                           if a.insp_measures[q, c]], dtype=np.int64)
        self.sample = a.insp_sample[self.q].astype(np.int64)
        self.insp_step = np.array(p.inspection_steps, dtype=np.int64)[self.q]
        lo, hi = p.final_bands()
        nom = np.array([ch.nominal for ch in p.characteristics])
        width = np.where(hi > lo, hi - lo, 1.0)
        self.nominal = nom[self.c]
        self.width = width[self.c]
        self.decision_steps = np.array(sorted({lv.step for lv in p.levers}), dtype=np.int64)
        #: the levers of each decision step (indices into ``process.levers``), in action order
        self.levers_at = [np.array([j for j, lv in enumerate(p.levers) if lv.step == s], dtype=np.int64)
                          for s in self.decision_steps]
        #: entries of an action: the most levers at one step
        self.action_size = max((len(x) for x in self.levers_at), default=1)
        self.n_pairs = len(self.q)
        self.size = 2 * self.n_pairs + 1 + len(self.decision_steps)
        self.n_steps = p.n_steps

    def fill(self, readings: np.ndarray, pos: int, decision: int, out: np.ndarray) -> np.ndarray:
        """Write the observation of one batch's gauge ``readings`` (n_insp, max_sample, n_chars)
        after step ``pos``, before decision number ``decision`` (-1: none left)."""
        _fill(readings, self.q, self.c, self.sample, self.insp_step, self.nominal, self.width,
              pos, decision, self.n_steps, out)
        return out


class CaseSource:
    """Fresh flagged batches, found by simulating blocks of batches inspection by inspection.

    A batch is taken at the first inspection that flags it, if a lever still
    lies ahead. Draws come only from the Generator passed to ``next``.
    """

    def __init__(self, sims: Sequence[Simulator], block: int = 16, max_tries: int = 50):
        self.sims = list(sims)
        self.block = block
        self.max_tries = max_tries
        self.queue: deque = deque()
        p = self.sims[0].process
        self.last_lever_step = max((lv.step for lv in p.levers), default=0)

    def clear(self) -> None:
        self.queue.clear()

    def next(self, rng: np.random.Generator, force_fault: str | None = None):
        """(sim, state, conditions, readings, detect_step) of the next flagged batch."""
        tries = 0
        while not self.queue:
            fault = force_fault
            if fault is None and tries >= self.max_tries:
                faults = self.sims[0].process.faults
                fault = faults[int(rng.integers(len(faults)))].name
            self._fill(rng, fault)
            tries += 1
        return self.queue.popleft()

    def _fill(self, rng: np.random.Generator, force_fault: str | None) -> None:
        sim = self.sims[int(rng.integers(len(self.sims)))] if len(self.sims) > 1 else self.sims[0]
        p = sim.process
        n, bpb = self.block, p.bars_per_batch
        time = rng.uniform(0.0, p.season_days, n)
        cond = sim.sample_conditions(n, rng, time=time, force_fault=force_fault)
        plan = np.tile(p.nominal_plan(), (n, 1))
        state, obs = sim.new_state(n), sim.new_obs(n)
        taken = np.zeros(n, dtype=bool)
        prev = 0
        for q, ins in enumerate(p.inspections):
            if ins.step >= self.last_lever_step:
                break
            sim.run(state, prev, ins.step, plan, cond, rng, obs=obs)
            flags = sim.flags(obs)[:, q] & ~taken
            for b in np.flatnonzero(flags):
                self.queue.append((sim, state[b * bpb:(b + 1) * bpb].copy(), cond.take([b]),
                                   obs[b].copy(), ins.step))
            taken |= flags
            prev = ins.step


def action_of(value: float, nominal: float, lo: float, hi: float) -> float:
    """The action entry that sets a lever to ``value`` (inverse of ``_apply_action``'s mapping)."""
    u = (value - nominal) / (hi - nominal) if value >= nominal else (value - nominal) / (nominal - lo)
    if not np.isfinite(u) or u == 0.0:
        return 0.0
    return float(np.sign(u) * (DEAD_ZONE + (1.0 - DEAD_ZONE) * min(abs(u), 1.0)))


class MetalBarRecoveryEnv(gym.Env):
    """Recover a flagged batch of chromed seat-frame bars.

    Description
    -----------
    A batch has just failed an intermediate inspection. From there to the end
    of the process, the agent sets the levers of each step that has levers
    (heat less, straighten harder, grind more, re-chrome, over-bend and
    re-bend, refinish...). The hidden bar states evolve through the numba
    kernel of ``simulators``; the agent sees only gauge readings.

    Action Space
    ------------
    ``Box(-1, 1, (k,), float32)`` with ``k`` the largest number of levers at one
    step (2 on the default process). Entry ``i`` sets the ``i``-th lever of the
    current decision step: ``|a| <= DEAD_ZONE`` (0.2) keeps it at nominal (and
    costs nothing); beyond, piecewise linearly, -1 and +1 reach its effective low
    and high bounds (hard bounds within the maximum change); integer levers are
    rounded. Entries beyond that step's levers are
    ignored. An untrained policy therefore starts near "do nothing".

    Observation Space
    -----------------
    ``Box(-50, 50, (2P + 1 + D,), float32)``:

    =================  ======  ==================================================
    part               size    meaning (unit)
    =================  ======  ==================================================
    gauge means        P       sample mean of each gauged (inspection,
                               characteristic) pair, ``(mean - nominal) /
                               (upper - lower)`` of its final band (band widths);
                               0 until measured
    mask               P       1 once that pair has been measured, else 0
    progress           1       steps done / steps in the process (1)
    decision           D       one-hot of the decision step ahead (D lever steps)
    =================  ======  ==================================================

    Rewards
    -------
    Sparse: at the end, ``+batch_value`` if the batch is accepted (the share of
    its bars inside every final band reaches the acceptance level), else
    ``-scrap_cost``; at every step, minus the cost of the levers changed there
    (``cost_per_use`` plus ``cost_per_unit`` times the change). Currency of the
    process file.

    Starting State
    --------------
    Fresh batches (production day uniform over the season, faults at their
    catalogue rates) are simulated until one is flagged at an inspection with
    levers still ahead; the episode starts there, just before the next step
    that has levers.

    Episode End
    -----------
    Terminates after the last step of the process. The registered env also
    truncates after ``max_episode_steps`` (the number of lever steps), which a
    natural episode never exceeds.

    Arguments
    ---------
    process : Process or str, optional
        Process definition (default: the built-in 50-step process).
    simulators : sequence of Simulator, optional
        Domain randomisation: each block of fresh batches comes from one of
        these, chosen with ``np_random`` (e.g. simulators of process variants
        drawn from a posterior). They must share the process structure.
    force_fault : str, optional
        Inject exactly this fault into every fresh batch.
    block : int
        Fresh batches simulated at a time while looking for a flagged one.
    base : callable, optional
        A base policy ``base(readings, step, plan) -> plan`` (gauge readings
        ``(n_insp, max_sample, n_chars)`` with NaN where none, the last
        inspection step, the plan so far) that the agent *corrects*: it is
        asked again after each inspection, the observation gains the action
        that would set the current step's levers to the base plan (``k``
        entries), and the action taken is that plus the agent's action,
        clipped to [-1, 1] (residual learning). A zero action then follows
        the base policy.

    Version History
    ---------------
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, process: Process | str | None = None, *, simulators: Sequence[Simulator] | None = None,
                 force_fault: str | None = None, block: int = 16, base=None):
        self._sims = list(simulators) if simulators else [Simulator(process)]
        self._base = base
        self.process = p = self._sims[0].process
        for s in self._sims[1:]:
            sp = s.process
            if (sp.n_steps, [lv.name for lv in sp.levers], sp.inspection_steps) != \
                    (p.n_steps, [lv.name for lv in p.levers], p.inspection_steps):
                raise ValueError("all simulators must share the process structure")
        self.force_fault = force_fault
        self.layout = ObservationLayout(p)
        self.arrays = p.arrays
        # Every simulator's physics, stacked for the kernel: an episode runs with
        # the physics of the simulator its batch came from.
        self._kernel = KernelStep(p, np.ascontiguousarray(np.stack([s.arrays.params for s in self._sims])))
        self._set_of = {id(s): i for i, s in enumerate(self._sims)}
        self._set = np.zeros(1, dtype=np.int64)
        self.source = CaseSource(self._sims, block=block)
        self._levers_at = self.layout.levers_at
        k = self.layout.action_size
        self.action_space = spaces.Box(-1.0, 1.0, (k,), dtype=np.float32)
        self.observation_space = spaces.Box(-50.0, 50.0, (self.layout.size + (k if base else 0),),
                                            dtype=np.float32)
        lo, hi = p.lever_bounds()
        self._lo, self._span = lo, hi - lo
        self._nominal = p.nominal_plan()
        self._int = np.array([lv.integer for lv in p.levers])
        self._per_use = np.array([lv.cost_per_use for lv in p.levers])
        self._per_unit = np.array([lv.cost_per_unit for lv in p.levers])
        self._lower, self._upper = p.final_bands()
        eco = p.economics
        self._value, self._scrap = float(eco.batch_value), float(eco.scrap_cost)
        self._obs = np.zeros(self.layout.size)

    # ---- episode ---------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.source.clear()  # a seeded reset must not reuse batches found before
        fault = (options or {}).get("force_fault", self.force_fault)
        sim, state, cond, readings, detect = self.source.next(self.np_random, fault)
        self._sim = sim
        self._set[0] = self._set_of[id(sim)]
        self._state = np.ascontiguousarray(state)
        self._cond: Conditions = cond
        self._readings = readings[None].copy()
        self._plan = np.ascontiguousarray(self._nominal[None].copy())
        self._pos = detect
        steps = self.layout.decision_steps
        self._decisions = np.flatnonzero(steps > detect)
        self._i = 0
        self._base_step, self._base_plan = -1, self._nominal
        # All random numbers of the episode, drawn now (see the module docstring; sized by
        # the kernel wrapper itself, so not checked again), and the episode's arrays checked
        # once: each step then only forwards to the kernel.
        n = self.process.n_steps
        self._noise, self._unif, self._cursor = self._kernel.draws(self.np_random, 1, detect, n)
        self._kernel.check(self._state, detect, n, self._set, self._plan, cond.fault, cond.drift,
                           self._readings)
        self._advance(steps[self._decisions[0]] - 1)
        info = {"batch_id": str(cond.batch_ids[0]), "detect_step": int(detect),
                "fault": self._fault_name()}
        return self._observation(), info

    def _fault_name(self) -> str | None:
        occ = np.flatnonzero(self._cond.occurred[0])
        if not len(occ):
            return None
        by_step = {f.step: f.name for f in self.process.faults}
        return by_step.get(int(occ[0]) + 1)

    def _advance(self, stop: int) -> None:
        self._kernel(self._state, self._pos, stop, self._set, self._plan, self._cond.fault, self._cond.drift,
                     self._readings, self._noise, self._unif, self._cursor)
        self._pos = stop

    def _observation(self) -> np.ndarray:
        d = int(self._decisions[self._i]) if self._i < len(self._decisions) else -1
        self.layout.fill(self._readings[0], self._pos, d, self._obs)
        if self._base is None:
            return self._obs.astype(np.float32)
        return np.concatenate([self._obs, self._base_action()]).astype(np.float32)

    def _base_action(self) -> np.ndarray:
        """The action that sets the current step's levers to the base policy's plan."""
        out = self.nominal_action().astype(np.float64)
        if self._base is None or self._i >= len(self._decisions):
            return out
        last = max((s for s in self.process.inspection_steps if s <= self._pos), default=0)
        if last != self._base_step:  # new readings: ask the base policy again
            self._base_plan = np.asarray(self._base(self._readings[0], last, self._plan[0]), dtype=np.float64)
            self._base_step = last
        for i, j in enumerate(self._levers_at[self._decisions[self._i]]):
            out[i] = action_of(self._base_plan[j], self._nominal[j], self._lo[j], self._lo[j] + self._span[j])
        return out

    def step(self, action):
        steps = self.layout.decision_steps
        d = self._decisions[self._i]
        idx = self._levers_at[d]
        action = np.asarray(action, dtype=np.float64)
        if self._base is not None:
            action = np.clip(action + self._base_action(), -1.0, 1.0)
        cost = _apply_action(action, idx, self._lo, self._span, self._int,
                             self._nominal, self._per_use, self._per_unit, self._plan[0])
        self._i += 1
        stop = int(steps[self._decisions[self._i]] - 1) if self._i < len(self._decisions) else self.process.n_steps
        self._advance(stop)
        terminated = stop == self.process.n_steps
        reward = -cost
        info = {"lever_step": int(steps[d]), "lever_cost": cost}
        if terminated:
            frac = _kernels.in_spec_fraction(self._state, self.process.bars_per_batch, self._lower, self._upper)[0]
            accepted = bool(self.process.accepts(frac))
            reward += self._value if accepted else -self._scrap
            info["accepted"] = bool(accepted)
            info["in_spec_fraction"] = float(frac)
            info["plan"] = self._plan[0].copy()
        return self._observation(), reward, terminated, False, info

    def nominal_action(self) -> np.ndarray:
        """The action that keeps the current decision step's levers at nominal (zeros)."""
        return np.zeros(self.action_space.shape, dtype=np.float32)

    def action_for(self, values: dict[str, float]) -> np.ndarray:
        """The action that sets the current step's levers to ``values`` (others nominal)."""
        out = self.nominal_action()
        if self._i < len(self._decisions):
            idx = self._levers_at[self._decisions[self._i]]
            for i, j in enumerate(idx):
                name = self.process.levers[j].name
                if name in values:
                    out[i] = action_of(values[name], self._nominal[j], self._lo[j], self._lo[j] + self._span[j])
        return out

    @property
    def plan(self) -> np.ndarray:
        """Lever values of the current episode so far (physical units)."""
        return self._plan[0].copy()


class MetalBarRecoveryVectorEnv(VectorEnv):
    """``num_envs`` batches of :class:`MetalBarRecoveryEnv` driven by the kernel together.

    Envs that stand at the same step advance in one kernel call (episodes start
    at different inspections, so there are a few such groups at a time).
    Autoreset is ``NEXT_STEP``: the step after an episode ends returns the first
    observation of a new episode with reward 0 (gymnasium's convention).
    All randomness comes from the vector env's ``np_random``.

    Parameters
    ----------
    num_envs : int
    process, simulators, force_fault : see :class:`MetalBarRecoveryEnv`
    block : int
        Fresh batches simulated at a time when looking for flagged ones.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, process: Process | str | None = None, *,
                 simulators: Sequence[Simulator] | None = None, force_fault: str | None = None,
                 block: int | None = None):
        self.num_envs = num_envs
        self._single = MetalBarRecoveryEnv(process, simulators=simulators, force_fault=force_fault)
        self.process = self._single.process
        self.single_action_space = self._single.action_space
        self.single_observation_space = self._single.observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.source = CaseSource(self._single._sims, block=block or max(64, 4 * num_envs))
        p = self.process
        bpb = p.bars_per_batch
        self._state = np.zeros((num_envs * bpb, p.n_chars))
        self._readings = self._single._sims[0].new_obs(num_envs)
        self._plan = np.tile(p.nominal_plan(), (num_envs, 1))
        self._fault = np.zeros((num_envs, p.n_steps))
        self._drift = np.zeros((num_envs, p.n_steps))
        self._pos = np.zeros(num_envs, dtype=np.int64)
        self._set = np.zeros(num_envs, dtype=np.int64)  # which simulator's physics each env runs
        self._i = np.zeros(num_envs, dtype=np.int64)
        self._first = np.zeros(num_envs, dtype=np.int64)
        self._prev_done = np.zeros(num_envs, dtype=bool)
        self._obs = np.zeros((num_envs, self._single.layout.size))
        levers_at = self._single._levers_at
        width = max((len(x) for x in levers_at), default=1)
        self._table = np.full((len(levers_at), width), -1, dtype=np.int64)
        for d, idx in enumerate(levers_at):
            self._table[d, : len(idx)] = idx
        # Once, here: each group of envs the kernel advances is a row subset of these.
        self._single._kernel.check(self._state, 0, p.n_steps, self._set, self._plan, self._fault,
                                   self._drift, self._readings)

    def _start(self, e: int) -> None:
        s = self._single
        sim, state, cond, readings, detect = self.source.next(self.np_random, s.force_fault)
        self._set[e] = s._set_of[id(sim)]
        bpb = self.process.bars_per_batch
        self._state[e * bpb:(e + 1) * bpb] = state
        self._readings[e] = readings
        self._plan[e] = s._nominal
        self._fault[e] = cond.fault[0]
        self._drift[e] = cond.drift[0]
        self._pos[e] = detect
        steps = s.layout.decision_steps
        self._first[e] = int(np.flatnonzero(steps > detect)[0])
        self._i[e] = self._first[e]

    def _advance(self, envs: np.ndarray) -> None:
        """Advance each env in ``envs`` to just before its next decision (or the end),
        one kernel call per group of envs standing at the same step."""
        if not len(envs):
            return
        bpb = self.process.bars_per_batch
        kernel = self._single._kernel
        steps = self._single.layout.decision_steps
        i = self._i[envs]
        stops = np.where(i < len(steps), steps[np.minimum(i, len(steps) - 1)] - 1, self.process.n_steps)
        pos_all = self._pos[envs]
        for pos, stop in sorted(set(zip(pos_all.tolist(), stops.tolist()))):
            grp = envs[(pos_all == pos) & (stops == stop)]
            rows = (grp[:, None] * bpb + np.arange(bpb)[None, :]).ravel()
            st = np.ascontiguousarray(self._state[rows])
            rd = np.ascontiguousarray(self._readings[grp])
            # Pre-drawn numbers again: a Generator argument costs ~12 us per kernel call. The
            # group's arrays are rows of buffers checked at construction, the draws sized for them.
            noise, unif, cursor = kernel.draws(self.np_random, len(grp), pos, stop)
            kernel(st, pos, stop, self._set[grp], self._plan[grp], self._fault[grp], self._drift[grp],
                   rd, noise, unif, cursor)
            self._state[rows] = st
            self._readings[grp] = rd
            self._pos[grp] = stop

    def _observations(self) -> np.ndarray:
        lay = self._single.layout
        _fill_many(self._readings, lay.q, lay.c, lay.sample, lay.insp_step, lay.nominal, lay.width,
                   self._pos, self._i, len(lay.decision_steps), lay.n_steps, self._obs)
        return self._obs.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.source.clear()
        for e in range(self.num_envs):
            self._start(e)
        self._advance(np.arange(self.num_envs))
        self._prev_done[:] = False
        return self._observations(), {}

    def step(self, actions):
        s = self._single
        actions = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        reward = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        restart = np.flatnonzero(self._prev_done)
        for e in restart:
            self._start(e)
        moving = np.flatnonzero(~self._prev_done)
        _apply_actions(actions, moving, self._i, self._table, s._lo, s._span, s._int, s._nominal,
                       s._per_use, s._per_unit, self._plan, reward)
        self._i[moving] += 1
        self._advance(np.concatenate([moving, restart]))
        done = moving[self._pos[moving] == self.process.n_steps]
        if len(done):
            bpb = self.process.bars_per_batch
            for e in done:
                frac = _kernels.in_spec_fraction(self._state[e * bpb:(e + 1) * bpb], bpb, s._lower, s._upper)[0]
                reward[e] += s._value if self.process.accepts(frac) else -s._scrap
            terminated[done] = True
        self._prev_done = terminated.copy()
        return self._observations(), reward, terminated, np.zeros(self.num_envs, dtype=bool), {}




def make_vector_env(num_envs: int = 1, *, max_episode_steps: int | None = None,
                    **kwargs) -> MetalBarRecoveryVectorEnv:
    """The vector entry point of ``MetalBarRecovery-v0`` (``gym.make_vec(...,
    vectorization_mode="vector_entry_point")``).

    ``gym.make_vec`` passes the registered time limit as ``max_episode_steps``;
    it is not needed here: every episode terminates at the process's last step,
    after at most that many decisions. Other keyword arguments go to
    :class:`MetalBarRecoveryVectorEnv`.
    """
    return MetalBarRecoveryVectorEnv(num_envs, **kwargs)
