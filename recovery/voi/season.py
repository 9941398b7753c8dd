"""One season of the plant under several inspection plans, with common random numbers.

The world a season is drawn from (:class:`World`: the process file's physics, or the
calibrated physics and the fault rates a causal model learnt), the policies that decide
on a flagged batch (the engineer's rule, an agent, doing nothing), and
:func:`play_season`, which plays every batch of a season under each plan.
:mod:`recovery.voi.plant` values changes to the inspection plan on top of it.

How a season is played (:func:`play_season`)
-------------------------------------------
Every batch runs from raw rod to the last step under the nominal plan. At each
inspection of the plan its first ``sample`` bars are gauged; the first inspection
whose sample means leave a gate *takes the batch over*: from there the policy
decides at that inspection and at every later one (before the last step), exactly
like ``recovery.evaluate.closed_loop``. A batch never flagged runs nominal. Net
value per batch: the batch value if accepted, else minus the scrap cost (a batch the
policy scraps early saves the processing of the remaining steps), minus the lever
cost. The inspection plan's own cost (:func:`inspection_cost`) is kept apart.

Unlike ``recovery evaluate`` (which plays only batches flagged at the first
inspection after their fault, a set that itself changes with the inspection plan),
every batch of the season counts here: a change that flags a batch earlier, later
or not at all moves value between batches that an evaluation of flagged cases
would not compare.

Common random numbers
---------------------
Plans are compared on the same batches with the same noise: every batch has its
own physics stream (the kernel's draws do not depend on the inspection plan: an
inspection, like the washing step it may replace, draws nothing, and gauging is
switched off in the kernel) and its gauge errors come from a separate stream keyed
by (batch, step), so bar ``j``'s reading of a characteristic at step ``k`` is the
same under every plan that gauges it. The difference between two plans is then
only what the decisions made of the readings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from simulators.definition import Process
from simulators.process import Conditions, Simulator, as_rng

__all__ = ["World", "world_from_file", "world_from_model", "inspection_cost", "HeuristicPolicy",
           "NonePolicy", "AgentPolicy", "SeasonResult", "play_season", "world_flag_shares",
           "history_flag_shares", "decisions_changed"]


# ---- the world a season is drawn from ---------------------------------------------------------

@dataclass(frozen=True)
class World:
    """What a simulated season is drawn from.

    Attributes
    ----------
    process : Process
        The process file (structure, levers, economics; its inspection plan is replaced
        by each plan played).
    params : ndarray (n_sets, n_steps, MAX_PARAMS)
        Step-parameter sets (physics), one per world draw.
    fault_rates : ndarray (n_sets, n_faults)
        Probability per batch of each catalogue fault, per world draw.
    source : str
        Where the physics and the fault rates come from, for reports.
    """

    process: Process
    params: np.ndarray
    fault_rates: np.ndarray
    source: str

    @property
    def n_sets(self) -> int:
        return int(self.params.shape[0])


def world_from_file(process: Process) -> World:
    """The world exactly as the process file says (one draw)."""
    sim = Simulator(process)
    return World(process, sim.arrays.params[None].copy(),
                 np.array([[f.rate for f in process.faults]]), "process file")


def _segment_of(process: Process, step: int) -> int:
    for q, s in enumerate(process.inspection_steps):
        if step <= s:
            return q
    return len(process.inspections) - 1


def model_fault_rates(process: Process, model, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-fault rates ``(n, n_faults)`` from the causal model's posterior.

    The model learns, per segment between inspections, the probability that a batch
    carries a fault shift; each catalogue fault of the segment keeps its share of the
    catalogue's segment rate, scaled to the posterior draw's.
    """
    th = model.theta_draws()
    lay = model.layout_
    pick = rng.choice(th.shape[0], size=n, replace=n > th.shape[0])
    pi = np.full((n, len(process.inspections)), np.nan)
    for q, i in zip(lay.rate_q, lay.rate_i):
        pi[:, q] = 1.0 / (1.0 + np.exp(-th[pick, i]))
    rates = np.array([f.rate for f in process.faults], dtype=np.float64)
    seg = np.array([_segment_of(process, f.step) for f in process.faults], dtype=int)
    out = np.repeat(rates[None], n, axis=0)
    for q in np.unique(seg):
        m = seg == q
        cat = 1.0 - np.prod(1.0 - rates[m])
        if cat > 0 and np.isfinite(pi[:, q]).all():
            out[:, m] = np.clip(rates[m][None] * (pi[:, q] / cat)[:, None], 0.0, 0.5)
    return out


