"""The engineer's answer for one batch: continue, intervene (how), or scrap now.

``recommend(history, model)`` asks an agent (the planner by default) for a
plan, scores the plan and doing nothing with the causal model, and returns a
:class:`Recommendation`: the decision with the expected cost of each option,
the lever plan for the remaining steps in physical units (always inside the
hard bounds and maximum changes), P(accept) with a 94% credible interval for
the plan and for doing nothing, the root cause and the causal path the plan
acts on, the model version and the seed. When the batch or the plan lies
outside what the model's data supports, it says so.

With a calibration (``posterior``, saved in the model folder by ``recovery
fit``), the planner rolls out with the calibrated physics and the answer says
so (``physics``); a decision that depends on a characteristic the calibrated
simulator fails to reproduce (a failed posterior predictive check at an
inspection still ahead of the batch) is marked out of range with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recovery.agents.base import Agent, Situation
from recovery.agents.decision import choose_action

__all__ = ["Recommendation", "RecommendationError", "recommend", "batch_situation"]


#: the note of a recommendation on a process without levers: nothing can be planned,
#: so the answer is the diagnosis and P(accept) on the nominal course
NO_LEVERS = ("no levers: the process has no lever to plan with; the figures are the diagnosis "
             "and P(accept) on the nominal course")


class RecommendationError(ValueError):
    """The history cannot be given a recommendation (the message says why)."""


@dataclass(frozen=True)
class Recommendation:
    """See the module docstring. ``to_dict`` is the stable JSON contract."""

    batch_id: str
    step: int
    decision: str
    expected_cost: dict
    p_accept: dict
    p_accept_do_nothing: dict
    plan: list
    root_cause: list
    acts_on: list
    model_version: str
    seed: int
    agent: str
    out_of_range: bool
    reasons: tuple = ()
    note: str = ""
    latency_s: float = 0.0
    currency: str = "EUR"
    extra: dict = field(default_factory=dict)
    p_accept_model: float | None = None
    physics: str = "file"
    """``"calibrated"`` when the plan's figures come from the calibrated physics, else ``"file"``."""
    failed_checks: tuple = ()
    """``(step, characteristic)`` of failed predictive checks this decision depends on."""
    steps: list = field(default_factory=list)
    """The root cause summed per step, highest first (``{"step", "name", "probability"}``, as
    ``recovery diagnose --json`` gives): on a process without a fault catalogue, which step's
    own contribution is out of the ordinary."""

    def to_dict(self) -> dict:
        return {
            "batch_id": self.batch_id, "step": self.step, "decision": self.decision,
            "expected_cost": self.expected_cost, "p_accept": self.p_accept,
            "p_accept_do_nothing": self.p_accept_do_nothing, "plan": self.plan,
            "root_cause": self.root_cause, "acts_on": self.acts_on, "model_version": self.model_version,
            "seed": self.seed, "agent": self.agent, "out_of_range": self.out_of_range,
            "reasons": list(self.reasons), "note": self.note, "currency": self.currency,
            "p_accept_model": self.p_accept_model, "physics": self.physics,
            "failed_checks": [{"step": s, "characteristic": c} for s, c in self.failed_checks],
            "steps": list(self.steps),
        }


def batch_situation(history: pd.DataFrame, process, batch: str | None = None) -> Situation:
    """The agent's view of one batch from its step data (levers so far, nominal after).

    Raises
    ------
    RecommendationError
        No such batch, several batches and none chosen, no measurements, a batch
        that has finished the process, or one already scrapped or accepted.
    """
    ids = list(pd.unique(history["batch_id"].astype(str)))
    if batch is None:
        if len(ids) != 1:
            raise RecommendationError(f"the history holds {len(ids)} batches; choose one with --batch")
        batch = ids[0]
    h = history[history["batch_id"].astype(str) == str(batch)]
    if h.empty:
        raise RecommendationError(f"batch {batch} is not in the history")
    ev = h[h["kind"] == "event"]["variable"].astype(str)
    for word in ("scrapped", "accepted", "shipped"):
        if (ev == word).any():
            raise RecommendationError(f"batch {batch} is already {word}: nothing to recommend")
    meas = h[h["kind"] == "measurement"]
    if meas.empty:
        raise RecommendationError(f"batch {batch} has no measurements yet")
    step = int(h["step"].max())
    if step > process.n_steps:
        raise RecommendationError(f"batch {batch} has rows at step {step}, past the process's last "
                                  f"step {process.n_steps}")
    if step >= process.n_steps:
        raise RecommendationError(f"batch {batch} has finished the process (step {step}): "
                                  f"nothing left to change")
    plan = process.nominal_plan()
    lev = h[h["kind"] == "lever"]
    for name, value in zip(lev["variable"].astype(str), lev["value"].astype(float)):
        if name in process.lever_index:
            plan[process.lever_index[name]] = value
    # Levers up to the last step with data have been used (their rows, or
    # nominal): only later ones can still move, even between inspections.
    return Situation(process, str(batch), step, h, plan)


def _acts_on(model, plan: np.ndarray, nominal: np.ndarray, free: np.ndarray) -> list[str]:
    graph = model.graph_
    p = graph.process
    out = []
    for j in np.flatnonzero(free & (np.abs(plan - nominal) > 1e-12)):
        lv = p.levers[j]
        targets = sorted({e.target for e in graph.edges if e.kind == "lever" and e.source == lv.name})
        out.append(f"{lv.name} (step {lv.step}, {p.step(lv.step).name}) -> {', '.join(targets) or 'no modelled characteristic'}")
    return out


