"""recommend(): the engineer's answer, with a small fitted model of the small process."""

import json

import numpy as np
import pandas as pd
import pytest

from recovery.cli import main
from recovery.recommend import RecommendationError, recommend
from simulators.process import Simulator
from simulators.schema import observations_frame

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def model(small_model):
    return small_model


def _worn_die_history(seed=3):
    """A batch with a worn die, up to the inspection that flags it, and its truth."""
    sim = Simulator("small")
    cond = sim.sample_conditions(1, seed, faults=False, force_fault="worn_drawing_die")
    res = sim.simulate(1, seed, conditions=cond)
    assert res.flags[0, 0]  # flagged at step 3
    hist = observations_frame(sim.process, cond, res.obs, res.plan, upto_step=3)
    return hist, cond


def test_worn_die_gets_more_grinding_and_a_better_chance(model):
    m, _ = model
    hist, cond = _worn_die_history()
    rec = recommend(hist, m, seed=1)
    p = m.graph_.process
    assert rec.decision == "intervene"
    plan = {r["lever"]: r["value"] for r in rec.plan}
    assert set(plan) == {lv.name for lv in p.levers if lv.step > 3}
    # ground truth: the die left the bar oversize; the fix is to grind more stock off
    assert plan["grinding_allowance"] > 10.0
    assert rec.p_accept["mean"] > rec.p_accept_do_nothing["mean"]
    assert rec.p_accept["low"] <= rec.p_accept["mean"] <= rec.p_accept["high"]
    assert rec.expected_cost["intervene"] < rec.expected_cost["continue"]
    assert any("grinding_allowance" in a for a in rec.acts_on)
    probs = [c["probability"] for c in rec.root_cause]
    assert probs == sorted(probs, reverse=True)
    full = np.array([plan.get(lv.name, lv.nominal) for lv in p.levers])
    assert p.within_bounds(full)


def test_recommendation_is_deterministic_for_a_seed(model):
    m, _ = model
    hist, _ = _worn_die_history()
    a, b = recommend(hist, m, seed=5), recommend(hist, m, seed=5)
    assert a.to_dict() == b.to_dict()


def test_bad_histories_are_refused(model):
    m, _ = model
    hist, _ = _worn_die_history()
    with pytest.raises(RecommendationError, match="no measurements"):
        recommend(hist[hist.kind != "measurement"], m)
    two = pd.concat([hist, hist.assign(batch_id="B-99")], ignore_index=True)
    with pytest.raises(RecommendationError, match="holds 2 batches"):
        recommend(two, m)
    sim = Simulator("small")
    done = sim.simulate(1, 4).observations
    with pytest.raises(RecommendationError, match="finished the process"):
        recommend(done, m)
    scrapped = pd.concat([hist, hist.iloc[:1].assign(kind="event", variable="scrapped", value=1.0,
                                                     unit="1", bar_id=pd.NA)], ignore_index=True)
    with pytest.raises(RecommendationError, match="already scrapped"):
        recommend(scrapped, m)


def test_cli_json_contract_and_errors(model, tmp_path, capsys):
    _, d = model
    hist, _ = _worn_die_history()
    f = tmp_path / "h.parquet"
    hist.to_parquet(f)
    assert main(["recommend", "--model", str(d), "--history", str(f), "--json", "--seed", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("batch_id", "decision", "expected_cost", "p_accept", "p_accept_do_nothing", "plan",
                "root_cause", "model_version"):
        assert key in out
    assert set(out["p_accept"]) == {"mean", "low", "high"}
    assert all(set(r) == {"step", "lever", "value", "unit"} for r in out["plan"])
    # a history from another process
    other = Simulator().simulate(1, 1).observations
    g = tmp_path / "other.parquet"
    other[other.step <= 15].to_parquet(g)
    assert main(["recommend", "--model", str(d), "--history", str(g)]) == 2
    assert "does not fit the model's process" in capsys.readouterr().err
    assert main(["recommend", "--model", str(tmp_path / "nope"), "--history", str(f)]) == 2
