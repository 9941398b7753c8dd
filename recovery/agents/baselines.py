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

__all__ = ["NoneAgent", "HeuristicAgent", "EngineerRule", "nominal_sensitivities", "latest_means",
           "readings_from_history"]


class NoneAgent(Agent):
    """Do nothing: keep every lever at its current (nominal) value."""

    name = "none"

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        return Proposal(situation.plan.copy(), note="continue as planned, no intervention")


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


def latest_means(process: Process, readings: np.ndarray, step: int) -> list[tuple[int, int, float]]:
    """Latest gauged sample mean of each characteristic up to ``step``.

    Parameters
    ----------
    readings : ndarray (n_insp, max_sample, n_chars)
        Gauge readings, NaN where none (``recovery.agents.rl.readings_from_history``).

    Returns
    -------
    list of (char, inspection step, mean), ordered by step, then characteristic.
    """
    out = []
    with np.errstate(invalid="ignore"):
        for c in range(process.n_chars):
            for q in range(len(process.inspections) - 1, -1, -1):
                s = process.inspection_steps[q]
                x = readings[q, :, c]
                if s <= step and np.isfinite(x).any():
                    out.append((c, s, float(np.nanmean(x))))
                    break
    return sorted(out, key=lambda t: (t[1], t[0]))


class EngineerRule:
    """The rule an engineer would write, on gauge readings (plain arrays).

    Compensates each measured deviation from the healthy trajectory with the
    nearest lever downstream that moves that characteristic, by the process's
    nominal sensitivities (see :func:`nominal_sensitivities`). Used by the
    ``heuristic`` agent and as the base policy the ``rl`` agent corrects.

    Parameters
    ----------
    process : Process
    threshold : float
        A deviation is acted on when it exceeds this share of the characteristic's
        final tolerance band.
    """

    def __init__(self, process: Process, *, threshold: float = 0.15):
        self.process = process
        self.threshold = threshold
        self.expected_, self.sens_ = nominal_sensitivities(process)

    def __call__(self, readings: np.ndarray, step: int, plan: np.ndarray) -> np.ndarray:
        """The plan after ``step``, given the readings so far; levers up to ``step`` kept."""
        return self.plan(readings, step, plan)[0]

    def plan(self, readings: np.ndarray, step: int, plan: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The plan and one note per lever moved."""
        p = self.process
        plan = np.asarray(plan, dtype=np.float64).copy()
        free = sorted(map(int, np.flatnonzero(p.free_levers(step))), key=lambda j: p.levers[j].step)
        lo, hi = p.lever_bounds()
        used: set[int] = set()
        notes = []
        for c, at, mean in latest_means(p, readings, step):
            ch = p.characteristics[c]
            dev = mean - self.expected_[at, c]
            width = ch.upper - ch.lower
            if width <= 0 or abs(dev) < self.threshold * width:
                continue
            for j in free:  # the nearest free lever (by step) that moves this characteristic noticeably
                s = self.sens_[j, c]
                if j in used or abs(s) * (hi[j] - lo[j]) < 0.1 * width:
                    continue
                v = np.clip(p.levers[j].nominal - dev / s, lo[j], hi[j])
                plan[j] = np.round(v) if p.levers[j].integer else v
                used.add(j)
                notes.append(f"{ch.name} off by {dev:+.3g} {ch.unit} at step {at}: "
                             f"{p.levers[j].name} -> {plan[j]:.4g} {p.levers[j].unit}")
                break
        return plan, notes


class HeuristicAgent(Agent):
    """Compensate each measured deviation with the nearest downstream lever.

    The agent form of :class:`EngineerRule` (same parameters), asked at each inspection.
    """

    name = "heuristic"

    def __init__(self, process: Process, *, threshold: float = 0.15):
        self.rule = EngineerRule(process, threshold=threshold)

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        readings = readings_from_history(situation.process, situation.history)
        plan, notes = self.rule.plan(readings, situation.step, situation.plan)
        return Proposal(plan, note="; ".join(notes) or "no deviation worth a lever")
