"""The ``planner+measure`` agent: measure first when it pays, then plan.

At its first decision on a flagged batch the agent runs the per-batch
value-of-information analysis (:func:`recovery.voi.batch.measure_situation`)
on the candidates at the current step. If the best one is worth more than it
costs (``evsi - cost > 0``, the value from a sample independent of the one that
chose it: ``MeasureConfig.confirm``), it has that measurement taken, pays
``measurement_cost * n`` (``Proposal.extra["measurement_cost"]``, which the
closed loop subtracts from the batch's net value), updates the analysis's
posterior draws on the reading (importance reweighting by the reading's
likelihood) and re-plans as the analysis valued it: the options (continue, the
planner's own plan, the plan for the bad cases, scrap)
are weighed again on the updated draws with the planner's decision rule. If the
reading confirms the decision made without it, the agent answers as the
planner does; otherwise it takes the option the reading points to. Without a
measurement that pays, and at every later decision, it is the planner, with
the same seeds, so the two agents differ only where a measurement was taken.

The reading comes from the batch's true bars, gauged as the simulator's gauge
does (random bars, the characteristic's gauge noise): the agent therefore
declares ``needs_truth``, but the truth reaches it only through that gauge,
never as bars. Only candidates at the current step are taken: a reading after
a later step would need the world to run the batch on first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recovery.agents.base import Proposal, Situation
from recovery.agents.planner_agent import PlannerAgent
from recovery.agents.rollouts import PosteriorBars, accept_interval
from recovery.voi.batch import TINY, MeasureConfig, flagged_at, measure_situation
from recovery.voi.preposterior import decide, posterior_weights, reading_loglik

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
        self.last_analysis = None
        """The analysis made at that decision (:class:`MeasureAnalysis`), for benchmarks that
        value its options on the true batch."""

    def reset(self) -> None:
        super().reset()
        self._asked = False
        self.last_voi = None
        self.last_analysis = None

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        if self._asked or situation.true_state is None or not flagged_at(situation.process, situation.history):
            return super()._propose(situation, seed)
        self._asked = True
        p = situation.process
        # The planner's own answer first: its plan is the analysis's intervene option, so that a
        # reading re-chooses between what the planner would do and the alternatives (another
        # search's plan can be worse than the planner's, and the agent is scored against it).
        own = super()._propose(situation, seed)
        a = measure_situation(situation, self.model, seed=seed, config=replace(self.measure_config, confirm=True),
                              posterior=self.posterior, steps=[situation.step],
                              plan=own.plan if own.extra.get("decision") == "intervene" else None)
        self.last_analysis = a
        # Decide on the confirmed value, from a sample that did not pick the candidate:
        # gating on the value it was picked by measured on noise (the optimiser's curse).
        best = a.confirmed
        if best is None or best.net <= 0:
            prop = own
            prop.extra["voi"] = self.last_voi = {
                "measured": False, "best": best.to_dict() if best else None,
                "best_revalued": a.candidates[0].to_dict() if a.candidates else None}
            return prop
        ch = p.characteristic(best.characteristic)
        ci = p.char_index[ch.name]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6A06E]))
        binary = ch.role == "crack"
        y = gauge_reading(situation.true_state, ci, best.sample, 0.0 if binary else ch.gauge_sigma, rng)
        prep = a.prepared
        bars: PosteriorBars = prep.bars
        x = bars.state.reshape(bars.n, p.bars_per_batch, p.n_chars)[:, :, ci]
        w = posterior_weights(reading_loglik(y[None], x, ch.gauge_sigma, binary=binary), leave_one_out=False)[0]
        # Re-plan as the analysis valued it: the options found once, on the updated draws.
        k = int(decide(w @ prep.values.T, prep.kinds, min_gain=self.measure_config.min_gain))
        voi = {"measured": True, "best": best.to_dict(), "best_revalued": a.candidates[0].to_dict(),
               "reading_mean": float(y.mean()),
               "effective_draws": float(1.0 / np.sum(w ** 2)), "decision_now": a.decision_now,
               "option": prep.labels[k], "changed": k != prep.now}
        if k == prep.now:
            # the reading confirms the decision: the planner's own answer, as without it
            prop = own
        else:
            prop = self._adopt(situation, prep, k, w)
        prop.extra["measurement_cost"] = best.cost
        prop.extra["voi"] = self.last_voi = {**voi, "decision": prop.extra["decision"]}
        return prop

    def _adopt(self, situation: Situation, prep, k: int, w: np.ndarray) -> Proposal:
        """The option ``k`` of the analysis, with figures from its rollouts weighted by ``w``."""
        p = situation.process
        eco = p.economics
        kind = prep.kinds[k]
        nothing = np.where(situation.free, p.nominal_plan(), situation.plan)
        plan = prep.plans[k] if kind != "scrap" else situation.plan
        # accepted where the rollout's net value beats the scrap outcome (see batch._net_values)
        acc = prep.values[: len(prep.plans)] > -eco.scrap_cost - 1e-9 - np.array(
            [float(p.lever_cost(np.where(situation.free, q, p.nominal_plan()))) for q in prep.plans])[:, None]
        pa = acc @ w
        j_nothing = next((j for j, q in enumerate(prep.plans) if np.allclose(q, nothing)), 0)
        pk = float(pa[k]) if kind != "scrap" else 0.0
        n_eff = max(int(1.0 / np.sum(w ** 2)), 1)
        # expected cost as choose_action counts it (net value = batch_value - cost); the best option of each kind
        ev = prep.values @ w
        exp = {kd: float(eco.batch_value - max(ev[j] for j in range(len(ev)) if prep.kinds[j] == kd))
               for kd in dict.fromkeys(prep.kinds)}
        self._last = plan
        return Proposal(plan, pk, note=f"{kind} after measuring: {prep.labels[k]}",
                        extra={"decision": kind, "expected_cost": exp,
                               "p_accept": (pk, *accept_interval(pk, n_eff)),
                               "p_accept_do_nothing": (float(pa[j_nothing]),
                                                       *accept_interval(float(pa[j_nothing]), n_eff)),
                               "calibrated": self.calibrated})
