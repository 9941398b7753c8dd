"""The ``planner`` agent: Optuna over lever plans, scored by the causal model.

Each candidate plan is scored by the fitted model's posterior predictive
(``CausalModel.predict_many``: filtered state of this batch, posterior draws,
common random numbers across plans) as expected money. Plans that use lever
values outside what the training data covered are not extrapolated: they score
as if they surely failed, so the planner never recommends them. A re-plan
warm-starts from the previous plan and reports how far it moved.
"""

from __future__ import annotations

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation
from recovery.agents.decision import decide
from recovery.agents.planner import PlannerConfig, optimise_plan

__all__ = ["PlannerAgent", "plan_objective"]

TINY = PlannerConfig(n_trials=16, batch_size=8, screen_grid=3, max_levers=3)


def plan_objective(model, history, *, n_draws: int = 200, seed: int = 0):
    """``objective(plans) -> (value, p_accept, score)`` from the model's predictions.

    ``value`` is expected money (currency); ``score`` adds smooth terms so the
    search can climb while every candidate is unlikely: a bonus in
    ``sqrt(p_accept)`` and a penalty on how far the predicted final means lie
    outside their bands (``PlanPredictions.distance``, in band widths).
    Out-of-range plans get the value of a certain failure.
    """
    p = model.graph_.process
    eco = p.economics

    def objective(plans: np.ndarray):
        pred = model.predict_many(history, plans, n_draws=n_draws, seed=seed)
        pa = np.where(pred.out_of_range & ~pred.batch_out_of_range, 0.0, pred.p_accept)
        value = pa * eco.batch_value - (1.0 - pa) * eco.scrap_cost - p.lever_cost(pred.plans)
        score = value + 0.2 * eco.batch_value * (np.sqrt(pa) - np.minimum(pred.distance, 5.0))
        return value, pa, np.where(pred.out_of_range & ~pred.batch_out_of_range, value, score)

    return objective


class PlannerAgent(Agent):
    """Bayesian-optimisation planner on the causal model.

    Parameters
    ----------
    model : recovery.causal.model.CausalModel
        A fitted model.
    config : PlannerConfig, optional
    budget : str
        ``"default"`` or ``"tiny"`` (tests); ignored when ``config`` is given.
    n_draws : int
        Posterior draws used per score.
    """

    name = "planner"

    def __init__(self, model, *, config: PlannerConfig | None = None, budget: str = "default",
                 n_draws: int = 200):
        self.model = model
        self.config = config or (TINY if budget == "tiny" else PlannerConfig())
        self.n_draws = n_draws
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        self._last = None

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        p = situation.process
        start = situation.plan if self._last is None else np.where(situation.free, self._last, situation.plan)
        objective = plan_objective(self.model, situation.history, n_draws=self.n_draws, seed=seed)
        res = optimise_plan(p, situation.step, objective, start=start, seed=seed, config=self.config)
        # Final figures for the new plan, the current plan and doing nothing.
        current = situation.plan
        nothing = np.where(situation.free, p.nominal_plan(), situation.plan)
        pred = self.model.predict_many(situation.history, np.stack([res.plan, current, nothing]),
                                       n_draws=self.n_draws, seed=seed)

        def to_come(plan):  # what is spent is spent: cost of the levers still ahead
            return float(p.lever_cost(np.where(situation.free, plan, p.nominal_plan())))

        d = decide(p, situation.step, float(pred.p_accept[1]), float(pred.p_accept[0]),
                   to_come(res.plan), continue_cost=to_come(current))
        k = 0 if d.decision == "intervene" else 1
        plan = res.plan if k == 0 else current
        self._last = plan
        return Proposal(
            plan, float(pred.p_accept[k]),
            note=f"{d.decision}: P(accept) {pred.p_accept[k]:.2f} with the plan, "
                 f"{pred.p_accept[2]:.2f} doing nothing",
            extra={"decision": d.decision, "expected_cost": d.expected_cost,
                   "p_accept": (float(pred.p_accept[k]), float(pred.low[k]), float(pred.high[k])),
                   "p_accept_do_nothing": (float(pred.p_accept[2]), float(pred.low[2]), float(pred.high[2])),
                   "moved": res.moved, "levers_searched": res.levers_searched,
                   "out_of_range": bool(pred.batch_out_of_range),
                   "reasons": list(pred.reasons[0]) if pred.reasons else []},
        )
