"""Baseline agents and the oracle behind one interface, in closed loop."""

import numpy as np
import pytest

from recovery.agents.base import Agent, LeverBoundError, Proposal
from recovery.agents.baselines import HeuristicAgent, NoneAgent
from recovery.agents.oracle import OracleAgent
from recovery.evaluate import closed_loop, evaluate_agents, flagged_cases, situation_for
from simulators.process import Simulator


@pytest.fixture(scope="module")
def world():
    sim = Simulator("small")
    cases, n_faulty = flagged_cases(sim, 200, seed=3)
    return sim, cases


def test_cases_are_flagged_at_the_first_inspection_after_their_fault(world):
    sim, cases = world
    assert cases
    insp = sim.process.inspection_steps
    for c in cases:
        first_after = min(s for s in insp if s >= c.fault_step)
        assert c.detect_step == first_after


class Reckless(Agent):
    name = "reckless"

    def _propose(self, situation, seed):
        plan = situation.plan.copy()
        plan[-1] = 1e6
        return Proposal(plan)


class Rewrite(Agent):
    name = "rewrite"

    def _propose(self, situation, seed):
        return Proposal(situation.process.nominal_plan() + 1.0)


def test_interface_refuses_out_of_bounds_and_past_levers(world):
    sim, cases = world
    c = cases[0]
    sit = situation_for(sim, c, c.detect_step, c.obs, sim.process.nominal_plan(), c.state, truth=False)
    with pytest.raises(LeverBoundError, match="outside their limits"):
        Reckless().propose(sit, 0)
    late = situation_for(sim, c, 12, c.obs, sim.process.nominal_plan(), c.state, truth=False)
    with pytest.raises(LeverBoundError, match="already done"):
        Rewrite().propose(late, 0)
    # a violation in closed loop is counted, and the batch goes on as planned
    out = closed_loop(sim, c, Reckless(), seed=1)
    assert out.violations >= 1 and sim.process.within_bounds(out.plan)


def test_oracle_needs_the_truth(world):
    sim, cases = world
    c = cases[0]
    sit = situation_for(sim, c, c.detect_step, c.obs, sim.process.nominal_plan(), c.state, truth=False)
    with pytest.raises(ValueError, match="needs the true state"):
        OracleAgent(sim).propose(sit, 0)


def test_heuristic_compensates_a_worn_die_with_grinding(world):
    sim, cases = world
    p = sim.process
    h = HeuristicAgent(p)
    case = next(c for c in cases if c.fault == "worn_drawing_die")
    sit = situation_for(sim, case, case.detect_step, case.obs, p.nominal_plan(), case.state, truth=False)
    prop = h.propose(sit, 0)
    mag = case.conditions.fault[0, case.fault_step - 1]  # mm of oversize (ground truth)
    allowance = prop.plan[p.lever_index["grinding_allowance"]]
    # about 1000 um of extra grinding per mm of measured oversize
    assert allowance == pytest.approx(1000 * mag, abs=15.0)


def test_evaluation_contract_and_determinism(world):
    sim, _ = world
    agents = [NoneAgent(), HeuristicAgent(sim.process), OracleAgent(sim, n_rollouts=6, grid=5, n_sweeps=1,
                                                                    n_candidates=8, n_iter=1)]
    a = evaluate_agents(sim, agents, 60, seed=11)
    b = evaluate_agents(sim, agents, 60, seed=11)

    def untimed(r):
        return {k: {kk: vv for kk, vv in v.items() if not kk.startswith("latency")} for k, v in r["agents"].items()}

    assert untimed(a) == untimed(b)  # same seed, same figures (wall-clock latencies aside)
    assert set(a) == {"n_batches", "n_flagged", "seed", "agents"}
    assert a["n_flagged"] > 0
    for name, r in a["agents"].items():
        assert set(r) == {"recovery_rate", "net_value", "scrap_avoided", "regret", "lever_bound_violations",
                          "latency_p50_s", "latency_p95_s", "by_fault", "calibration"}
        assert r["lever_bound_violations"] == 0
        n = sum(f["n"] for f in r["by_fault"].values())
        assert n == a["n_flagged"]
    r = a["agents"]
    # the heuristic gives no probability; the oracle does, and its calibration adds up
    assert r["heuristic"]["calibration"] is None
    cal = r["oracle"]["calibration"]
    assert cal["n"] == a["n_flagged"] == sum(b["n"] for b in cal["bins"])
    assert cal["observed"] == pytest.approx(r["oracle"]["recovery_rate"])
    assert 0.0 <= cal["brier"] <= 1.0
    assert r["none"]["recovery_rate"] <= 0.25
    assert r["oracle"]["recovery_rate"] >= r["none"]["recovery_rate"]
    assert r["oracle"]["regret"] == 0.0