def _flagged_characteristics(process, history: pd.DataFrame, step: int) -> set[str]:
    """Characteristics whose sample mean at the batch's latest inspection lies outside its gate."""
    m = history[(history["kind"].astype(str) == "measurement") & (history["step"] == step)]
    if m.empty:
        return set()
    means = np.full(process.n_chars, np.nan)  # NaN: not gauged, never outside
    for name, mean in m.groupby(m["variable"].astype(str))["value"].mean().items():
        i = process.char_index.get(name)
        if i is not None:
            means[i] = mean
    outside = process.gate_outside(step, means)
    return {c.name for c, out in zip(process.characteristics, outside) if out}


def dependent_checks(model, posterior, sit: Situation, plan: np.ndarray) -> tuple[tuple[int, str], ...]:
    """Failed predictive checks of ``posterior`` that the decision for ``sit`` depends on.

    A check ``(step, characteristic)`` counts when its inspection lies ahead of the
    batch (the rollouts run through physics the calibration cannot reproduce there)
    and the characteristic is one the plan acts on (a lever edge of the graph from
    a moved lever) or one the batch is out of its gate on now.
    """
    if posterior is None:
        return ()
    failed = [(s, c) for s, c in posterior.failed_checks() if s > sit.step]
    if not failed:
        return ()
    graph = model.graph_
    p = graph.process
    moved = {p.levers[j].name for j in np.flatnonzero(sit.free & (np.abs(plan - p.nominal_plan()) > 1e-12))}
    chars = {e.target for e in graph.edges if e.kind == "lever" and e.source in moved}
    chars |= _flagged_characteristics(p, sit.history, sit.step)
    return tuple(sorted((s, c) for s, c in failed if c in chars))


def recommend(history: pd.DataFrame, model, *, batch: str | None = None, agent: Agent | None = None,
              seed: int = 0, n_draws: int = 300, posterior=None) -> Recommendation:
    """Recommend continue, intervene or scrap for one batch.

    Parameters
    ----------
    history : DataFrame
        Step data in the schema (may hold many batches; choose one with ``batch``).
    model : recovery.causal.model.CausalModel
        Fitted model of the same process.
    batch : str, optional
    agent : Agent, optional
        Who proposes the plan (default: the planner on ``model``). The oracle
        cannot be used here: nobody knows the true state of a real batch.
    seed : int
    n_draws : int
        Posterior draws for the final figures.
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics (``recovery.pipeline.load_posterior(model_dir)``): the
        default planner rolls out with it, and failed predictive checks the
        decision depends on mark it out of range.

    Returns
    -------
    Recommendation
    """
    from recovery.agents.planner_agent import PlannerAgent

    process = model.graph_.process
    sit = batch_situation(history, process, batch)
    agent = agent or PlannerAgent(model, posterior=posterior)
    if agent.needs_truth:
        raise RecommendationError(f"agent '{agent.name}' needs the true state, which a real batch does not give")
    t = time.perf_counter()
    prop = agent.propose(sit, seed)
    nothing = np.where(sit.free, process.nominal_plan(), sit.plan)
    if "decision" in prop.extra:
        decision, costs = prop.extra["decision"], prop.extra["expected_cost"]
        pa, pn = prop.extra["p_accept"], prop.extra["p_accept_do_nothing"]
        reasons = tuple(prop.extra.get("reasons", ()))
        out_of_range = bool(prop.extra.get("out_of_range", False)) or bool(reasons)
    else:  # agents that do not weigh options themselves: the model scores their plan
        pred = model.predict_many(sit.history, np.stack([prop.plan, nothing]), n_draws=n_draws, seed=seed)

        def to_come(plan):
            return float(process.lever_cost(np.where(sit.free, plan, process.nominal_plan())))

        d = choose_action(process, sit.step, float(pred.p_accept[1]), float(pred.p_accept[0]), to_come(prop.plan))
        decision, costs = d.decision, d.expected_cost
        pa = (float(pred.p_accept[0]), float(pred.low[0]), float(pred.high[0]))
        pn = (float(pred.p_accept[1]), float(pred.low[1]), float(pred.high[1]))
        reasons = tuple(pred.reasons[0]) if pred.reasons else ()
        out_of_range = bool(pred.out_of_range[0])
    plan = prop.plan if decision == "intervene" else nothing
    failed = dependent_checks(model, posterior, sit, plan)
    if failed:
        out_of_range = True
        reasons = reasons + tuple(f"the calibrated simulator does not reproduce {c} at the step {s} "
                                  f"inspection (failed predictive check)" for s, c in failed)
    rc = model.root_cause(sit.history)
    remaining = [{"step": lv.step, "lever": lv.name, "value": float(plan[j]) + 0.0, "unit": lv.unit}
                 for j, lv in enumerate(process.levers) if sit.free[j]]
    return Recommendation(
        batch_id=sit.batch_id, step=sit.step, decision=decision,
        expected_cost={k: float(v) for k, v in costs.items()},
        p_accept=dict(zip(("mean", "low", "high"), map(float, pa))),
        p_accept_do_nothing=dict(zip(("mean", "low", "high"), map(float, pn))),
        plan=remaining if decision != "scrap" else [],
        root_cause=[c.to_dict() for c in rc.causes[:5]],
        acts_on=_acts_on(model, plan, process.nominal_plan(), sit.free) if decision == "intervene" else [],
        model_version=model.version_.id if hasattr(model.version_, "id") else str(model.version_),
        seed=seed, agent=agent.name, out_of_range=out_of_range, reasons=reasons,
        note=NO_LEVERS if not process.levers else prop.note,
        latency_s=time.perf_counter() - t, currency=process.economics.currency,
        p_accept_model=prop.extra.get("p_accept_model"),
        physics="calibrated" if getattr(agent, "calibrated", False) else "file", failed_checks=failed,
        steps=[s.to_dict() for s in rc.steps],
    )
