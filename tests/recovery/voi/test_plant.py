"""The plant-level value of information: seasons under several inspection plans, and known answers."""

from importlib import resources

import numpy as np
import pytest

from recovery.voi.candidates import Candidate
from recovery.voi.plant import (HeuristicPolicy, NonePolicy, World, changed_process, gain_interval, healthy_gates,
                                inspection_cost, payback_batches, play_season, rank_candidates,
                                world_from_file, world_from_model)
from simulators.definition import load_process


@pytest.fixture(scope="module")
def small():
    return load_process("small"), resources.files("simulators.processes").joinpath("small.toml").read_text("utf-8")


@pytest.fixture(scope="module")
def heuristic(small):
    return HeuristicPolicy(small[0])


def test_same_plan_twice_gives_identical_batches(small, heuristic):
    p, _ = small
    res = play_season(world_from_file(p), [p, p], heuristic, 60, 3)
    assert np.array_equal(res.net[0], res.net[1])
    assert res.taken[0].any(), "some batches must be flagged, or nothing is tested"
    # and another seed gives other batches
    other = play_season(world_from_file(p), [p], heuristic, 60, 4)
    assert not np.array_equal(other.net[0], res.net[0])


def test_heuristic_beats_doing_nothing_on_flagged_batches(small, heuristic):
    p, _ = small
    w = world_from_file(p)
    h = play_season(w, [p], heuristic, 150, 5)
    n = play_season(w, [p], NonePolicy(), 150, 5)
    assert np.array_equal(h.taken, n.taken)  # same batches, same flags: only the decisions differ
    never = h.taken[0] == 0
    assert np.array_equal(h.net[0][never], n.net[0][never])
    assert h.net[0].mean() > n.net[0].mean()


def test_a_reading_no_decision_can_use_is_worth_nothing(small, heuristic):
    """Coating thickness before plating is zero on every bar: gauging it at step 3 can neither
    flag a batch nor move the heuristic's levers, so the season is unchanged batch for batch."""
    p, text = small
    c = Candidate("add_characteristic", 3, ("coating_thickness",), 4)
    out = rank_candidates(text, p, [c], world_from_file(p), heuristic, n_batches=80, seed=1)
    r = out["candidates"][0]
    assert r["gain_per_1000"] == 0.0 and r["low"] == -r["high"] <= 0.0
    assert r["cost_per_1000"] == pytest.approx(1000 * p.economics.measurement_cost * 4)
    assert r["net_per_1000"] == -r["cost_per_1000"] and r["payback_batches"] is None
    assert r["alters_decisions"] is False and r["decided_otherwise_per_1000"] == 0.0
    assert r["no_decision_basis"] in ("structural", "season") and r["no_decision_reason"]


def test_why_a_change_alters_no_decision(small, heuristic):
    """Season: the rule could act (on the reading, or on a batch its new gate flags early) but did on no
    batch, and zero seen is not zero proven (rule-of-three interval). A change that moves some
    decision is not given a reason."""
    p, text = small
    cs = [Candidate("add_characteristic", 3, ("residual_stress",), 4),   # not read before 6 gauges it, but gated
          Candidate("add_characteristic", 3, ("coating_thickness",), 4),  # zero before plating
          Candidate("raise_sample", 6, (), 12)]
    out = rank_candidates(text, p, cs, world_from_file(p), heuristic, n_batches=120, seed=1)
    rows = {r["index"]: r for r in out["candidates"]}
    assert rows[0]["no_decision_basis"] == "season"
    assert "no free lever after step 3 moves residual_stress before step 6" in rows[0]["no_decision_reason"]
    assert "flagged earlier than today's plan" in rows[0]["no_decision_reason"]
    assert rows[1]["no_decision_basis"] == "season" and not rows[1]["alters_decisions"]
    assert rows[1]["gain_per_1000"] == 0.0 and rows[1]["low"] == -rows[1]["high"] < 0
    assert rows[2]["alters_decisions"] and rows[2]["no_decision_reason"] is None
    assert rows[2]["decided_otherwise_per_1000"] > 0
    assert "heuristic agent's rule" in out["policy_description"]


def test_a_station_before_the_last_inspection_alters_nothing_structurally():
    """At step 49 no lever is left: neither the readings nor a flag can move anything, in any season."""
    p = load_process("default")
    text = resources.files("simulators.processes").joinpath("default.toml").read_text("utf-8")
    c = Candidate("add_inspection", 49, ("diameter", "roughness"), 5)
    r = rank_candidates(text, p, [c], world_from_file(p), HeuristicPolicy(p), n_batches=20, seed=2)["candidates"][0]
    assert r["no_decision_basis"] == "structural" and "no flag it raises leaves a lever" in r["no_decision_reason"]
    assert (r["gain_per_1000"], r["low"], r["high"]) == (0.0, 0.0, 0.0)