def test_none_outcome_matches_the_plain_continuation(world):
    sim, cases = world
    from recovery.evaluate import continue_case
    for c in cases[:5]:
        o = closed_loop(sim, c, NoneAgent(), seed=0)
        st, _ = continue_case(sim, c, sim.process.nominal_plan())
        assert o.accepted == bool(sim.accepted(st)[0]) and o.lever_cost == 0.0


def test_batch_ids_are_unique_across_evaluation_chunks():
    from recovery.evaluate import EVAL_CHUNK, evaluate_chunk

    sim = Simulator("small")
    ids = []
    for c in range(2):
        outs = evaluate_chunk(sim, [NoneAgent()], 2 * EVAL_CHUNK, 4, c)["none"]
        ids += [o.batch_id for o in outs]
    assert len(ids) == len(set(ids)) > 0


def _random_readings(p, rng):
    """Gauge readings as the rule may see them: some inspections done, some bars and
    characteristics missing, means far enough off to move levers."""
    a = p.arrays
    r = np.full((len(p.inspections), int(a.insp_sample.max()), p.n_chars), np.nan)
    lo, hi = p.final_bands()
    nom = np.array([ch.nominal for ch in p.characteristics])
    for q in range(len(p.inspections)):
        if rng.random() < 0.3:
            continue
        n = int(rng.integers(1, r.shape[1] + 1))
        shift = rng.normal(0.0, 0.5, p.n_chars) * (hi - lo)
        r[q, :n] = nom + shift + rng.normal(0.0, 0.1, (n, p.n_chars)) * (hi - lo)
        r[q, :n][rng.random((n, p.n_chars)) < 0.2] = np.nan
    return r


@pytest.mark.parametrize("name", ["small", None])
def test_engineer_rule_on_arrays_equals_the_naive_rule(name):
    """The precomputed, vectorised rule gives the plans of the first, loop-by-loop one,
    to the last bit, on many random situations (steps, readings, plans so far)."""
    from recovery.agents.baselines import EngineerRule, latest_means
    from simulators.definition import load_process
    from tests.recovery.agents import naive

    p = load_process(name)
    rule = EngineerRule(p)
    rng = np.random.default_rng(5)
    lo, hi = p.lever_bounds()
    moved = 0
    for _ in range(300):
        r = _random_readings(p, rng)
        step = int(rng.integers(0, p.n_steps + 1))
        plan = np.where(rng.random(len(lo)) < 0.5, p.nominal_plan(), rng.uniform(lo, hi))
        assert latest_means(p, r, step) == naive.latest_means(p, r, step)
        got = rule(r, step, plan)
        want = naive.engineer_plan(p, rule.expected_, rule.sens_, rule.threshold, r, step, plan)
        np.testing.assert_array_equal(got, want)
        moved += int(np.any(got != plan))
    assert moved > 50


def test_situation_readings_are_what_the_history_shows(world):
    """The array the evaluation hands to agents equals the readings of the step table
    it shows them, read the fast way and the naive way, at every inspection."""
    from recovery.agents.base import readings_from_history
    from tests.recovery.agents import naive

    sim, cases = world
    p = sim.process
    n = 0
    for c in cases[:10]:
        for step in [s for s in p.inspection_steps if s >= c.detect_step - 3]:
            sit = situation_for(sim, c, step, c.obs, p.nominal_plan(), c.state, truth=False)
            want = naive.readings_from_history(p, sit.history)
            np.testing.assert_array_equal(readings_from_history(p, sit.history), want)
            np.testing.assert_array_equal(sit.gauge_readings(), want)
            n += int(np.isfinite(want).any())
    assert n > 10


def test_readings_keep_only_gauged_bars_of_known_inspections():
    """Rows that are no measurement, lack a bar, name another step or characteristic, or a
    bar beyond the largest sample are left out; of two rows for one reading the last wins."""
    import pandas as pd

    from recovery.agents.base import readings_from_history
    from simulators.definition import load_process

    p = load_process("small")
    q, s = 1, p.inspection_steps[1]
    other = next(k for k in range(1, p.n_steps + 1) if k not in p.inspection_steps)
    c = p.characteristics[0].name
    big = int(p.arrays.insp_sample.max())
    h = pd.DataFrame({
        "kind": pd.array(["measurement", "measurement", None, "lever", "measurement", "measurement",
                          "measurement", "measurement"], dtype="string"),
        "step": pd.array([s, s, s, s, other, s, s, None], dtype="Int64"),
        "variable": [c, c, c, c, c, "no_such_char", c, c],
        "bar_id": pd.array([0, 0, 1, None, 2, 3, big, 4], dtype="Int64"),
        "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    })
    r = readings_from_history(p, h)
    assert r.shape == (len(p.inspections), big, p.n_chars)
    assert np.argwhere(np.isfinite(r)).tolist() == [[q, 0, 0]]
    assert r[q, 0, 0] == 2.0