def world_from_model(process: Process, *, model=None, posterior=None, n_sets: int = 16,
                     seed: int | np.random.Generator = 0) -> World:
    """The world the fitted model and calibration believe in, as ``n_sets`` draws.

    Parameters
    ----------
    process : Process
        The process file the model was fitted on.
    model : recovery.causal.model.CausalModel, optional
        Gives the fault rates (default: the file's catalogue rates).
    posterior : recovery.calibration.PhysicsPosterior, optional
        Gives the physics (default: the file's).
    n_sets : int
        World draws (each a physics draw and a fault-rate draw).
    seed : int or Generator
    """
    rng = as_rng(seed)
    sim = Simulator(process)
    src = []
    if posterior is not None:
        posterior.check_process(process)
        idx = posterior.sample_indices(n_sets, rng)
        params = sim.physics(posterior.keys, posterior.draws[idx])
        src.append("calibrated physics")
    else:
        params = np.repeat(sim.arrays.params[None], n_sets, axis=0)
        src.append("the file's physics")
    if model is not None:
        rates = model_fault_rates(process, model, n_sets, rng)
        src.append("fault rates from the causal model")
    else:
        rates = np.repeat(np.array([[f.rate for f in process.faults]]), n_sets, axis=0)
        src.append("the file's fault rates")
    return World(process, np.ascontiguousarray(params), rates, ", ".join(src))


def inspection_cost(process: Process) -> float:
    """Cost of the inspection plan per batch, in currency.

    ``station_cost`` per inspection plus ``measurement_cost`` per characteristic and
    bar gauged.
    """
    e = process.economics
    return float(sum(e.station_cost + e.measurement_cost * i.sample * len(i.measures)
                     for i in process.inspections))


# ---- policies: what the plant decides on a flagged batch --------------------------------------

Policy = Callable[..., tuple[np.ndarray, bool]]


class NonePolicy:
    """Never intervene (the plan stays nominal)."""

    name = "none"
    description = "no one acts on a flagged batch (its plan stays nominal)"

    def for_process(self, process: Process) -> "NonePolicy":
        return self

    def __call__(self, process, readings, step, plan, cond) -> tuple[np.ndarray, bool]:
        return plan, False


class HeuristicPolicy:
    """The ``heuristic`` agent's rule (``recovery.agents.baselines.EngineerRule``) on the readings.

    The same decisions as ``HeuristicAgent`` without building the step-data table each
    time (the agent turns the table back into these readings). Its nominal
    sensitivities do not depend on the inspection plan, so they are computed once.
    """

    name = "heuristic"

    def __init__(self, process: Process, *, threshold: float = 0.15):
        from recovery.agents.baselines import EngineerRule

        self.rule = EngineerRule(process, threshold=threshold)
        self.description = (f"the heuristic agent's rule (recovery.agents.baselines.EngineerRule) decides on "
                            f"flagged batches: each gauged deviation over {threshold:.0%} of the band is "
                            f"compensated with the nearest free lever; not the planner")

    def for_process(self, process: Process) -> "HeuristicPolicy":
        out = copy.copy(self)
        out.rule = self.rule.for_inspections(process)
        return out

    def __call__(self, process, readings, step, plan, cond) -> tuple[np.ndarray, bool]:
        return self.rule(readings, step, plan), False


class AgentPolicy:
    """Any ``recovery.agents`` agent that plans from step data, shown the batch's history as
    ``recovery evaluate`` shows it.

    Slower than :class:`HeuristicPolicy`: the planner takes about 0.5-1.3 s of CPU per
    decision at its default budget, 0.2 s at ``budget="tiny"`` (default model, 2026-12-01).
    The planner's causal model reads only what its graph gauges: readings of a new station
    leave its state draws unchanged (a larger sample or a characteristic added at one of
    its inspections do move them). Agents that need the true state (the oracle) are refused.

    The agent is reset before each decision, so that a decision is a function of what it
    is shown (the planner's warm start is its last plan, which the season hands back as
    the batch's current plan anyway), and decisions are remembered by (batch, step,
    readings so far, plan): plans of a season share every decision made before their
    readings differ, so each is asked once.
    """

    def __init__(self, agent, *, seed: int = 0):
        if agent.needs_truth:
            raise ValueError(f"agent '{agent.name}' needs the true state; a season's policy sees readings only")
        self.agent, self.seed = agent, seed
        self.name = agent.name
        self.description = f"the '{agent.name}' agent decides on flagged batches, shown the step-data table"
        self._memo: dict = {}
        self._batch = None
        self.asked = 0

    def for_process(self, process: Process) -> "AgentPolicy":
        return self

    def start_batch(self, b: int) -> None:
        """The batch the next decisions are for (part of the memo's key)."""
        self._batch = b

    def __call__(self, process, readings, step, plan, cond) -> tuple[np.ndarray, bool]:
        from recovery.agents.base import Situation
        from simulators.schema import observations_frame

        plan = np.asarray(plan, dtype=np.float64)
        seen = tuple((s, r[np.isfinite(r)].tobytes()) for s, r in zip(process.inspection_steps, readings)
                     if s <= step)
        key = (self._batch, step, plan.tobytes(), seen)
        if key not in self._memo:
            # what recovery.evaluate.situation_for shows a non-oracle agent (same layer: not imported)
            hist = observations_frame(process, cond, readings[None], plan[None], upto_step=step)
            sit = Situation(process, str(cond.batch_ids[0]), step, hist, plan.copy())
            self.agent.reset()
            prop = self.agent.propose(sit, seed=self.seed + step)
            self._memo[key] = (np.asarray(prop.plan, dtype=np.float64).copy(), prop.extra.get("decision") == "scrap")
            self.asked += 1
        new, scrap = self._memo[key]
        return new.copy(), scrap


