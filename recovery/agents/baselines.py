"""Baseline agents: do nothing, and the rule an engineer would write.

``NoneAgent`` keeps the nominal plan. ``HeuristicAgent`` compensates each
measured deviation with the nearest lever downstream that moves that
characteristic, using the process's *nominal* sensitivities: how much the
final batch mean moves per unit of each lever, measured once on healthy
batches of the process definition (the engineer's handbook knowledge). It
never sees a batch's true state.
"""

from __future__ import annotations

import copy

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation, readings_from_history
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


def _sample_means(readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (inspection, characteristic): whether a finite reading exists, and the
    readings' mean ignoring NaN.

    Sums over a contiguous bar axis, so that each mean is the same number
    ``np.nanmean`` gives for that sample alone (the same pairwise summation).
    """
    r = np.ascontiguousarray(np.swapaxes(readings, 1, 2))   # (n_insp, n_chars, max_sample)
    there = ~np.isnan(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(there, r, 0.0).sum(axis=-1) / there.sum(axis=-1)
    return np.isfinite(r).any(axis=-1), mean


def latest_means(process: Process, readings: np.ndarray, step: int) -> list[tuple[int, int, float]]:
    """Latest gauged sample mean of each characteristic up to ``step``.

    Parameters
    ----------
    readings : ndarray (n_insp, max_sample, n_chars)
        Gauge readings, NaN where none (:func:`readings_from_history`).

    Returns
    -------
    list of (char, inspection step, mean), ordered by step, then characteristic.
    """
    return _latest_means(np.asarray(process.inspection_steps, dtype=np.int64), readings, step)


def _latest_means(insp_steps: np.ndarray, readings: np.ndarray, step: int) -> list[tuple[int, int, float]]:
    gauged, mean = _sample_means(readings)
    # the last inspection up to ``step`` that gauged the characteristic
    seen = gauged & (insp_steps <= step)[:, None]
    n_insp = len(insp_steps)
    last = n_insp - 1 - np.argmax(seen[::-1], axis=0)
    out = [(c, int(insp_steps[q]), float(mean[q, c])) for c, q in enumerate(last.tolist()) if seen[q, c]]
    return sorted(out, key=lambda t: (t[1], t[0]))


class EngineerRule:
    """The rule an engineer would write, on gauge readings (plain arrays).

    Compensates each measured deviation from the healthy trajectory with the
    nearest lever downstream that moves that characteristic, by the process's
    nominal sensitivities (see :func:`nominal_sensitivities`). Used by the
    ``heuristic`` agent and as the base policy the ``rl`` agent corrects.
    Everything that does not depend on the readings (which levers can move
    which characteristic, in step order) is worked out once here, so that a
    decision is a few array operations and a short loop over characteristics.

    Parameters
    ----------
    process : Process
    threshold : float
        A deviation is acted on when it exceeds this share of the characteristic's
        final tolerance band.
    """

    def __init__(self, process: Process, *, threshold: float = 0.15):
        self.process = p = process
        self.threshold = threshold
        self.expected_, self.sens_ = nominal_sensitivities(process)
        self._insp_steps = np.asarray(p.inspection_steps, dtype=np.int64)
        self._lo, self._hi = p.lever_bounds()
        self._nominal = p.nominal_plan()
        self._integer = np.array([lv.integer for lv in p.levers], dtype=bool)
        self._width = np.array([ch.upper - ch.lower for ch in p.characteristics], dtype=np.float64)
        # levers in step order (stable: by index within a step), the order the rule tries them in
        order = np.argsort([lv.step for lv in p.levers], kind="stable")
        span = self._hi - self._lo
        # per characteristic, the levers that move it noticeably (10 % of its band over their range)
        self._movers = [[int(j) for j in order if not abs(self.sens_[j, c]) * span[j] < 0.1 * self._width[c]]
                        for c in range(p.n_chars)]

    def for_inspections(self, process: Process) -> "EngineerRule":
        """The same rule on ``process``, a file that differs from this rule's only in its inspections.

        The healthy trajectory and the lever sensitivities do not depend on where a batch is
        gauged, so they are kept (no simulation); the inspection steps, which the readings'
        rows follow, are the new file's.
        """
        same = ([(lv.name, lv.step) for lv in process.levers] == [(lv.name, lv.step) for lv in self.process.levers]
                and [c.name for c in process.characteristics] == [c.name for c in self.process.characteristics]
                and process.n_steps == self.process.n_steps)
        if not same:
            raise ValueError(f"{process.source} differs from {self.process.source} in more than its inspections")
        out = copy.copy(self)
        out.process = process
        out._insp_steps = np.asarray(process.inspection_steps, dtype=np.int64)
        return out

    def levers_moving(self, c: int) -> list[int]:
        """Indices of the levers the rule may use for characteristic ``c``, in the order it tries them."""
        return list(self._movers[c])

    def __call__(self, readings: np.ndarray, step: int, plan: np.ndarray) -> np.ndarray:
        """The plan after ``step``, given the readings so far; levers up to ``step`` kept."""
        return self.plan(readings, step, plan)[0]

    def plan(self, readings: np.ndarray, step: int, plan: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The plan and one note per lever moved."""
        p = self.process
        plan = np.asarray(plan, dtype=np.float64).copy()
        free = p.free_levers(step)
        used = np.zeros(len(plan), dtype=bool)
        notes = []
        for c, at, mean in _latest_means(self._insp_steps, readings, step):
            dev = mean - self.expected_[at, c]
            width = self._width[c]
            if width <= 0 or abs(dev) < self.threshold * width:
                continue
            for j in self._movers[c]:  # the nearest free lever (by step) that moves this characteristic
                if used[j] or not free[j]:
                    continue
                v = np.clip(self._nominal[j] - dev / self.sens_[j, c], self._lo[j], self._hi[j])
                plan[j] = np.round(v) if self._integer[j] else v
                used[j] = True
                ch, lv = p.characteristics[c], p.levers[j]
                notes.append(f"{ch.name} off by {dev:+.3g} {ch.unit} at step {at}: "
                             f"{lv.name} -> {plan[j]:.4g} {lv.unit}")
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
        plan, notes = self.rule.plan(situation.gauge_readings(), situation.step, situation.plan)
        return Proposal(plan, note="; ".join(notes) or "no deviation worth a lever")
