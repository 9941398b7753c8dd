"""``recovery recommend --decide``: decisions made on the command line are stored and audited
as the service's (recovery.decisions), with the same final-decision rule."""

import json

import pandas as pd
import pytest

from recovery.cli import main
from recovery.data.store import open_store
from recovery.decisions import input_hash
from simulators.process import Simulator
from simulators.schema import observations_frame

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def flagged(small_model, tmp_path_factory):
    """(model dir, history file, store URL): a worn-die batch of the small process cut at step 3."""
    sim = Simulator("small")
    cond = sim.sample_conditions(1, 3, faults=False, force_fault="worn_drawing_die")
    res = sim.simulate(1, 3, conditions=cond)
    d = tmp_path_factory.mktemp("decide")
    f = d / "h.parquet"
    observations_frame(sim.process, cond, res.obs, res.plan, upto_step=3).to_parquet(f, index=False)
    return small_model[1], f, f"duckdb://{d / 'store.duckdb'}"


def _recommend(flagged, *extra):
    model_dir, f, url = flagged
    return main(["recommend", "--model", str(model_dir), "--history", str(f), "--agent", "heuristic",
                 "--store", url, "--by", "alice", *extra])


def test_decisions_are_stored_audited_and_final_unless_superseded(flagged, small_model, capsys):
    _, f, url = flagged
    assert _recommend(flagged, "--decide", "accept", "--comment", "looks right", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    first = out["recorded_decision"]
    assert first["decision"] == "accept" and first["after_step"] == out["step"] == 3
    assert first["plan"] == {r["lever"]: r["value"] for r in out["plan"]}

    # a second final decision on the same step is refused, and nothing is stored
    assert _recommend(flagged, "--decide", "reject") == 2
    err = capsys.readouterr().err
    assert f"already has a final decision after step 3 (decision {first['decision_id']})" in err
    assert f"--supersedes {first['decision_id']}" in err
    assert _recommend(flagged, "--decide", "modify", "--plan", "no_such_lever=1") == 2
    assert "unknown lever 'no_such_lever'" in capsys.readouterr().err

    assert _recommend(flagged, "--decide", "modify", "--plan", "grinding_allowance=20",
                      "--supersedes", str(first["decision_id"])) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("decision ") and "recorded (modify after step 3" in line
    second = int(line.split()[1])

    with open_store(url) as st:
        dec = st.decisions()
        assert dec["id"].tolist() == [first["decision_id"], second]
        assert dec["engineer"].tolist() == ["cli:alice", "cli:alice"]
        assert dec["plan"].iloc[1]["grinding_allowance"] == 20.0
        assert st.final_decisions("small-chromed-rod")["decision_id"].tolist() == [second]
        audit = st.audit()
    assert audit["action"].tolist() == ["decision", "decision", "decision_superseded"]
    assert audit["payload"].iloc[0]["comment"] == "looks right"
    assert audit["payload"].iloc[2]["superseded_by"] == second
    # the same input hash the service stores: the batch's rows, the model version and the seed
    model = small_model[0]
    assert set(audit["input_hash"]) == {input_hash(pd.read_parquet(f), model.version_.id, 0)}
    assert set(audit["model_version"]) == {model.version_.id}


def test_decision_options_need_decide(flagged, capsys):
    assert _recommend(flagged, "--plan", "grinding_allowance=20") == 2
    assert "go with --decide" in capsys.readouterr().err
