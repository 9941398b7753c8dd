"""The ``planner`` agent: Optuna over lever plans, scored by simulator rollouts
under the causal model's posterior.

Each candidate plan is scored as expected money by Monte Carlo rollouts of the
numba simulator of the model's process, started from joint posterior draws of
the batch's state (:mod:`recovery.agents.rollouts`), with common random
numbers across candidates; :func:`recovery.agents.plan_search.optimise_plan`
searches (screening, CMA-ES, pruning to few levers). The chosen, current and
do-nothing plans are then scored again on fresh draws for the figures shown,
and the decision (continue, intervene, scrap) weighs their expected costs.

With a calibration (:class:`recovery.calibration.PhysicsPosterior`), every
rollout also runs with its own draw of the plant's physics, drawn jointly with
the state draw it starts from; without one, the rollouts use the process file's
physics, as if the file were exactly right about the plant.

The causal model gives a second opinion: its own P(accept) for the plan
(``p_accept_model``) and whether the batch or the plan lies outside its
training data (``out_of_range`` with reasons), which the recommendation
reports instead of staying silent. A re-plan warm-starts from the previous
plan and reports how far it moved.
"""

from __future__ import annotations

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation
from recovery.agents.decision import choose_action
from recovery.agents.plan_search import PlannerConfig, optimise_plan

__all__ = ["PlannerAgent"]

TINY = PlannerConfig(n_trials=16, batch_size=8, screen_grid=3, max_levers=3)


class PlannerAgent(Agent):
    """Bayesian-optimisation planner: Optuna over plans scored by simulator rollouts.

    Every candidate plan is rolled out on the numba simulator of the model's
    process from posterior draws of the batch's state
    (:mod:`recovery.agents.rollouts`), with common random numbers across
    candidates. The causal model supplies the state and its uncertainty and a
    second opinion: its own P(accept) of the chosen plan and whether the batch
    lies outside its training data.

    Parameters
    ----------
    model : recovery.causal.model.CausalModel
        A fitted model.
    config : PlannerConfig, optional
    budget : str
        ``"default"`` or ``"tiny"`` (tests); ignored when ``config`` is given.
    n_draws : int
        Posterior state draws (one rollout each) per candidate during the search.
    n_final : int
        Rollouts for the final figures of the chosen, current and do-nothing plans.
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics of the model's process: each rollout draws its physics
        from it. Default: the process file's physics.
    """

    name = "planner"

    def __init__(self, model, *, config: PlannerConfig | None = None, budget: str = "default",
                 n_draws: int = 64, n_final: int = 256, posterior=None):
        from simulators.process import Simulator

        self.model = model
        self.config = config or (TINY if budget == "tiny" else PlannerConfig())
        self.n_draws = n_draws if budget != "tiny" else min(n_draws, 16)
        self.n_final = n_final if budget != "tiny" else min(n_final, 64)
        self.sim = Simulator(model.graph_.process)
        self.posterior = posterior
        self._physics = None
        if posterior is not None:
            posterior.check_process(self.sim.process)
            # every posterior draw as kernel parameters, once; rollouts pick rows
            self._physics = self.sim.physics(posterior.keys, posterior.draws)
        self._last: np.ndarray | None = None

    @property
    def calibrated(self) -> bool:
        """Whether the rollouts use calibrated physics (else the process file's)."""
        return self._physics is not None

    def physics_draws(self, n: int, seed: int) -> np.ndarray | None:
        """``n`` physics draws from the calibration for one set of rollouts (None: the file's)."""
        if self._physics is None:
            return None
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA11B]))
        return self._physics[self.posterior.sample_indices(n, rng)]

    def reset(self) -> None:
        self._last = None

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        from recovery.agents.rollouts import accept_interval, posterior_bars, rollout_objective

        p = situation.process
        start = situation.plan if self._last is None else np.where(situation.free, self._last, situation.plan)
        bars = posterior_bars(self.sim, self.model, situation.history, self.n_draws, seed=seed,
                              params=self.physics_draws(self.n_draws, seed))
        objective = rollout_objective(self.sim, bars, seed=seed)
        res = optimise_plan(p, situation.step, objective, start=start, seed=seed, config=self.config)
        # Final figures for the new plan, the current plan and doing nothing, on fresh draws.
        current = situation.plan
        nothing = np.where(situation.free, p.nominal_plan(), situation.plan)
        final = posterior_bars(self.sim, self.model, situation.history, self.n_final, seed=seed + 1,
                               params=self.physics_draws(self.n_final, seed + 1))
        _, pa, _ = rollout_objective(self.sim, final, seed=seed + 1)(np.stack([res.plan, current, nothing]))

        def to_come(plan):  # what is spent is spent: cost of the levers still ahead
            return float(p.lever_cost(np.where(situation.free, plan, p.nominal_plan())))

        d = choose_action(p, situation.step, float(pa[1]), float(pa[0]), to_come(res.plan),
                   continue_cost=to_come(current))
        k = 0 if d.decision == "intervene" else 1
        plan = res.plan if k == 0 else current
        self._last = plan
        model_view = self.model.predict_many(situation.history, plan[None], n_draws=200, seed=seed)
        return Proposal(
            plan, float(pa[k]),
            note=f"{d.decision}: P(accept) {pa[k]:.2f} with the plan, {pa[2]:.2f} doing nothing",
            extra={"decision": d.decision, "expected_cost": d.expected_cost,
                   "p_accept": (float(pa[k]), *accept_interval(float(pa[k]), self.n_final)),
                   "p_accept_do_nothing": (float(pa[2]), *accept_interval(float(pa[2]), self.n_final)),
                   "p_accept_model": float(model_view.p_accept[0]),
                   "moved": res.moved, "levers_searched": res.levers_searched,
                   "calibrated": self.calibrated,
                   # characteristics whose model state the last sample contradicted
                   "state_from_sample": list(final.from_sample),
                   "out_of_range": bool(model_view.out_of_range[0]),
                   "reasons": list(model_view.reasons[0]) if model_view.reasons else []},
        )
