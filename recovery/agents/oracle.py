"""The oracle: a sampling-based plan search on the true simulator.

It knows what no real agent can: the true simulator and every bar's true
state at the decision point. Future noise and future faults stay random to it.
Its recovery rate is the upper bound the other agents are measured against.

The search is the cross-entropy method over the levers still ahead, in
normalised coordinates, with common random numbers: every candidate is rolled
out with the same seed, so differences between candidates are plan effects,
not noise. A last greedy pass resets levers to nominal when that does not
lose value, so the oracle prefers few interventions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recovery.agents.base import Agent, Proposal, Situation
from simulators.process import Conditions, Simulator

__all__ = ["OracleSearch", "OracleAgent", "plan_value"]


def plan_value(sim: Simulator, in_spec: np.ndarray, plans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected money and acceptance rate of plans from rollout results.

    Parameters
    ----------
    sim : Simulator
    in_spec : ndarray (n_plans, n_rollouts)
        Share of bars in spec at the end of each rollout.
    plans : ndarray (n_plans, n_levers)

    Returns
    -------
    value : ndarray (n_plans,)
        ``P(accept) * batch_value - (1 - P(accept)) * scrap_cost - lever_cost``, in currency.
    p_accept : ndarray (n_plans,)
    """
    p = sim.process
    acc = p.accepts(in_spec).mean(axis=1)
    eco = p.economics
    return acc * eco.batch_value - (1 - acc) * eco.scrap_cost - p.lever_cost(plans), acc


@dataclass
class OracleSearch:
    """Sampling-based search for the best lever plan from a known true state.

    Coordinate sweeps first (every lever still ahead on a grid, one at a time,
    from the current best; then the per-lever winners combined), then a short
    cross-entropy polish around the best plan. Candidates are ranked by
    expected money plus a smooth surrogate (the share of bars inside each
    characteristic's band, capped at the acceptance level), so a fix of one
    characteristic counts even while another still fails; the plan returned is
    the best by expected money.

    Parameters
    ----------
    sim : Simulator
        The true simulator.
    n_rollouts : int
        Monte Carlo rollouts per plan (common random numbers across plans).
    grid : int
        Values per lever in a coordinate sweep.
    n_sweeps : int
        Coordinate sweeps.
    n_candidates : int
        Plans per cross-entropy iteration.
    n_iter : int
        Cross-entropy iterations after the sweeps.
    """

    sim: Simulator
    n_rollouts: int = 16
    grid: int = 9
    n_sweeps: int = 2
    n_candidates: int = 32
    n_iter: int = 2

    def search(self, state: np.ndarray, after_step: int, conditions: Conditions, seed: int,
               start: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
        """Best plan for one batch.

        Parameters
        ----------
        state : ndarray (bars_per_batch, n_chars)
            True state of the batch's bars after ``after_step``.
        after_step : int
        conditions : Conditions
            The batch's conditions (one batch).
        seed : int
        start : ndarray (n_levers,), optional
            Plan to start from (e.g. the previous plan); default nominal.

        Returns
        -------
        plan : ndarray (n_levers,)
            Within every lever's bounds; levers at or before ``after_step`` keep
            their ``start`` values.
        value : float
            Estimated expected money of the plan.
        p_accept : float
        """
        p = self.sim.process
        rng = np.random.default_rng(seed)
        base = p.nominal_plan() if start is None else np.asarray(start, float).copy()
        free = np.flatnonzero(p.free_levers(after_step))
        lo, hi = p.lever_bounds()
        ints = np.array([lv.integer for lv in p.levers])
        nom = p.nominal_plan()
        level = p.acceptance_level
        bonus = 0.5 * p.economics.batch_value

        def evaluate(plans):
            plans = np.atleast_2d(plans)
            plans = np.where(ints, np.round(plans), plans)
            plans = np.clip(plans, lo, hi)
            ins, per = self.sim.rollout(state, after_step, plans, self.n_rollouts, seed, conditions,
                                        per_characteristic=True)
            v, a = plan_value(self.sim, ins, plans)
            surrogate = v + bonus * np.minimum(per, level).mean(axis=(1, 2))
            return plans, surrogate, v, a

        plans, s, v, a = evaluate(base)
        best = [plans[0], s[0], v[0], a[0]]

        def consider(plans, s, v, a):
            i = int(np.argmax(s))
            if s[i] > best[1] + 1e-9:
                best[:] = [plans[i].copy(), s[i], v[i], a[i]]

        for _ in range(self.n_sweeps if len(free) else 0):
            cur = best[0]
            cands, owner = [], []
            for j in free:
                for g in np.linspace(lo[j], hi[j], self.grid):
                    c = cur.copy()
                    c[j] = g
                    cands.append(c)
                    owner.append(j)
            plans, s, v, a = evaluate(np.array(cands))
            owner = np.array(owner)
            combo = cur.copy()
            for j in free:  # each lever's own best move, if it helps
                m = owner == j
                i = np.flatnonzero(m)[np.argmax(s[m])]
                if s[i] > best[1] + 1e-9:
                    combo[j] = plans[i, j]
            consider(plans, s, v, a)
            consider(*evaluate(combo))
        if len(free):
            mu, sd = best[0][free].copy(), (hi[free] - lo[free]) * 0.1
            for _ in range(self.n_iter):
                z = np.tile(best[0], (self.n_candidates, 1))
                z[:, free] = mu + sd * rng.standard_normal((self.n_candidates, len(free)))
                plans, s, v, a = evaluate(z)
                consider(plans, s, v, a)
                elite = plans[np.argsort(-s)[: max(2, self.n_candidates // 6)]][:, free]
                mu, sd = elite.mean(axis=0), np.maximum(elite.std(axis=0), 1e-3 * (hi[free] - lo[free]))
        # Money decides from here: take the best-value plan seen so far, then reset
        # levers to nominal while that does not lose value (fewest interventions).
        plan, val, acc = best[0], best[2], best[3]
        for j in free[np.abs(plan[free] - nom[free]) > 1e-12]:
            trial = plan.copy()
            trial[j] = nom[j]
            _, _, v, a = evaluate(np.stack([plan, trial]))
            if v[1] >= v[0] - 1e-9:
                plan, val, acc = trial, v[1], a[1]
        return plan, float(val), float(acc)


class OracleAgent(Agent):
    """The upper bound: searches plans on the true simulator from the true state.

    Re-planning warm-starts from the current plan.

    Parameters
    ----------
    sim : Simulator
        The true simulator.
    **search : dict
        Options of :class:`OracleSearch` (budget).
    """

    name = "oracle"
    needs_truth = True

    def __init__(self, sim: Simulator, **search):
        self.search = OracleSearch(sim, **search)

    def _propose(self, situation: Situation, seed: int) -> Proposal:
        plan, value, p_acc = self.search.search(situation.true_state, situation.step,
                                                situation.true_conditions, seed, start=situation.plan)
        return Proposal(plan, p_acc, note=f"best of a sampling search on the true simulator "
                                          f"(expected value {value:.0f})")
