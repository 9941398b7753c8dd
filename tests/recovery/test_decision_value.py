"""recovery.evaluate.decision_value: a first decision scored on the true batch over many futures."""

from dataclasses import replace

import numpy as np
import pytest

from recovery.agents.base import Agent, Proposal
from recovery.agents.baselines import HeuristicAgent
from recovery.evaluate import closed_loop, decision_value, flagged_cases, situation_for
from simulators.process import Simulator


@pytest.fixture(scope="module")
def world():
    sim = Simulator("small")
    cases, _ = flagged_cases(sim, 200, seed=3)
    return sim, cases


class Hold(Agent):
    """Holds one plan from the first decision on (no re-planning)."""

    name = "hold"

    def __init__(self, plan):
        self.plan = np.asarray(plan, dtype=np.float64)

    def _propose(self, situation, seed):
        return Proposal(np.where(situation.free, self.plan, situation.plan), None)


def test_it_is_the_closed_loops_mean_over_futures_of_the_same_case(world):
    """A plan held to the end: the mean net value of the closed loop over many
    continuation seeds of one case is the decision's value, within Monte-Carlo error."""
    sim, cases = world
    p, eco = sim.process, sim.process.economics
    # the heuristic's first plan on a case whose outcome under it is uncertain, so that
    # the check is not 0 = 0 or 1 = 1
    picks = []
    for c in cases[:20]:
        sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
        plan = HeuristicAgent(p).propose(sit, 0).plan
        v = decision_value(sim, c, [(plan, False)], replays=400, seed=1)[0]
        pa = (v + float(p.lever_cost(plan)) + eco.scrap_cost) / (eco.batch_value + eco.scrap_cost)
        picks.append((abs(pa - 0.5), c, plan, v, pa))
    _, case, plan, v, pa = min(picks, key=lambda t: t[0])
    assert 0.05 < pa < 0.95, "no case with an uncertain outcome in the fixture"
    nets = np.array([closed_loop(sim, replace(case, seed=1000 + k), Hold(plan), seed=0).net_value
                     for k in range(300)])
    se = np.sqrt(nets.var(ddof=1) / len(nets) + ((eco.batch_value + eco.scrap_cost) ** 2) * pa * (1 - pa) / 400)
    assert abs(nets.mean() - v) < 4 * se
    # and the futures matter: a single closed loop is one of two outcomes far apart
    assert nets.std() > 0.3 * (eco.batch_value + eco.scrap_cost)


def test_scrap_saves_the_processing_to_come_and_common_futures_pair_the_plans(world):
    sim, cases = world
    p, eco = sim.process, sim.process.economics
    c = cases[0]
    nominal = p.nominal_plan()
    v = decision_value(sim, c, [(nominal, True), (nominal, False), (nominal, False)], replays=200, seed=5)
    assert v[0] == -eco.scrap_cost + eco.processing_cost_per_step * (p.n_steps - c.detect_step)
    assert v[1] == v[2]                                   # same plan, same futures
    assert np.all(v[1:] <= eco.batch_value) and np.all(v[1:] >= -eco.scrap_cost)
    # a plan's lever cost is paid in full
    moved = nominal.copy()
    j = int(np.flatnonzero(p.free_levers(c.detect_step))[0])
    lv = p.levers[j]
    moved[j] = lv.low if abs(lv.low - nominal[j]) > 1e-9 else lv.high
    w = decision_value(sim, c, [(moved, False)], replays=200, seed=5)[0]
    pa = (w + float(p.lever_cost(moved)) + eco.scrap_cost) / (eco.batch_value + eco.scrap_cost)
    assert 0.0 <= pa <= 1.0 and abs(pa * 200 - round(pa * 200)) < 1e-6
