"""Decisions (recovery.decisions): the plan a decision fixes, and how it is recorded."""

from types import SimpleNamespace

import pytest

from recovery.agents.base import PlanError, check_plan
from recovery.data.store import open_store
from recovery.decisions import DecisionConflict, DecisionError, decided_plan, record_decision
from simulators import load_process

P = load_process("small")
# after step 6: temper (7), grinding (9), plating (10), polish (11) are free; the recommendation moves two
REC = SimpleNamespace(step=6, decision="intervene",
                      plan=[{"lever": "temper_temperature", "value": 480.0},
                            {"lever": "plating_time", "value": 35.0}])


def test_accept_takes_the_recommended_plan_and_reject_none():
    assert decided_plan(P, REC, "accept", None) == {"temper_temperature": 480.0, "plating_time": 35.0}
    assert decided_plan(P, REC, "reject", None) is None


def test_modify_keeps_the_recommendation_for_levers_not_named():
    plan = decided_plan(P, REC, "modify", {"grinding_allowance": 20.0})
    assert plan == {"temper_temperature": 480.0, "grinding_allowance": 20.0, "plating_time": 35.0,
                    "polish_passes": 0.0}


@pytest.mark.parametrize("decision, plan, match", [
    ("modify", None, "needs the plan"),
    ("modify", {"no_such_lever": 1.0}, "unknown lever 'no_such_lever'"),
    ("modify", {"grinding_allowance": 500.0}, "grinding_allowance' = 500 um is outside its bounds"),
    ("modify", {"polish_passes": 1.5}, "not a whole number"),
    ("modify", {"plating_time": float("nan")}, "is not a number"),
    ("accept", {"plating_time": 30.0}, "only with 'modify'"),
    ("approve", None, "unknown decision 'approve'"),
])
def test_bad_decisions_are_refused_with_the_reason(decision, plan, match):
    with pytest.raises(DecisionError, match=match):
        decided_plan(P, REC, decision, plan)


def test_a_lever_already_past_cannot_be_modified():
    late = SimpleNamespace(step=9, decision="intervene", plan=[{"lever": "plating_time", "value": 35.0}])
    with pytest.raises(DecisionError, match="'grinding_allowance' \\(step 9\\) is already past"):
        decided_plan(P, late, "modify", {"grinding_allowance": 10.0})
    assert decided_plan(P, late, "modify", {"polish_passes": 2.0}) == {"plating_time": 35.0, "polish_passes": 2.0}


def test_check_plan_names_past_levers_that_changed():
    ref = P.nominal_plan()
    plan = ref.copy()
    plan[P.lever_index["temper_temperature"]] = 460.0
    check_plan(P, plan, 6, ref)                                  # temper (step 7) is still free
    with pytest.raises(PlanError, match="already done.*temper_temperature"):
        check_plan(P, plan, 7, ref)


def _store(tmp_path):
    return open_store(f"duckdb://{tmp_path / 'store.duckdb'}")


def _record(st, decision="accept", supersedes=None):
    with st.transaction():
        return record_decision(st, process=P, batch_id="B-1", rec=REC, decision=decision, comment="why",
                               plan=decided_plan(P, REC, decision, None), actor="eng", partner="A",
                               role="engineer", model_version="m1", input_hash="h1", supersedes=supersedes)


def test_one_final_decision_per_step_unless_superseded(tmp_path):
    with _store(tmp_path) as st:
        first = _record(st)
        with pytest.raises(DecisionConflict) as exc:
            _record(st, "reject")
        assert exc.value.current == first["decision_id"]
        assert len(st.decisions()) == 1                          # the refused one left nothing
        second = _record(st, "reject", supersedes=first["decision_id"])
        heads = st.final_decisions(P.name)
        assert heads["decision_id"].tolist() == [second["decision_id"]]
        audit = st.audit(batch_ids=["B-1"])
        assert audit["action"].tolist() == ["decision", "decision", "decision_superseded"]
        assert audit["payload"].iloc[1]["supersedes"] == first["decision_id"]
        assert audit["payload"].iloc[0]["plan"] == {"temper_temperature": 480.0, "plating_time": 35.0}
        assert set(audit["actor"]) == {"eng"} and set(audit["model_version"]) == {"m1"}


def test_the_input_hash_tells_a_calibrated_plan_from_one_on_the_file():
    import pandas as pd

    from recovery.calibration.posterior import from_values
    from recovery.decisions import input_hash

    p = load_process("small")
    rows = pd.DataFrame({"batch_id": ["B-1"] * 2, "bar_id": [0, 1], "step": [5, 5],
                         "variable": ["diameter"] * 2, "value": [16.0, 16.1], "kind": ["measurement"] * 2})
    plain = input_hash(rows, "m1", 0)
    assert plain == input_hash(rows, "m1", 0, None)          # the file's physics: the hash as before
    key = p.uncertain[0].key
    a = from_values(p, [{key: 1.0}]).fingerprint
    b = from_values(p, [{key: 1.1}]).fingerprint
    assert a != b and len(a) == 16
    hashes = {plain, input_hash(rows, "m1", 0, a), input_hash(rows, "m1", 0, b)}
    assert len(hashes) == 3
    assert input_hash(rows, "m1", 0, a) == input_hash(rows.copy(), "m1", 0, from_values(p, [{key: 1.0}]).fingerprint)

