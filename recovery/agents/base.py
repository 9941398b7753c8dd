"""One interface for every agent that proposes lever plans.

Lifecycle: the evaluation (or ``recommend``) calls ``reset()`` when it starts
on a batch, then ``propose(situation, seed)`` at the inspection that flagged
it and again at every later inspection. An agent may keep what it learned
about the batch between calls (e.g. the last plan, to warm-start a re-plan);
``reset`` forgets it. Subclasses implement ``_propose``; the public
``propose`` times the call and enforces the contract: the plan keeps past
levers as they were and every lever inside its hard bounds and maximum change.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from simulators.definition import Process
from simulators.process import Conditions

__all__ = ["Situation", "Proposal", "Agent", "LeverBoundError", "PlanError", "check_plan", "readings_from_history"]


class LeverBoundError(RuntimeError):
    """An agent proposed a lever value outside its physical limits."""


class PlanError(ValueError):
    """A lever plan breaks a plan rule; the message names the levers."""


def check_plan(process: Process, plan, after_step: int, reference) -> None:
    """The plan rules every plan obeys, whoever wrote it (an agent, an engineer).

    A plan keeps the levers of steps up to ``after_step`` as they were used
    (``reference``), and puts every lever inside its hard bounds and maximum
    change, a whole number where the lever is one.

    Parameters
    ----------
    process : Process
    plan : array_like (n_levers,)
        Lever values in their physical units.
    after_step : int
        The last step the batch has completed; levers at later steps are free.
    reference : array_like (n_levers,)
        The values the levers of past steps were used at.

    Raises
    ------
    PlanError
        Naming each lever of a past step that changed, or each lever out of
        bounds with its value, unit and bounds.

    Examples
    --------
    >>> from simulators import load_process
    >>> p = load_process()
    >>> check_plan(p, p.nominal_plan(), 0, p.nominal_plan())   # nominal is always allowed
    """
    plan = np.asarray(plan, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    past = ~process.free_levers(after_step)
    # NaN == NaN is False on purpose: a past lever turned into NaN is a change
    changed = past & ~(plan == reference)
    if changed.any():
        names = [lv.name for lv, c in zip(process.levers, changed) if c]
        raise PlanError(f"changes levers of steps already done (the batch is after step {after_step}): "
                        f"{names}")
    ok = process.levers_ok(plan)
    if not ok.all():
        bad = [f"lever '{lv.name}' = {v:g} {lv.unit} is outside its bounds {lv.low:g}..{lv.high:g} {lv.unit}"
               + (" or not a whole number" if lv.integer else "")
               for lv, v, good in zip(process.levers, plan, ok) if not good]
        raise PlanError("puts levers outside their limits: " + "; ".join(bad))


def readings_from_history(process: Process, history) -> np.ndarray:
    """Gauge readings (n_insp, max_sample, n_chars) from a batch's step data (NaN: none).

    The one place where an agent reads the step table; the decisions that
    follow run on the array. Rows of other steps, characteristics or bars
    beyond the inspection's largest sample are left out.
    """
    a = process.arrays
    out = np.full((len(process.inspections), int(a.insp_sample.max()), process.n_chars), np.nan)
    # whole columns as arrays, then NumPy: pandas' row selection costs more than the rest
    m = (history["kind"] == "measurement").to_numpy(dtype=bool, na_value=False)
    if not m.any():
        return out
    q_of = np.full(process.n_steps + 2, -1, dtype=np.int64)
    q_of[np.asarray(process.inspection_steps, dtype=np.int64)] = np.arange(len(process.inspections))
    step = history["step"].to_numpy(dtype=np.float64, na_value=np.nan)[m]
    known = np.isfinite(step) & (step >= 0) & (step < len(q_of))
    q = np.where(known, q_of[np.where(known, step, 0).astype(np.int64)], -1)
    index = process.char_index
    c = np.fromiter((index.get(str(v), -1) for v in history["variable"].to_numpy(dtype=object)[m]),
                    dtype=np.int64, count=int(m.sum()))
    bar = history["bar_id"].to_numpy(dtype=np.float64, na_value=np.nan)[m]
    ok = (q >= 0) & (c >= 0) & np.isfinite(bar) & (bar >= 0) & (bar < out.shape[1])
    # later rows win, as one row after the other would write them
    value = history["value"].to_numpy(dtype=np.float64, na_value=np.nan)[m]
    out[q[ok], bar[ok].astype(np.int64), c[ok]] = value[ok]
    return out


@dataclass(frozen=True)
class Situation:
    """What an agent is shown when asked for a plan.

    Attributes
    ----------
    process : Process
    batch_id : str
    step : int
        The last step the batch has completed (usually an inspection); levers at
        later steps can still move.
    history : DataFrame
        The batch's step data up to ``step`` (schema of ``simulators.schema``).
    plan : ndarray (n_levers,)
        Lever values: as used up to ``step``, as currently planned after it.
    true_state : ndarray (bars_per_batch, n_chars), optional
        Every bar's true state. Only agents with ``needs_truth`` get it (the oracle).
    true_conditions : Conditions, optional
        The batch's true conditions, for the oracle.
    readings : ndarray (n_insp, max_sample, n_chars), optional
        The gauge readings of ``history`` as an array (NaN where none), when
        the caller has them already (the closed-loop evaluation does); else
        :meth:`gauge_readings` reads them from ``history``.
    """

    process: Process
    batch_id: str
    step: int
    history: pd.DataFrame
    plan: np.ndarray
    true_state: np.ndarray | None = None
    true_conditions: Conditions | None = None
    readings: np.ndarray | None = None

    def gauge_readings(self) -> np.ndarray:
        """Gauge readings (n_insp, max_sample, n_chars) up to ``step``, NaN where none."""
        if self.readings is not None:
            return self.readings
        return readings_from_history(self.process, self.history)

    @property
    def free(self) -> np.ndarray:
        """Mask of levers that act after ``step``."""
        return self.process.free_levers(self.step)


@dataclass(frozen=True)
class Proposal:
    """An agent's answer.

    Attributes
    ----------
    plan : ndarray (n_levers,)
        Lever values in physical units.
    p_accept : float or None
        The agent's own estimate that the batch ends accepted under ``plan``.
    note : str
        Why, in a sentence an engineer reads.
    latency_s : float
        Wall time of the decision, filled in by ``Agent.propose``.
    extra : dict
        Agent-specific details (e.g. the credible interval, how far a re-plan moved).
    """

    plan: np.ndarray
    p_accept: float | None = None
    note: str = ""
    latency_s: float = 0.0
    extra: dict = field(default_factory=dict)


class Agent(ABC):
    """Base class: subclasses set ``name`` and implement ``_propose``."""

    name: ClassVar[str] = "agent"
    needs_truth: ClassVar[bool] = False

    def reset(self) -> None:
        """Forget everything about the previous batch."""

    def propose(self, situation: Situation, seed: int) -> Proposal:
        """Plan for the levers after ``situation.step``; timed and bound-checked."""
        if self.needs_truth and situation.true_state is None:
            raise ValueError(f"agent '{self.name}' needs the true state")
        t = time.perf_counter()
        prop = self._propose(situation, seed)
        dt = time.perf_counter() - t
        plan = np.asarray(prop.plan, dtype=np.float64)
        try:
            check_plan(situation.process, plan, situation.step, situation.plan)
        except PlanError as exc:
            raise LeverBoundError(f"agent '{self.name}' {exc}") from None
        return Proposal(plan, prop.p_accept, prop.note, dt, prop.extra)

    @abstractmethod
    def _propose(self, situation: Situation, seed: int) -> Proposal:
        """The agent's logic; return a full-length plan."""