def test_decisions_changed_compares_plans_and_scrapping(small, heuristic):
    p, text = small
    _, q = changed_process(text, p, Candidate("raise_sample", 6, (), 12))
    res = play_season(world_from_file(p), [p, q, p], heuristic, 120, 1)
    from recovery.voi.plant import decisions_changed

    assert not decisions_changed(res, 2).any()  # the same plan twice
    ch = decisions_changed(res, 1)
    # where no decision moved, the batch's outcome is the same (common random numbers)
    assert np.array_equal(res.net[1][~ch], res.net[0][~ch])
    assert ch.any()


def test_readings_are_worthless_to_a_policy_that_never_acts(small):
    p, text = small
    cs = [Candidate("raise_sample", 6, (), 12), Candidate("add_characteristic", 6, ("ovality",), 4)]
    out = rank_candidates(text, p, cs, world_from_file(p), NonePolicy(), n_batches=80, seed=2)
    for r in out["candidates"]:
        assert r["gain_per_1000"] == 0.0 and r["recovered_per_1000"] == 0.0


def test_raising_the_sample_where_the_gate_is_near_certain_changes_nothing(small, heuristic):
    """At the first inspection the gates sit far outside a healthy batch's spread and a worn die
    moves the mean far outside them: a larger sample flags the same batches, and the heuristic
    reads a mean that moves less than its threshold, so nothing changes."""
    p, text = small
    c = Candidate("raise_sample", 3, (), 8)
    _, q = changed_process(text, p, c)
    res = play_season(world_from_file(p), [p, q], heuristic, 120, 6)
    assert np.array_equal(res.taken[0] == 3, res.taken[1] == 3)
    assert abs(res.net[1].mean() - res.net[0].mean()) < 0.05 * p.economics.batch_value


def test_inspection_cost_from_the_economics(small):
    p, text = small
    e = p.economics
    want = sum(e.station_cost + e.measurement_cost * i.sample * len(i.measures) for i in p.inspections)
    assert inspection_cost(p) == pytest.approx(want)
    _, q = changed_process(text, p, Candidate("raise_sample", 6, (), 10))
    assert inspection_cost(q) - inspection_cost(p) == pytest.approx(e.measurement_cost * 6 * 3)


def test_healthy_gates_hold_healthy_batches(small):
    p, _ = small
    g = healthy_gates(p, 6, ["yield_strength", "residual_stress"], 4, n_batches=300, seed=0)
    lo, hi = g["yield_strength"]
    # the file's own gate at step 6 is set for the same purpose: same neighbourhood
    flo, fhi = p.gate_bands(6)
    c = p.char_index["yield_strength"]
    assert lo < hi and flo[c] - 100 < lo < fhi[c] and flo[c] < hi < fhi[c] + 100


def test_gain_interval_known_answers():
    d = np.zeros(1000)
    assert gain_interval(d, np.zeros(1000, int)) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(0)
    d = rng.normal(2.0, 10.0, 4000)
    g, lo, hi = gain_interval(d, np.zeros(4000, int), season=1000)
    assert g == pytest.approx(2000, abs=400)
    # a season of 1,000 batches: sd of the mean 10/sqrt(1000), plus the estimate's own error
    half = 1000 * 1.8808 * np.sqrt(100 / 1000 + 100 / 4000)
    assert hi - g == pytest.approx(half, rel=0.05) and g - lo == pytest.approx(half, rel=0.05)
    # a longer season narrows it
    g2, lo2, hi2 = gain_interval(d, np.zeros(4000, int), season=100000)
    assert hi2 - lo2 < 0.5 * (hi - lo)


def test_unseen_change_interval():
    from recovery.voi.plant import unseen_change_interval

    lo, hi = unseen_change_interval(1000, 4000.0)
    # below 2.81 changed batches in 1,000 (94%), each worth at most 4,000
    assert hi == pytest.approx(1000 * 2.813 / 1000 * 4000, rel=1e-3) and lo == -hi
    assert unseen_change_interval(4000, 4000.0)[1] == pytest.approx(hi / 4)
    assert unseen_change_interval(1000, 0.0) == (0.0, 0.0)


def test_payback():
    assert payback_batches(5000, 1000, 8000) == pytest.approx(2000)
    assert payback_batches(5000, 1000, 0) == 0
    assert payback_batches(1000, 1000, 0) is None


def test_world_from_model_uses_the_models_fault_rates(small_model):
    model, _ = small_model
    p = model.graph_.process
    w = world_from_model(p, model=model, n_sets=5, seed=0)
    assert w.fault_rates.shape == (5, len(p.faults)) and w.params.shape[0] == 5
    assert (w.fault_rates >= 0).all() and (w.fault_rates <= 0.5).all()
    assert "causal model" in w.source
    file_rates = np.array([f.rate for f in p.faults])
    assert not np.allclose(w.fault_rates, file_rates[None])  # learnt, not copied


