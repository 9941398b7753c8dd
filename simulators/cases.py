"""Flagged cases: fresh batches simulated inspection by inspection, each frozen
at the first inspection that flags it after its first fault.

A *case* holds the batch's true bars, its conditions (including any later
faults), and the gauge readings so far. Every agent continues the same case
with the same continuation seed (:func:`continue_case`), so agents are
compared on identical futures. Pure simulation: ``recovery.evaluate`` (the
closed loop) and ``recovery.causal.validation`` (root-cause accuracy) both use
it, so it lives below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulators.process import Conditions, Simulator, as_rng

__all__ = ["Case", "flagged_cases", "continue_case"]


@dataclass(frozen=True)
class Case:
    """One flagged batch at its detection inspection.

    Attributes
    ----------
    batch_id : str
    fault : str
        Name of the first fault injected in the batch (ground truth).
    fault_step : int
    detect_step : int
        The inspection that flagged it.
    state : ndarray (bars_per_batch, n_chars)
        True state after ``detect_step``.
    conditions : Conditions
        The batch's own conditions (one batch), later faults included.
    obs : ndarray (n_insp, max_sample, n_chars)
        Gauge readings up to ``detect_step`` (NaN elsewhere).
    seed : int
        Continuation seed: every agent's future noise comes from it.
    """

    batch_id: str
    fault: str
    fault_step: int
    detect_step: int
    state: np.ndarray
    conditions: Conditions
    obs: np.ndarray
    seed: int = field(default=0)


def flagged_cases(sim: Simulator, n_batches: int, seed: int | np.random.Generator, *,
                  first_id: int = 1) -> tuple[list[Case], int]:
    """Simulate fresh batches inspection by inspection and collect the cases.

    Returns
    -------
    cases : list of Case
        Batches flagged at the first inspection after their first fault.
    n_faulty : int
        Batches that had at least one fault.
    """
    rng = as_rng(seed)
    p = sim.process
    cond = sim.sample_conditions(n_batches, rng, first_id=first_id)
    plan = np.broadcast_to(p.nominal_plan(), (n_batches, len(p.levers)))
    state = sim.new_state(n_batches)
    obs = sim.new_obs(n_batches)
    fault_names = {f.step: f.name for f in p.faults}
    first_fault = np.where(cond.occurred.any(axis=1), np.argmax(cond.occurred, axis=1) + 1, 0)
    cases: list[Case] = []
    seeds = rng.integers(0, 2**31 - 1, n_batches)
    prev = 0
    bpb = p.bars_per_batch
    for q, ins in enumerate(p.inspections):
        sim.run(state, prev, ins.step, plan, cond, rng, obs=obs)
        flags = sim.flags(obs)[:, q]
        # "first inspection after the fault": the fault lies in (prev, ins.step]
        pick = np.flatnonzero(flags & (first_fault > prev) & (first_fault <= ins.step))
        for b in pick:
            if ins.step == p.n_steps:
                continue  # flagged only at the end: nothing left to do
            cases.append(Case(str(cond.batch_ids[b]), fault_names[first_fault[b]], int(first_fault[b]),
                              ins.step, state[b * bpb:(b + 1) * bpb].copy(), cond.take([b]),
                              obs[b].copy(), int(seeds[b])))
        prev = ins.step
    return cases, int((first_fault > 0).sum())


def continue_case(sim: Simulator, case: Case, plan: np.ndarray, *, from_step: int | None = None,
                  state: np.ndarray | None = None, stop_step: int | None = None,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the true batch on under ``plan`` with the case's own continuation noise.

    Returns the bars' state after ``stop_step`` (default: the end) and the gauge
    readings array (n_insp, max_sample, n_chars) with the new readings filled in.
    """
    p = sim.process
    st = (case.state if state is None else state).copy()
    obs = case.obs[None].copy()
    rng = np.random.default_rng(case.seed) if rng is None else rng
    sim.run(st, case.detect_step if from_step is None else from_step,
            p.n_steps if stop_step is None else stop_step, plan, case.conditions, rng, obs=obs)
    return st, obs[0]
