"""The batch page's figures as an engineer would write them (recovery.service.readable)."""

import math
from dataclasses import replace

import pytest

from recovery.service.readable import (decimals, lever_resolution, percent, readable_view, root_cause_sentence,
                                       round_to)
from simulators.definition import load_process


@pytest.mark.parametrize("p, text", [(1.2e-17, "< 0.1%"), (0.0, "< 0.1%"), (0.00099, "< 0.1%"), (0.001, "0.1%"),
                                     (0.0042, "0.4%"), (0.042, "4.2%"), (0.05, "5%"), (0.8312, "83%"),
                                     (0.996, "> 99%"), (1.0, "100%"), (None, ""), (math.nan, "")])
def test_percent(p, text):
    assert percent(p) == text


def test_resolution_follows_the_lever():
    small = {lv.name: lv for lv in load_process("small").levers}
    assert lever_resolution(small["polish_passes"]) == 1.0                 # integer lever
    assert lever_resolution(small["temper_temperature"]) == pytest.approx(0.1)   # 80 degC of change
    assert lever_resolution(small["plating_time"]) == pytest.approx(0.1)         # 15 min
    default = {lv.name: lv for lv in load_process("default").levers}
    assert lever_resolution(default["stress_relief_time"]) == pytest.approx(0.01)  # 2.5 h
    wide = replace(small["temper_temperature"], max_change=500.0)
    assert lever_resolution(wide) == pytest.approx(1.0)
    assert [decimals(r) for r in (1.0, 10.0, 0.1, 0.01)] == [0, 0, 1, 2]
    assert round_to(52.3893, 0.1) == 52.4 and round_to(52.3893, 1.0) == 52.0 and round_to(0.29, 0.1) == 0.3
    assert round_to(None, 0.1) is None


def test_view_is_decorated_without_touching_the_recommendation():
    p = load_process("small")
    plan = [{"step": 7, "lever": "temper_temperature", "value": 452.38931, "unit": "degC"},
            {"step": 11, "lever": "polish_passes", "value": 1.0000000002, "unit": "1"}]
    causes = [{"step": 4, "cause": "furnace_over_temperature", "probability": 0.97, "path": "x"},
              {"step": 2, "cause": "diameter", "probability": 1.2e-17, "path": "y"}]
    rec = {"decision": "intervene", "plan": plan, "root_cause": causes,
           "p_accept": {"mean": 0.912, "low": 0.85, "high": 0.96},
           "p_accept_do_nothing": {"mean": 0.0001, "low": 0.0, "high": 0.002}}
    body = {"recommendation": rec, "levers": [{"name": lv.name} for lv in p.levers]}
    out = readable_view(body, p)
    r = out["recommendation"]
    assert [x["display_value"] for x in r["plan"]] == [452.4, 1.0]
    assert [x["decimals"] for x in r["plan"]] == [1, 0]
    assert [c["probability_text"] for c in r["root_cause"]] == ["97%", "< 0.1%"]
    assert r["p_accept_text"] == {"mean": "91%", "low": "85%", "high": "96%"}
    assert r["p_accept_do_nothing_text"]["mean"] == "< 0.1%"
    assert r["root_cause_sentence"] == ("Most likely cause (97%): the fault 'furnace over temperature' at step 4 "
                                        "(too strong after hardening; temper hotter); next: diameter (< 0.1%).")
    assert {x["name"]: x["resolution"] for x in out["levers"]}["polish_passes"] == 1.0
    # the rows the service stores and audits are left as they were
    assert "display_value" not in plan[0] and "probability_text" not in causes[0]
    assert root_cause_sentence([], p) == "No deviation to explain."
    assert "no catalogued fault" in root_cause_sentence(causes[1:], p)
