"""recovery measure and the planner+measure agent, with the small fitted model (tiny budgets)."""

import json

import numpy as np
import pandas as pd
import pytest

import recovery.voi  # noqa: F401  (registers planner+measure)
from recovery.cli import main
from recovery.voi.batch import TINY, Candidate, MeasureAnalysis, MeasureError, candidate_steps, measure
from simulators.process import Simulator
from simulators.schema import observations_frame

pytestmark = pytest.mark.filterwarnings("ignore")

KEYS = {"step", "characteristic", "sample", "evsi", "low", "high", "cost", "changes_decision"}


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


def _worn_die_history(seed=3):
    """A batch with a worn die, up to the inspection that flags it (step 3)."""
    sim = Simulator("small")
    cond = sim.sample_conditions(1, seed, faults=False, force_fault="worn_drawing_die")
    res = sim.simulate(1, seed, conditions=cond)
    assert res.flags[0, 0]
    return observations_frame(sim.process, cond, res.obs, res.plan, upto_step=3)


@pytest.fixture(scope="module")
def analysis(model):
    m, _ = model
    return measure(_worn_die_history(), m, seed=1, config=TINY)


def test_candidates_cover_the_steps_before_the_next_decision_and_are_ranked(model, analysis):
    m, _ = model
    p = m.graph_.process
    a = analysis
    assert a.batch_id == "B-1" and a.step == 3
    assert a.decision_now in {"continue", "intervene", "scrap"}
    # the next inspection is at step 6, the first lever at step 7
    assert candidate_steps(p, 3) == [3, 4, 5]
    assert {c.step for c in a.candidates} <= {3, 4, 5}
    assert {c.sample for c in a.candidates} == {4, 8, 20}       # the inspection's 4, twice, every bar
    nets = [c.evsi - c.cost for c in a.candidates]
    assert nets == sorted(nets, reverse=True)
    for c in a.candidates:
        assert c.cost == pytest.approx(p.economics.measurement_cost * c.sample)
        assert c.low <= c.evsi <= c.high
        # a reading that never changes the decision is worth exactly nothing
        if c.p_change == 0.0:
            assert c.evsi == 0.0 and c.changes_decision is None
        else:
            assert c.changes_decision.startswith("if ") and " instead of " in c.changes_decision


def test_the_analysis_is_deterministic_for_a_seed(model, analysis):
    m, _ = model
    again = measure(_worn_die_history(), m, seed=1, config=TINY)
    assert again.to_dict() == analysis.to_dict()


def test_json_contract(analysis):
    d = json.loads(json.dumps(analysis.to_dict()))
    assert {"batch_id", "step", "decision_now", "value_now", "candidates"} <= set(d)
    assert d["currency"] == "EUR"
    assert d["candidates"] and all(KEYS <= set(c) for c in d["candidates"])
    assert isinstance(d["value_now"], float)


def test_bad_batches_are_refused(model):
    m, _ = model
    sim = Simulator("small")
    healthy = sim.simulate(1, 4, faults=False)
    ok = observations_frame(sim.process, healthy.conditions, healthy.obs, healthy.plan, upto_step=6)
    assert not healthy.flags[0, :2].any()
    with pytest.raises(MeasureError, match="no diagnosis"):
        measure(ok, m, config=TINY)
    hist = _worn_die_history()
    with pytest.raises(MeasureError, match="holds 2 batches"):
        measure(pd.concat([hist, hist.assign(batch_id="B-99")], ignore_index=True), m, config=TINY)
    with pytest.raises(MeasureError, match="finished the process"):
        measure(sim.simulate(1, 4).observations, m, config=TINY)


