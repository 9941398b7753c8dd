"""A partner's own line (issue 22): every characteristic `role = "other"`, no
levers, no fault catalogue, one bar per batch, no gauge sigma. fit, diagnose and
recommend must work on it, not stop with a traceback."""

import json

import numpy as np
import pytest

from recovery.causal.graph import CausalGraph
from recovery.causal.model import CausalModel
from recovery.cli import main
from tests.fixtures.partner_line import PROCESS_PATH, partner_history, partner_process

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def partner_model(tmp_path_factory):
    """A tiny ADVI fit of the fixture line, through the CLI."""
    root = tmp_path_factory.mktemp("partner")
    data = root / "hist.parquet"
    partner_history(80, seed=3).to_parquet(data)
    out = root / "m"
    rc = main(["fit", "--data", str(data), "--out", str(out), "--process", str(PROCESS_PATH),
               "--method", "advi", "--advi-steps", "300", "--draws", "50", "--seed", "1",
               "--quiet", "--no-calibrate"])
    assert rc == 0
    return out


def test_a_characteristic_no_step_acts_on_is_produced_where_first_gauged():
    # Before: no segment acted on an `other` characteristic, so it had no noise and,
    # with one bar and a perfect gauge, a zero covariance (NaN in the fit).
    p = partner_process()
    g = CausalGraph.from_process(p)
    mi = g.modeled_index
    for q, seg in enumerate(g.segments()):
        for c in p.inspections[q].measures:
            assert seg.acted[mi[c]], (q, c)
            assert not seg.carry[mi[c]].any(), (q, c)   # set afresh, no carry-over
        for c in set(mi) - set(p.inspections[q].measures):
            if any(c in p.inspections[r].measures for r in range(q)):
                assert not seg.acted[mi[c]] and seg.carry[mi[c], mi[c]], (q, c)   # passes through


def test_fit_runs_and_learns_each_characteristics_own_noise(partner_model):
    model = CausalModel.load(partner_model)
    names = model.layout_.names
    noise = [n for n in names if n.startswith("log_noise[")]
    assert sorted(noise) == sorted(f"log_noise[{i.step},{c}]" for i in partner_process().inspections
                                   for c in i.measures)
    tau = model.params_.tau
    assert np.all(np.isfinite(tau))
    mi = model.graph_.modeled_index
    for q, ins in enumerate(partner_process().inspections):
        assert np.all(tau[:, q, [mi[c] for c in ins.measures]] > 0)


def test_diagnose_names_the_station_of_a_planted_shift(partner_model, tmp_path, capsys):
    hist = tmp_path / "one.parquet"
    partner_history(1, seed=11, shift={"s1_b": 0.6}).to_parquet(hist)
    capsys.readouterr()
    rc = main(["diagnose", "--model", str(partner_model), "--history", str(hist), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    top = out[0]["root_cause"][0]
    assert (top["cause"], top["step"]) == ("s1_b", 1)
    assert top["probability"] > 0.5
    assert "produced here" in top["path"]


def test_root_cause_with_no_hypotheses_says_so(partner_model, monkeypatch):
    # No fault catalogue and nothing the model lets deviate: an answer, not
    # "zero-size array to reduction operation maximum".
    import importlib

    rc_mod = importlib.import_module("recovery.causal.queries.root_cause")  # the module, not the function

    model = CausalModel.load(partner_model)
    monkeypatch.setattr(rc_mod, "_hypotheses", lambda *a, **k: [])
    rc = model.root_cause(partner_history(1, seed=12), n_draws=20)
    assert rc.causes == () and rc.p_deviation == 0.0
    assert "no root-cause hypotheses" in rc.note


@pytest.mark.parametrize("agent", ["planner", "none"])
def test_recommend_without_levers_says_so_and_gives_the_diagnosis(partner_model, tmp_path, capsys, agent):
    hist = tmp_path / "part.parquet"
    df = partner_history(1, seed=11, shift={"s1_b": 0.6})
    df[df["step"] <= 2].to_parquet(hist)          # after station 1: there is a future
    capsys.readouterr()
    assert main(["recommend", "--model", str(partner_model), "--history", str(hist), "--agent", agent,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["note"].startswith("no levers") and out["plan"] == []
    assert out["root_cause"][0]["cause"] == "s1_b"
    assert out["p_accept"] == out["p_accept_do_nothing"]          # nothing to plan: one course
    assert 0.0 <= out["p_accept"]["mean"] <= 1.0
    assert main(["recommend", "--model", str(partner_model), "--history", str(hist), "--agent", agent]) == 0
    text = capsys.readouterr().out
    assert "no levers; P(accept)" in text and "with the plan" not in text