# ---- one season under several inspection plans -----------------------------------------------

@dataclass(frozen=True)
class SeasonResult:
    """Outcomes of a season's batches under each plan (rows: plans, columns: batches).

    Attributes
    ----------
    net : ndarray (n_plans, n_batches)
        Net value per batch before the inspection plan's cost, in currency.
    accepted, scrapped : ndarray of bool (n_plans, n_batches)
        Shipped; scrapped early by the policy.
    taken : ndarray of int (n_plans, n_batches)
        Step at which the batch was taken over (flagged), 0 if never.
    group : ndarray of int (n_batches,)
        World draw each batch ran under.
    inspection_cost : ndarray (n_plans,)
        Cost of each plan's inspections per batch.
    plan : ndarray (n_plans, n_batches, n_levers)
        The lever plan each batch ran with in the end (its levers' units).
    ended : ndarray of int (n_plans, n_batches)
        Step after which the policy scrapped the batch, 0 if it did not.

    Notes
    -----
    Two plans made the same decisions on batch ``b`` when ``plan[:, b]`` and
    ``ended[:, b]`` agree; with common random numbers the batch's outcome is then the
    same too (:func:`decisions_changed`).
    """

    net: np.ndarray
    accepted: np.ndarray
    scrapped: np.ndarray
    taken: np.ndarray
    group: np.ndarray
    inspection_cost: np.ndarray
    plan: np.ndarray
    ended: np.ndarray


def _conditions(sim: Simulator, world: World, group: np.ndarray, rng: np.random.Generator) -> Conditions:
    """Batch conditions with each batch's faults drawn at its world draw's rates."""
    p = sim.process
    n = len(group)
    cond = sim.sample_conditions(n, rng, faults=False)
    fault = np.zeros_like(cond.fault)
    occurred = np.zeros_like(cond.occurred)
    for k, f in enumerate(p.faults):
        hit = rng.random(n) < world.fault_rates[group, k]
        mag = rng.uniform(f.low, f.high, n)
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0) if f.symmetric else 1.0
        occurred[:, f.step - 1] = hit
        fault[:, f.step - 1] = np.where(hit, mag * sign, 0.0)
    return Conditions(cond.batch_ids, cond.time, fault, occurred, cond.drift)


def _play_batch(sim: Simulator, policy, params: np.ndarray, pset: np.ndarray, cond: Conditions,
                b: int, seed: int) -> tuple[float, bool, bool, int, np.ndarray, int]:
    """One batch under ``sim.process``'s inspection plan.

    Returns (net, accepted, scrapped, taken step, final lever plan, step it was scrapped after or 0).
    """
    p = sim.process
    eco = p.economics
    rng = np.random.default_rng([seed, b, 0])
    if hasattr(policy, "start_batch"):
        policy.start_batch(b)
    state = sim.new_state(1)
    readings = np.full((len(p.inspections), max(i.sample for i in p.inspections), p.n_chars), np.nan)
    gauge_sigma = sim.arrays.gauge_sigma
    nominal = p.nominal_plan()
    plan = nominal.copy()
    step, taken, scrapped = 0, 0, False
    for q, ins in enumerate(p.inspections):
        sim.run(state, step, ins.step, plan, cond, rng, params=params, param_set=pset)
        step = ins.step
        z = np.random.default_rng([seed, b, 1, step]).standard_normal((p.bars_per_batch, p.n_chars))
        cols = [p.char_index[m] for m in ins.measures]
        n = ins.sample
        readings[q, :n, cols] = (state[:n, cols] + gauge_sigma[cols] * z[:n, cols]).T
        if step >= p.n_steps:
            break
        if not taken:
            means = np.full(p.n_chars, np.nan)
            means[cols] = readings[q, :n, cols].mean(axis=1)
            if p.gate_flags(step, means):
                taken = step
        if taken:
            new, scrap = policy(p, readings, step, plan, cond)
            plan = np.asarray(new, dtype=np.float64)
            if scrap:
                scrapped = True
                break
    if step < p.n_steps and not scrapped:  # a plan whose last inspection is not the last step
        sim.run(state, step, p.n_steps, plan, cond, rng, params=params, param_set=pset)
        step = p.n_steps
    cost = float(p.lever_cost(np.where(~p.free_levers(step), plan, nominal)))
    if scrapped:
        return (-eco.scrap_cost + eco.processing_cost_per_step * (p.n_steps - step) - cost, False, True, taken,
                plan, step)
    ok = bool(sim.accepted(state)[0])
    return (eco.batch_value if ok else -eco.scrap_cost) - cost, ok, False, taken, plan, 0


