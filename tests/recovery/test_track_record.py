"""``recovery track-record`` and :func:`recovery.track_record.track_record` on a small store.

Twelve simulated batches of the small process are stored whole (final inspection
included) and two only up to partner A's last step; recommendations, decisions
and their final claims are written through the store, as the service writes them.
"""

import json

import numpy as np
import pandas as pd
import pytest

from recovery.cli import main
from recovery.data.ingest import ingest
from recovery.data.store import open_store
from recovery.track_record import BATCH_COLUMNS, track_record
from simulators.process import Simulator

PLAN = {"temper_temperature": 470.0}
# batch number -> (decision, P(accept) of the plan, P(accept) doing nothing)
DECIDED = {1: ("accept", 0.9, 0.3), 2: ("accept", 0.85, 0.4), 3: ("reject", 0.7, 0.6),
           4: ("modify", 0.6, 0.5), 5: ("accept", 0.95, 0.2), 6: ("reject", 0.3, 0.3),
           7: ("accept", 0.1, 0.05), 8: ("modify", 0.75, 0.5)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(store url, {batch: accepted at the final inspection}, dir)."""
    d = tmp_path_factory.mktemp("track")
    sim = Simulator("small")
    res = sim.simulate(14, 5, explore=0.3)
    obs = res.observations
    # the final gate of the simulator is the report's outcome rule
    truth = {f"B-{i + 1}": not bool(res.flags[i, -1]) for i in range(12)}
    partial = obs["batch_id"].isin(["B-13", "B-14"]) & (obs["partner"] != "A")
    src = d / "steps.parquet"
    obs[~partial].to_parquet(src, index=False)
    url = f"duckdb://{d / 'store.duckdb'}"
    with open_store(url) as st:
        assert ingest(src, store=st, process="small", quarantine=d / "q.csv").rejected == 0
        name = st.process_names()[0]
        for n in list(range(1, 13)) + [13, 14, 99]:
            dec = DECIDED.get(n, ("accept", 0.8, 0.5) if n in (13, 14, 99) else None)
            p_plan, p_none = (dec[1], dec[2]) if dec else (0.5, 0.5)
            # an older recommendation first: only the last one logged counts
            st.add_recommendation(process=name, batch_id=f"B-{n}", after_step=3, agent="planner",
                                  plan={"temper_temperature": 400.0}, expected={"p_accept": {"mean": 0.01}})
            st.add_recommendation(process=name, batch_id=f"B-{n}", after_step=3, agent="planner", plan=PLAN,
                                  expected={"p_accept": {"mean": p_plan}, "decision": "intervene",
                                            "p_accept_do_nothing": {"mean": p_none}})
            if dec is None:
                continue
            plan = PLAN if dec[0] == "accept" else ({"temper_temperature": 470.0} if n == 8 else
                                                    {"temper_temperature": 500.0} if dec[0] == "modify" else None)
            did = st.add_decision(batch_id=f"B-{n}", engineer="eng", decision=dec[0], plan=plan, partner="A")
            assert st.claim_decision(process=name, batch_id=f"B-{n}", after_step=3, decision_id=did) is None
    return url, truth, d


def test_joins_and_contract(world):
    url, truth, _ = world
    with open_store(url) as st:
        rep = track_record(st)
    d = json.loads(json.dumps(rep.to_dict(), default=str))
    # B-1..12, B-13, B-14 and B-99 (no step data at all) were recommended
    assert d["n_recommendations"] == 15
    assert d["n_decisions"] == len(DECIDED) + 3
    assert d["n_outcomes"] == len(DECIDED)          # B-13/14 never reached the end, B-99 has no data
    assert "3 decided batch(es) without final-inspection step data" in d["notes"][0]
    followed = {n for n, (dec, *_) in DECIDED.items() if dec == "accept"} | {8, 13, 14, 99}
    assert d["agreement"] == pytest.approx(len(followed) / (len(DECIDED) + 3))
    acc = lambda ns: [truth[f"B-{n}"] for n in ns]  # noqa: E731
    fol = acc(n for n in DECIDED if n in followed)
    nof = acc(n for n in DECIDED if n not in followed)
    assert d["followed"]["n"] == len(fol) and d["followed"]["recovered"] == pytest.approx(np.mean(fol))
    assert d["not_followed"]["n"] == len(nof) and d["not_followed"]["recovered"] == pytest.approx(np.mean(nof))
    for s in (d["followed"], d["not_followed"]):
        assert 0.0 <= s["low"] <= s["recovered"] <= s["high"] <= 1.0
    cal = d["calibration"]
    assert cal["n"] == len(fol)
    assert sum(b["n"] for b in cal["bins"]) == cal["n"]
    assert {"low", "high", "n", "predicted", "observed"} <= set(cal["bins"][0])
    assert [set(m) >= {"month", "net_value", "baseline_net_value", "scrap_avoided"} for m in d["by_month"]] == [True]
    rows = {r["batch_id"]: r for r in d["batches"]}
    assert list(d["batches"][0]) == BATCH_COLUMNS
    # the last logged recommendation is the one joined; the counterfactual is the plan not carried out
    assert rows["B-1"]["p_accept"] == 0.9 and rows["B-1"]["counterfactual_p_accept"] == 0.3
    assert rows["B-3"]["counterfactual_p_accept"] == 0.7 and rows["B-3"]["followed"] is False
    assert rows["B-4"]["followed"] is False and rows["B-8"]["followed"] is True
    assert rows["B-10"]["decision"] is None and rows["B-10"]["outcome"] is None
    eco_ok = {True: 1500.0, False: -400.0}
    assert rows["B-6"]["net_value"] == eco_ok[truth["B-6"]]          # rejected: no lever cost
    assert rows["B-1"]["net_value"] == eco_ok[truth["B-1"]] - 80.0   # temper lever used once
    assert d["by_month"][0]["net_value"] == pytest.approx(sum(rows[f"B-{n}"]["net_value"] for n in DECIDED))


def test_partner_sees_only_batches_it_owns(world):
    url, _, _ = world
    with open_store(url) as st:
        a = track_record(st, partner="A")
        b = track_record(st, partner="B")
    ids_b = set(b.batches["batch_id"])
    assert "B-13" not in ids_b and "B-14" not in ids_b and "B-99" not in ids_b
    assert ids_b == {f"B-{n}" for n in range(1, 13)}
    assert {"B-13", "B-14"} <= set(a.batches["batch_id"])


def test_bad_input_gives_valid_reports(world, tmp_path):
    url, _, _ = world
    # an empty store: zeros and empty lists
    with open_store(f"duckdb://{tmp_path / 'empty.duckdb'}") as st:
        d = track_record(st).to_dict()
        assert (d["n_recommendations"], d["n_decisions"], d["n_outcomes"], d["agreement"]) == (0, 0, 0, 0.0)
        assert d["by_month"] == [] and d["batches"] == [] and d["calibration"]["bins"] == []
        # decisions without recommendations or step data
        st.add_decision(batch_id="X-1", engineer="e", decision="accept")
        d = track_record(st).to_dict()
        assert d["n_decisions"] == 0 and "1 decision(s) without one" in d["notes"][0]
        # a recommendation of a process the store does not know: no crash, a note
        st.add_recommendation(process="other", batch_id="X-1", after_step=3, agent="planner", plan={})
        d = track_record(st).to_dict()
        assert d["n_recommendations"] == 1 and d["n_outcomes"] == 0
        assert any("process 'other'" in n for n in d["notes"])
    with open_store(url) as st:
        d = track_record(st, since="2999-01-01").to_dict()
        assert d["n_recommendations"] == 0 and "in the window" in d["notes"][0]


def test_cli_json_and_export(world, capsys):
    url, _, d = world
    assert main(["track-record", "--store", url, "--json", "--export", str(d / "tr.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_outcomes"] == len(DECIDED)
    csv = pd.read_csv(d / "tr.csv")
    assert list(csv.columns) == BATCH_COLUMNS and len(csv) == out["n_recommendations"]
    assert json.loads(csv.loc[csv["batch_id"] == "B-1", "recommended_plan"].iloc[0]) == PLAN
    assert main(["track-record", "--store", url, "--export", str(d / "tr.parquet")]) == 0
    assert len(pd.read_parquet(d / "tr.parquet")) == out["n_recommendations"]
    assert "agreement" in capsys.readouterr().out
    assert main(["track-record", "--store", url, "--export", str(d / "tr.xlsx")]) == 2
    assert main(["track-record", "--store", url, "--since", "not-a-day"]) == 2


def test_step_data_without_recommendations_or_decisions(tmp_path):
    """Issue 20's bad input: step data alone, then recommendations without any decision:
    a valid report with zeros and a note each time, never a crash."""
    sim = Simulator("small")
    src = tmp_path / "steps.parquet"
    sim.simulate(3, 7).observations.to_parquet(src, index=False)
    with open_store(f"duckdb://{tmp_path / 'steps.duckdb'}") as st:
        assert ingest(src, store=st, process="small", quarantine=tmp_path / "q.csv").rejected == 0
        d = track_record(st).to_dict()
        assert (d["n_recommendations"], d["n_decisions"], d["n_outcomes"], d["agreement"]) == (0, 0, 0, 0.0)
        assert d["notes"] == ["no recommendation logged: nothing to join"]
        name = st.process_names()[0]
        st.add_recommendation(process=name, batch_id="B-1", after_step=3, agent="planner", plan=PLAN,
                              expected={"p_accept": {"mean": 0.7}, "p_accept_do_nothing": {"mean": 0.2}})
        d = track_record(st).to_dict()
        assert (d["n_recommendations"], d["n_decisions"], d["n_outcomes"]) == (1, 0, 0)
        assert d["followed"]["n"] == 0 and d["by_month"] == []
        assert any("recommendations without decisions" in n for n in d["notes"])
        assert d["batches"][0]["outcome"] is None and d["batches"][0]["decision"] is None