def test_cli_json_and_errors(model, tmp_path, capsys):
    _, d = model
    f = tmp_path / "h.parquet"
    _worn_die_history().to_parquet(f)
    assert main(["measure", "--model", str(d), "--history", str(f), "--json", "--seed", "2",
                 "--budget", "tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_id"] == "B-1" and out["step"] == 3
    assert all(KEYS <= set(c) for c in out["candidates"])
    assert main(["measure", "--model", str(d), "--history", str(f), "--budget", "tiny"]) == 0
    assert "after step 3" in capsys.readouterr().out
    # not flagged: nothing to decide
    sim = Simulator("small")
    healthy = sim.simulate(1, 4, faults=False)
    g = tmp_path / "ok.parquet"
    observations_frame(sim.process, healthy.conditions, healthy.obs, healthy.plan, upto_step=6).to_parquet(g)
    assert main(["measure", "--model", str(d), "--history", str(g)]) == 2
    err = capsys.readouterr().err
    assert "no diagnosis" in err and "Traceback" not in err
    # a history of another process than the model's
    other = Simulator().simulate(1, 1).observations
    o = tmp_path / "other.parquet"
    other[other.step <= 15].to_parquet(o)
    assert main(["measure", "--model", str(d), "--history", str(o)]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model's process" in err and "Traceback" not in err


def test_planner_measure_pays_for_its_measurement_in_closed_loop(model, monkeypatch):
    """Forced to measure (the analysis is replaced by one whose best candidate pays), the
    agent gauges the true batch, plans, and the outcome's net value carries the cost."""
    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop
    from simulators.cases import flagged_cases

    m, _ = model
    sim = Simulator("small")
    cases, _ = flagged_cases(sim, 120, 9)
    case = cases[0]
    import recovery.voi.agent as agent_mod

    real = agent_mod.measure_situation

    def rigged(sit, model, **kw):
        a = real(sit, model, **kw)
        best = Candidate(sit.step, "diameter", 8, 1e6, 1e6, 1e6, 16.0, "rigged")
        return MeasureAnalysis(a.batch_id, a.step, a.decision_now, a.value_now, [best], a.options,
                               a.currency, a.n_states, a.interval, prepared=a.prepared,
                               confirmed=best)

    monkeypatch.setattr(agent_mod, "measure_situation", rigged)
    agent = make_agent("planner+measure", sim, model=m, budget="tiny")
    assert agent.name == "planner+measure"
    out = closed_loop(sim, case, agent, seed=11)
    eco = sim.process.economics
    gross = (eco.batch_value if out.accepted else -eco.scrap_cost) if not out.scrapped else \
        -eco.scrap_cost + eco.processing_cost_per_step * (sim.process.n_steps - case.detect_step)
    assert out.net_value == pytest.approx(gross - out.lever_cost - 16.0)


def test_planner_measure_is_the_planner_when_nothing_pays(model, monkeypatch):
    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop
    from simulators.cases import flagged_cases

    m, _ = model
    sim = Simulator("small")
    case = flagged_cases(sim, 120, 9)[0][0]
    import recovery.voi.agent as agent_mod

    real = agent_mod.measure_situation

    def nothing_pays(sit, model, **kw):
        a = real(sit, model, **kw)
        worst = Candidate(sit.step, "diameter", 4, 0.0, 0.0, 0.0, 8.0, None)
        return MeasureAnalysis(a.batch_id, a.step, a.decision_now, a.value_now, [worst], a.options,
                               a.currency, a.n_states, a.interval, prepared=a.prepared,
                               confirmed=worst)

    monkeypatch.setattr(agent_mod, "measure_situation", nothing_pays)
    a = closed_loop(sim, case, make_agent("planner", sim, model=m, budget="tiny"), seed=11)
    b = closed_loop(sim, case, make_agent("planner+measure", sim, model=m, budget="tiny"), seed=11)
    assert b.net_value == a.net_value and np.array_equal(a.plan, b.plan)


def test_candidates_off_the_process_are_refused_naming_the_entry(model):
    from dataclasses import replace

    from recovery.recommend import batch_situation
    from recovery.voi.batch import measure_situation

    m, _ = model
    sit = batch_situation(_worn_die_history(), m.graph_.process)
    with pytest.raises(MeasureError, match="step 12: candidates lie between the batch's step 3"):
        measure_situation(sit, m, config=TINY, steps=[3, 12])
    with pytest.raises(MeasureError, match="sample 21: must be between 1 and the 20 bars"):
        measure_situation(sit, m, config=replace(TINY, samples=(4, 21)))


def test_planner_measure_takes_the_option_the_reading_points_to(model, monkeypatch):
    """Rigged so that every reading points to scrap: the agent scraps at once, pays the
    measurement, and the closed loop books the scrap with the processing saved."""
    from dataclasses import replace

    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop
    from simulators.cases import flagged_cases

    m, _ = model
    sim = Simulator("small")
    case = flagged_cases(sim, 120, 9)[0][0]
    import recovery.voi.agent as agent_mod

    real = agent_mod.measure_situation

    def points_to_scrap(sit, model, **kw):
        a = real(sit, model, **kw)
        prep = a.prepared
        values = prep.values.copy()
        values[list(prep.kinds).index("scrap")] = 1e6       # scrap wins on any reweighting
        best = Candidate(sit.step, "diameter", 8, 1e6, 1e6, 1e6, 16.0, "rigged")
        return MeasureAnalysis(a.batch_id, a.step, a.decision_now, a.value_now, [best], a.options,
                               a.currency, a.n_states, a.interval, prepared=replace(prep, values=values, now=0),
                               confirmed=best)

    monkeypatch.setattr(agent_mod, "measure_situation", points_to_scrap)
    agent = make_agent("planner+measure", sim, model=m, budget="tiny")
    out = closed_loop(sim, case, agent, seed=11)
    eco, p = sim.process.economics, sim.process
    assert out.scrapped and not out.accepted
    assert agent.last_voi["measured"] and agent.last_voi["changed"] and agent.last_voi["decision"] == "scrap"
    assert out.net_value == pytest.approx(-eco.scrap_cost + eco.processing_cost_per_step
                                          * (p.n_steps - case.detect_step) - out.lever_cost - 16.0)


def test_planner_measure_decides_on_the_confirmed_value_not_the_one_that_chose_the_candidate(model, monkeypatch):
    """The best revalued candidate pays on the sample that ranked it, but its value on an
    independent sample does not: the agent does not measure (the optimiser's curse)."""
    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop
    from simulators.cases import flagged_cases

    m, _ = model
    sim = Simulator("small")
    case = flagged_cases(sim, 120, 9)[0][0]
    import recovery.voi.agent as agent_mod

    real = agent_mod.measure_situation
    seen = {}

    def lucky(sit, model, **kw):
        seen["confirm"] = kw["config"].confirm
        a = real(sit, model, **kw)
        ranked = Candidate(sit.step, "diameter", 8, 1e6, 1e6, 1e6, 16.0, "lucky")
        again = Candidate(sit.step, "diameter", 8, 5.0, -20.0, 30.0, 16.0, "lucky")
        return MeasureAnalysis(a.batch_id, a.step, a.decision_now, a.value_now, [ranked], a.options,
                               a.currency, a.n_states, a.interval, prepared=a.prepared, confirmed=again)

    monkeypatch.setattr(agent_mod, "measure_situation", lucky)
    agent = make_agent("planner+measure", sim, model=m, budget="tiny")
    b = closed_loop(sim, case, agent, seed=11)
    a = closed_loop(sim, case, make_agent("planner", sim, model=m, budget="tiny"), seed=11)
    assert seen["confirm"] is True
    assert agent.last_voi["measured"] is False and agent.last_voi["best"]["evsi"] == 5.0
    assert b.net_value == a.net_value


def test_the_confirmed_value_is_the_best_candidate_on_an_independent_sample(model):
    from dataclasses import replace

    from recovery.recommend import batch_situation
    from recovery.voi.batch import measure_situation

    m, _ = model
    sit = batch_situation(_worn_die_history(), m.graph_.process)
    cfg = replace(TINY, samples=(20,))
    plain = measure_situation(sit, m, seed=1, config=cfg, steps=[3])
    a = measure_situation(sit, m, seed=1, config=replace(cfg, confirm=True), steps=[3])
    assert plain.confirmed is None
    assert [c.to_dict() for c in a.candidates] == [c.to_dict() for c in plain.candidates]
    best = a.candidates[0]
    if best.p_change > 0:
        c = a.confirmed
        assert (c.step, c.characteristic, c.sample, c.cost) == (best.step, best.characteristic, best.sample,
                                                                best.cost)
        assert c.evsi != best.evsi            # another sample of draws, rollouts and readings
        assert c.low <= c.evsi <= c.high
    else:
        assert a.confirmed is None


def test_value_candidate_reproduces_the_screening_on_its_seed_and_draws_afresh_on_another(model):
    from dataclasses import replace

    from recovery.recommend import batch_situation
    from recovery.voi.batch import measure_situation, value_candidate

    m, _ = model
    sit = batch_situation(_worn_die_history(), m.graph_.process)
    cfg = replace(TINY, revalue=0)
    a = measure_situation(sit, m, seed=1, config=cfg, steps=[3])
    for c in a.candidates[:3]:
        assert value_candidate(a, sit, m, c, seed=1, config=cfg).to_dict() == c.to_dict()
    informative = [c for c in a.candidates if c.p_change > 0]
    assert informative, "no candidate that can change the decision in the fixture"
    c = informative[0]
    again = value_candidate(a, sit, m, c, seed=2, config=cfg)
    assert (again.step, again.characteristic, again.sample, again.cost) == (c.step, c.characteristic, c.sample,
                                                                            c.cost)
    assert again.evsi != c.evsi


def test_the_planners_own_plan_is_the_intervene_option_when_given(model):
    from recovery.recommend import batch_situation
    from recovery.voi.batch import measure_situation

    m, _ = model
    p = m.graph_.process
    sit = batch_situation(_worn_die_history(), p)
    own = p.nominal_plan().copy()
    j = int(np.flatnonzero(sit.free)[0])
    lv = p.levers[j]
    own[j] = lv.high if abs(lv.high - own[j]) > 1e-9 else lv.low
    a = measure_situation(sit, m, seed=1, config=TINY, steps=[3], plan=own)
    labels = list(a.prepared.labels)
    k = labels.index("intervene with the planner's plan")
    np.testing.assert_array_equal(a.prepared.plans[k], own)
    searched = measure_situation(sit, m, seed=1, config=TINY, steps=[3])
    k2 = list(searched.prepared.labels).index("intervene with the planner's plan")
    assert not np.allclose(searched.prepared.plans[k2], own)
