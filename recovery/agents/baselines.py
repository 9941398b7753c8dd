"""Baseline agents: do nothing, and the rule an engineer would write.

``NoneAgent`` keeps the nominal plan. ``HeuristicAgent`` compensates each
measured deviation with the nearest lever downstream that moves that
characteristic, using the process's *nominal* sensitivities: how much the
final batch mean moves per unit of each lever, measured once on healthy
batches of the process definition (the engineer's handbook knowledge). It
never sees a batch's true state.
"""

from __future__ import annotations

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation
from simulators.definition import Process
from simulators.process import Simulator

__all__ = ["NoneAgent", "HeuristicAgent", "nominal_sensitivities", "sample_means"]


class NoneAgent(Agent):
    """Do nothing: keep every lever at its current (nominal) value."""

    name = "none"

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        return Proposal(situation.plan.copy(), note="continue as planned, no intervention")


def sample_means(situation: Situation) -> dict[str, tuple[int, float]]:
    """Latest gauged sample mean of each characteristic: name -> (step, mean)."""
    h = situation.history
    m = h[(h["kind"] == "measurement") & (h["step"] <= situation.step)]
    if m.empty:
        return {}
    g = m.groupby(["variable", "step"], observed=True)["value"].mean().reset_index()
    g = g.sort_values("step").groupby("variable", observed=True).tail(1)
    return {str(v): (int(s), float(x)) for v, s, x in zip(g["variable"], g["step"], g["value"])}


def nominal_sensitivities(process: Process, *, n_batches: int = 64, seed: int = 0):
    """Expected trajectory and lever sensitivities of a healthy batch.

    Returns
    -------
    expected : ndarray (n_steps + 1, n_chars)
        Mean batch-mean state after each step under the nominal plan.
    sens : ndarray (n_levers, n_chars)
        Change of the final batch mean per unit of each lever (finite difference
        with common random numbers, around nominal).
    """
    sim = Simulator(process)
    cond = sim.sample_conditions(n_batches, seed, faults=False)
    base = sim.simulate(n_batches, seed, conditions=cond, record_latent=True)
    expected = base.latent.mean(axis=0)
    lo, hi = process.lever_bounds()
    sens = np.zeros((len(process.levers), process.n_chars))
    for j, lv in enumerate(process.levers):
        plan = process.nominal_plan()
        up = hi[j] - lv.nominal >= lv.nominal - lo[j]
        delta = 0.25 * ((hi[j] - lv.nominal) if up else (lo[j] - lv.nominal))
        if lv.integer:
            delta = 1.0 if up else -1.0
        plan[j] = lv.nominal + delta
        moved = sim.simulate(n_batches, seed, conditions=cond, plan=plan, record_latent=True)
        sens[j] = (moved.latent[:, -1] - base.latent[:, -1]).mean(axis=0) / delta
    return expected, sens


class HeuristicAgent(Agent):
    """Compensate each measured deviation with the nearest downstream lever.

    Parameters
    ----------
    process : Process
    threshold : float
        A deviation is acted on when it exceeds this share of the characteristic's
        final tolerance band.
    """

    name = "heuristic"

    def __init__(self, process: Process, *, threshold: float = 0.15):
        self.process = process
        self.threshold = threshold
        self.expected_, self.sens_ = nominal_sensitivities(process)

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        p = self.process
        plan = situation.plan.copy()
        free = situation.free
        lo, hi = p.lever_bounds()
        used: set[int] = set()
        notes = []
        for name, (step, mean) in sample_means(situation).items():
            c = p.char_index.get(name)
            if c is None:
                continue
            ch = p.characteristics[c]
            dev = mean - self.expected_[step, c]
            width = ch.upper - ch.lower
            if width <= 0 or abs(dev) < self.threshold * width:
                continue
            # the nearest free lever (by step) that moves this characteristic noticeably
            for j in sorted(np.flatnonzero(free), key=lambda j: p.levers[j].step):
                s = self.sens_[j, c]
                if j in used or abs(s) * (hi[j] - lo[j]) < 0.1 * width:
                    continue
                v = np.clip(p.levers[j].nominal - dev / s, lo[j], hi[j])
                plan[j] = np.round(v) if p.levers[j].integer else v
                used.add(j)
                notes.append(f"{name} off by {dev:+.3g} {ch.unit} at step {step}: "
                             f"{p.levers[j].name} -> {plan[j]:.4g} {p.levers[j].unit}")
                break
        return Proposal(plan, note="; ".join(notes) or "no deviation worth a lever")
