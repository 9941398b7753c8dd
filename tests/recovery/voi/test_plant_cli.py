"""``recovery sensors``: the JSON contract, --apply, and bad input."""

import json

import pytest

from recovery.cli import main
from simulators.definition import load_process
from simulators.process import Simulator

KEYS = {"change", "step", "characteristic", "sample", "gain_per_1000", "low", "high", "cost_per_1000",
        "payback_batches"}

CANDS = """
[[candidates]]
change = "raise_sample"
step = 6
sample = 8

[[candidates]]
change = "add_characteristic"
step = 3
characteristic = "yield_strength"
investment = 1000

[[candidates]]
change = "add_characteristic"
step = 6
characteristic = "ovality"
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    path = tmp_path_factory.mktemp("hist") / "history.parquet"
    Simulator("small").simulate(60, 7).observations.to_parquet(path)
    return path


def test_json_contract_and_apply(small_model, history, tmp_path, capsys):
    _, folder = small_model
    cands = tmp_path / "c.toml"
    cands.write_text(CANDS)
    out = tmp_path / "changed.toml"
    rc = main(["sensors", "--model", str(folder), "--data", str(history), "--candidates", str(cands),
               "--batches", "40", "--world-draws", "4", "--seed", "1", "--apply", "1", "--out", str(out),
               "--json", "--quiet"])
    assert rc == 0
    body = json.loads(capsys.readouterr().out)
    rows = body["candidates"]
    assert len(rows) == 3 and all(KEYS <= set(r) for r in rows)
    net = [r["gain_per_1000"] - r["cost_per_1000"] for r in rows]
    assert net == sorted(net, reverse=True)
    for r in rows:
        assert r["low"] <= r["gain_per_1000"] <= r["high"] and r["cost_per_1000"] > 0
    assert {(r["change"], r["step"]) for r in rows} == {("raise_sample", 6), ("add_characteristic", 3),
                                                        ("add_characteristic", 6)}
    assert [f["step"] for f in body["flag_check"]] == [3, 6, 12]
    # --apply 1 wrote the best change into a valid copy of the process file
    best = rows[0]
    new = load_process(str(out))
    ins = {i.step: i for i in new.inspections}[best["step"]]
    if best["change"] == "raise_sample":
        assert ins.sample == best["sample"]
    else:
        assert best["characteristic"] in ins.measures
    assert body["applied"]["rank"] == 1
    # the file holds the gates the ranking valued (set on the model's world), not fresh ones
    for name, (lo, hi) in best["gates"].items():
        glo, ghi = new.gate_bands(best["step"])
        assert (glo[new.char_index[name]], ghi[new.char_index[name]]) == pytest.approx((lo, hi), abs=1e-5)
    added = {r["characteristic"]: r["gates"] for r in rows if r["change"] == "add_characteristic"}
    assert set(added["ovality"]) == {"ovality"} and set(added["yield_strength"]) == {"yield_strength"}
    assert "policy_description" in body and all(isinstance(r["alters_decisions"], bool) for r in rows)


def test_bad_candidates_name_the_entry(small_model, history, tmp_path, capsys):
    _, folder = small_model
    cands = tmp_path / "c.toml"
    cands.write_text(CANDS + '\n[[candidates]]\nchange = "raise_sample"\nstep = 6\nsample = 50\n')
    rc = main(["sensors", "--model", str(folder), "--data", str(history), "--candidates", str(cands),
               "--batches", "10", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "c.toml: candidates[3]: sample 50 is not in 1..20" in err


def test_history_of_another_process_is_refused(small_model, tmp_path, capsys):
    _, folder = small_model
    other = tmp_path / "default.parquet"
    Simulator("default").simulate(3, 1).observations.to_parquet(other)
    rc = main(["sensors", "--model", str(folder), "--data", str(other), "--batches", "10", "--quiet"])
    assert rc == 2
    assert "small-chromed-rod" in capsys.readouterr().err


def test_the_planner_values_a_shortlist(small_model, history, tmp_path, capsys):
    """--shortlist-policy planner: the best changes by the rule's screen are valued again with the
    planner on the same batches, and the rule's gain on those batches is given beside it."""
    _, folder = small_model
    cands = tmp_path / "c.toml"
    cands.write_text(CANDS)
    rc = main(["sensors", "--model", str(folder), "--data", str(history), "--candidates", str(cands),
               "--batches", "40", "--world-draws", "2", "--seed", "1", "--shortlist-policy", "planner",
               "--shortlist", "1", "--shortlist-batches", "12", "--json", "--quiet"])
    assert rc == 0
    body = json.loads(capsys.readouterr().out)
    sl = body["shortlist"]
    assert sl["policy"] == "planner" and sl["n_batches"] == 12 and sl["budget"] == "tiny"
    alters = [r for r in body["candidates"] if r["alters_decisions"]]
    assert len(sl["rows"]) == min(1, len(alters))
    for r in sl["rows"]:
        assert r["index"] == alters[0]["index"] and r["low"] <= r["gain_per_1000"] <= r["high"]
        assert alters[0]["shortlist"]["gain_per_1000"] == r["gain_per_1000"]
    assert sl["asked"] >= 0