def test_the_fast_heuristic_is_the_heuristic_agent(small, heuristic):
    """HeuristicPolicy reads the arrays the agent rebuilds from the step-data table: same decisions."""
    from recovery.agents.baselines import HeuristicAgent
    from recovery.voi.plant import AgentPolicy

    p, text = small
    _, q = changed_process(text, p, Candidate("add_characteristic", 6, ("ovality",), 4))
    w = world_from_file(p)
    fast = play_season(w, [p, q], heuristic, 40, 8)
    slow = play_season(w, [p, q], AgentPolicy(HeuristicAgent(p)), 40, 8)
    assert fast.taken.any()
    assert np.array_equal(fast.net, slow.net) and np.array_equal(fast.accepted, slow.accepted)


def test_an_agent_is_asked_once_per_situation(small):
    """Plans of a season share the decisions made before their readings differ: the same plan played
    twice asks the agent no more than once, with the same outcome."""
    from recovery.agents.baselines import HeuristicAgent
    from recovery.voi.plant import AgentPolicy

    p, _ = small
    w = world_from_file(p)
    once = AgentPolicy(HeuristicAgent(p))
    a = play_season(w, [p], once, 40, 8)
    twice = AgentPolicy(HeuristicAgent(p))
    b = play_season(w, [p, p], twice, 40, 8)
    assert once.asked > 0 and twice.asked == once.asked
    assert np.array_equal(b.net[0], a.net[0]) and np.array_equal(b.net[1], a.net[0])


def test_healthy_gates_are_one_sided_where_less_is_better():
    p = load_process("default")
    g = healthy_gates(p, 23, ["ovality", "diameter"], 5, n_batches=200, seed=0)
    # ovality's gates in the file all start at 0: a rounder bar is never flagged
    assert g["ovality"][0] == p.characteristics[p.char_index["ovality"]].lower == 0.0
    assert g["diameter"][0] > 15.0 and g["diameter"][0] < g["diameter"][1]


def test_a_new_station_is_played_with_the_rule_on_its_own_inspection_steps():
    """A new station adds a row of readings: the rule must read the changed file's inspection steps
    (it once kept the original file's and failed on the first flagged batch), and decide exactly as
    the heuristic agent does from the changed file's step-data table."""
    from recovery.agents.baselines import EngineerRule, HeuristicAgent
    from recovery.voi.plant import AgentPolicy

    p = load_process("default")
    text = resources.files("simulators.processes").joinpath("default.toml").read_text("utf-8")
    c = Candidate("add_inspection", 23, ("diameter", "straightness", "roughness"), 5)
    _, q = changed_process(text, p, c, gate_seed=0)
    w = world_from_file(p)
    fast = play_season(w, [p, q], HeuristicPolicy(p), 24, 11)
    agent = HeuristicAgent(q)
    # the same rule on both files (its healthy trajectory is a Monte Carlo estimate whose noise
    # would otherwise differ between the files and show up as a gain); the agent reads the table
    agent.rule = EngineerRule(p).for_inspections(q)
    slow = play_season(w, [q], AgentPolicy(agent), 24, 11)
    assert (fast.taken[1] > 0).any(), "some batch must be flagged, or the rule is never asked"
    assert np.array_equal(fast.net[1], slow.net[0]) and np.array_equal(fast.taken[1], slow.taken[0])


def test_the_rule_refuses_a_file_with_other_levers(small):
    from recovery.agents.baselines import EngineerRule

    with pytest.raises(ValueError, match="more than its inspections"):
        EngineerRule(small[0]).for_inspections(load_process("default"))


def test_a_new_gate_holds_the_healthy_batches_of_every_world_draw():
    """Where the physics before a new reading is unsure (the stress the straightener at step 4 adds),
    the gate is set wide enough for healthy batches of every draw, not only of the file's physics."""
    from simulators.process import Simulator

    p = load_process("default")
    sim = Simulator(p)
    params = sim.physics([(4, "stress_per_kN")], np.array([[0.9], [2.6]]))
    w = World(p, params, np.zeros((2, len(p.faults))), "two draws")
    lo_f, hi_f = healthy_gates(p, 5, ["residual_stress"], 5, n_batches=200, seed=0)["residual_stress"]
    lo_w, hi_w = healthy_gates(p, 5, ["residual_stress"], 5, n_batches=200, seed=0, world=w)["residual_stress"]
    assert lo_w < lo_f and hi_w > hi_f
    # a healthy batch of the high draw leaves the file's gate but not the world's
    high = healthy_gates(p, 5, ["residual_stress"], 5, n_batches=200, seed=1,
                         world=World(p, params[1:], np.zeros((1, len(p.faults))), "high"))["residual_stress"]
    mid_high = 0.5 * (high[0] + high[1])
    assert mid_high > hi_f and lo_w < mid_high < hi_w
