"""The ``planner+measure`` agent: measure first when it pays, then plan.

At its first decision on a flagged batch the agent runs the per-batch
value-of-information analysis (:func:`recovery.voi.batch.measure_situation`)
on the candidates at the current step. If the best one is worth more than it
costs (``evsi - cost > 0``), it has that measurement taken, pays
``measurement_cost * n`` (``Proposal.extra["measurement_cost"]``, which the
closed loop subtracts from the batch's net value), updates its posterior draws
on the reading (importance reweighting by the reading's likelihood, then
systematic resampling) and plans on the updated draws with the planner's
search and decision rule. Otherwise, and at every later decision, it is the
planner, with the same seeds, so the two agents differ only where a
measurement was taken.

The reading comes from the batch's true bars, gauged as the simulator's gauge
does (random bars, the characteristic's gauge noise): the agent therefore
declares ``needs_truth``, but the truth reaches it only through that gauge,
never as bars. Only candidates at the current step are taken: a reading after
a later step would need the world to run the batch on first.
"""

from __future__ import annotations

import numpy as np

from recovery.agents.base import Proposal, Situation
from recovery.agents.decision import choose_action
from recovery.agents.plan_search import optimise_plan
from recovery.agents.planner_agent import PlannerAgent
from recovery.agents.rollouts import PosteriorBars, accept_interval, rollout_objective
from recovery.voi.batch import TINY, MeasureConfig, _take, flagged_at, measure_situation
from recovery.voi.preposterior import posterior_weights, reading_loglik, resample

__all__ = ["MeasureFirstAgent", "gauge_reading"]


def gauge_reading(true_bars: np.ndarray, char: int, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` random bars of a batch gauged for one characteristic, with the gauge's noise.

    Parameters
    ----------
    true_bars : ndarray (bars_per_batch, n_chars)
    char : int
        Characteristic column.
    n : int
    sigma : float
        Gauge noise (standard deviation, the characteristic's unit).
    rng : Generator

    Returns
    -------
    ndarray (n,)
    """
    pick = rng.permutation(len(true_bars))[:n]
    return true_bars[pick, char] + sigma * rng.standard_normal(n)


class MeasureFirstAgent(PlannerAgent):
    """The planner, with one extra measurement at its first decision when it pays.

    Parameters
    ----------
    model : recovery.causal.model.CausalModel
    budget : str
        ``"default"`` or ``"tiny"`` (tests): the planner's and the analysis's budget.
    measure_config : MeasureConfig, optional
        Default: :class:`MeasureConfig` (``TINY`` with the tiny budget).
    posterior : recovery.calibration.PhysicsPosterior, optional
    **kwargs
        Passed to :class:`PlannerAgent`.
    """

    name = "planner+measure"
    needs_truth = True   # for the gauge only: see the module docstring

    def __init__(self, model, *, budget: str = "default", measure_config: MeasureConfig | None = None,
                 posterior=None, **kwargs):
        super().__init__(model, budget=budget, posterior=posterior, **kwargs)
        self.measure_config = measure_config or (TINY if budget == "tiny" else MeasureConfig())
        self._asked = False
        self.last_voi: dict | None = None
        """What the first decision on the last batch weighed: ``{"measured", "best", ...}``."""

    def reset(self) -> None:
        super().reset()
        self._asked = False
        self.last_voi = None

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        if self._asked or situation.true_state is None or not flagged_at(situation.process, situation.history):
            return super()._propose(situation, seed)
        self._asked = True
        p = situation.process
        a = measure_situation(situation, self.model, seed=seed, config=self.measure_config,
                              posterior=self.posterior, steps=[situation.step])
        if not a.candidates or a.candidates[0].net <= 0:
            prop = super()._propose(situation, seed)
            prop.extra["voi"] = self.last_voi = {"measured": False,
                                                 "best": a.candidates[0].to_dict() if a.candidates else None}
            return prop
        best = a.candidates[0]
        ch = p.characteristic(best.characteristic)
        ci = p.char_index[ch.name]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6A06E]))
        binary = ch.role == "crack"
        y = gauge_reading(situation.true_state, ci, best.sample, 0.0 if binary else ch.gauge_sigma, rng)
        prep = a.prepared
        bars: PosteriorBars = prep.bars
        x = bars.state.reshape(bars.n, p.bars_per_batch, p.n_chars)[:, :, ci]
        w = posterior_weights(reading_loglik(y[None], x, ch.gauge_sigma, binary=binary), leave_one_out=False)[0]
        search = _take(PosteriorBars, bars, resample(w, self.n_draws, rng))
        final = _take(PosteriorBars, bars, resample(w, self.n_final, rng))
        prop = self._plan_on(situation, seed, search, final)
        prop.extra["measurement_cost"] = best.cost
        prop.extra["voi"] = self.last_voi = {"measured": True, "best": best.to_dict(),
                                             "reading_mean": float(y.mean()),
                                             "effective_draws": float(1.0 / np.sum(w ** 2)),
                                             "decision_now": a.decision_now, "decision": prop.extra["decision"]}
        return prop

    def _plan_on(self, situation: Situation, seed: int, search: PosteriorBars, final: PosteriorBars) -> Proposal:
        """The planner's search and decision on given draws (as ``PlannerAgent._propose``)."""
        p = situation.process
        res = optimise_plan(p, situation.step, rollout_objective(self.sim, search, seed=seed),
                            start=situation.plan, seed=seed, config=self.config)
        current = situation.plan
        nothing = np.where(situation.free, p.nominal_plan(), situation.plan)
        _, pa, _ = rollout_objective(self.sim, final, seed=seed + 1)(np.stack([res.plan, current, nothing]))

        def to_come(plan):
            return float(p.lever_cost(np.where(situation.free, plan, p.nominal_plan())))

        d = choose_action(p, situation.step, float(pa[1]), float(pa[0]), to_come(res.plan),
                          continue_cost=to_come(current))
        k = 0 if d.decision == "intervene" else 1
        plan = res.plan if k == 0 else current
        self._last = plan
        return Proposal(plan, float(pa[k]),
                        note=f"{d.decision} after measuring: P(accept) {pa[k]:.2f} with the plan, "
                             f"{pa[2]:.2f} doing nothing",
                        extra={"decision": d.decision, "expected_cost": d.expected_cost,
                               "p_accept": (float(pa[k]), *accept_interval(float(pa[k]), final.n)),
                               "p_accept_do_nothing": (float(pa[2]), *accept_interval(float(pa[2]), final.n)),
                               "calibrated": self.calibrated})