def play_season(world: World, plans: Sequence[Process], policy, n_batches: int,
                seed: int, *, progress: bool = False) -> SeasonResult:
    """Play the same ``n_batches`` fresh batches under each inspection plan.

    Parameters
    ----------
    world : World
        Physics and fault rates the batches are drawn from.
    plans : sequence of Process
        Process files that differ from ``world.process`` only in their inspections
        (and washing steps turned into inspections).
    policy : HeuristicPolicy, NonePolicy or AgentPolicy
        What the plant does with a flagged batch (``policy.for_process(p)`` is used on plan ``p``).
    n_batches : int
    seed : int
        Seeds the conditions, every batch's physics and every gauge error.

    Returns
    -------
    SeasonResult
    """
    if n_batches < 1:
        raise ValueError("n_batches must be at least 1")
    base = world.process
    for p in plans:
        if p.n_steps != base.n_steps or len(p.levers) != len(base.levers) or len(p.faults) != len(base.faults):
            raise ValueError(f"plan {p.source} differs from {base.source} in more than its inspections")
    rng = np.random.default_rng([seed, 2])
    group = np.arange(n_batches) % world.n_sets
    cond = _conditions(Simulator(base), world, group, rng)
    shape = (len(plans), n_batches)
    net = np.zeros(shape)
    acc = np.zeros(shape, dtype=bool)
    scr = np.zeros(shape, dtype=bool)
    taken = np.zeros(shape, dtype=int)
    ended = np.zeros(shape, dtype=int)
    final = np.zeros(shape + (len(base.levers),))
    it = range(len(plans))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="plans", unit="plan")
    for k in it:
        p = plans[k]
        sim = Simulator(p)
        pol = policy.for_process(p)
        for b in range(n_batches):
            cb = cond.take([b])
            net[k, b], acc[k, b], scr[k, b], taken[k, b], final[k, b], ended[k, b] = _play_batch(
                sim, pol, world.params, group[b:b + 1], cb, b, seed)
    return SeasonResult(net, acc, scr, taken, group, np.array([inspection_cost(p) for p in plans]), final, ended)


def decisions_changed(res: SeasonResult, k: int, base: int = 0) -> np.ndarray:
    """Batches whose decisions differ between plan ``k`` and plan ``base``, ``(n_batches,)`` of bool.

    A decision is the final lever plan and whether (and where) the batch was scrapped;
    being flagged earlier without acting otherwise is not a different decision.
    """
    return ~np.all(np.isclose(res.plan[k], res.plan[base], rtol=0.0, atol=1e-12), axis=1) | \
        (res.ended[k] != res.ended[base])


def world_flag_shares(world: World, n_batches: int, seed: int) -> np.ndarray:
    """Share of batches each inspection of ``world.process`` flags, nominal plan, ``(n_insp,)``.

    The world's side of a check against the plant's history (:func:`history_flag_shares`).
    """
    p = world.process
    sim = Simulator(p)
    rng = np.random.default_rng([seed, 4])
    group = np.arange(n_batches) % world.n_sets
    cond = _conditions(sim, world, group, rng)
    state = sim.new_state(n_batches)
    obs = sim.new_obs(n_batches)
    sim.run(state, 0, p.n_steps, p.nominal_plan(), cond, rng, obs=obs, params=world.params, param_set=group)
    return sim.flags(obs).mean(axis=0)


def history_flag_shares(process: Process, history) -> np.ndarray:
    """Share of the history's batches each inspection flags (sample mean outside a gate), ``(n_insp,)``.

    Batches whose levers were moved before an inspection count too: the gates see
    what was gauged, whatever was done.
    """
    m = history[history["kind"] == "measurement"]
    means = m.groupby(["batch_id", "step", "variable"], observed=True)["value"].mean().unstack("variable")
    out = np.zeros(len(process.inspections))
    n = max(history["batch_id"].nunique(), 1)
    for q, ins in enumerate(process.inspections):
        try:
            at = means.xs(ins.step, level="step")
        except KeyError:
            continue
        arr = np.full((len(at), process.n_chars), np.nan)
        for name in at.columns:
            if str(name) in process.char_index:
                arr[:, process.char_index[str(name)]] = at[name].to_numpy(dtype=np.float64)
        out[q] = process.gate_flags(ins.step, arr).sum() / n
    return out
