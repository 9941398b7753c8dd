"""Within-step edges and station lines (issue 22): the graph holds them, the model
solves them inside the segment, and fit, diagnose and recommend follow them on a
small generated line read from a store."""

import json

import numpy as np
import pytest

from recovery.causal.graph import CausalGraph, ExpertEditError, find_cycle, parse_edits
from recovery.causal.model import CausalModel
from recovery.cli import main
from simulators.definition import parse_process
from simulators.lines import make_line

pytestmark = pytest.mark.filterwarnings("ignore")

#: 3 stations x 3 characteristics; true edges: st1_m2 -> st1_m3, st2_m1 -> st2_m2 ->
#: st2_m3 and st3_m1 -> st3_m3 within stations, st1_m2 -> st3_m3 (nonlinear) across
LINE = make_line(stations=3, chars_per_station=3, seed=1)


@pytest.fixture(scope="module")
def proc():
    return parse_process(LINE.process_toml(), "line.toml")


def _edits(*edges):
    return parse_edits({"add_edge": [dict(step=s, source=a, target=b, **kw) for s, a, b, kw in edges]})


def test_stations_produce_afresh_and_change_what_they_act_on(proc):
    g = CausalGraph.from_process(proc)
    assert g.parents(1, "st1_m1") == [] and (1, "st1_m1") in g.acts
    text = LINE.process_toml().replace('produces = ["st3_m1", "st3_m2", "st3_m3"]',
                                       'produces = ["st3_m1", "st3_m2", "st3_m3"]\nacts_on = ["st2_m1"]')
    g2 = CausalGraph.from_process(parse_process(text, "x.toml"))
    assert [(e.source, e.kind) for e in g2.parents(5, "st2_m1")] == [("st2_m1", "carry")]


def test_a_within_edge_is_an_edge_between_values_at_the_segment_end(proc):
    g = CausalGraph.from_process(proc, _edits((3, "st2_m1", "st2_m2", {}), (3, "st1_m1", "st2_m2", {})))
    kinds = {(e.source, e.kind) for e in g.parents(3, "st2_m2")}
    assert kinds == {("st2_m1", "within"), ("st1_m1", "reads")}   # produced source: within implied
    mi = g.modeled_index
    seg = g.segments()[1]
    assert seg.within[mi["st2_m2"], mi["st2_m1"]] and seg.within.sum() == 1
    # the within parent is not folded into the carry-over: the model solves it apart
    assert seg.carry[mi["st2_m2"]].tolist() == [c == "st1_m1" for c in g.modeled]
    back = CausalGraph.from_dict(json.loads(g.to_json()), proc)
    assert back.edges == g.edges and back.edits == g.edits
    with pytest.raises(ExpertEditError, match="no edge st2_m1 -> st2_m2 at step 3 to remove"):
        CausalGraph.from_process(proc, parse_edits({"remove_edge": [dict(step=3, source="st2_m1", target="st2_m2")]}))


def test_a_cycle_within_a_step_is_refused_with_the_cycle_named(proc):
    with pytest.raises(ExpertEditError, match=r"cycle within step 3: st2_m1 -> st2_m2 -> st2_m3 -> st2_m1"):
        CausalGraph.from_process(proc, _edits((3, "st2_m1", "st2_m2", {}), (3, "st2_m2", "st2_m3", {}),
                                              (3, "st2_m3", "st2_m1", {})))
    assert find_cycle([("a", "b"), ("b", "c")]) is None


@pytest.mark.parametrize("edge, message", [
    ((3, "st1_m1", "st2_m2", {"within": True}), "step 3 does not make or change 'st1_m1'"),
    ((3, "st2_m1", "st2_m1", {"within": True}), "a within-step edge needs two different characteristics"),
    ((3, "st2_m1", "st2_m2", {"within": "yes"}), "field 'within' must be true or false"),
])
def test_bad_within_edges_name_the_entry(proc, edge, message):
    with pytest.raises(ExpertEditError, match=message) as exc:
        CausalGraph.from_process(proc, _edits(edge))
    assert "add_edge[0]" in str(exc.value)


# ---- the model, fitted on the generated line read from a store --------------

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Ingest the line's CSV through its mapping into a store, fit with the true
    graph as expert edits (tiny ADVI), through the CLI."""
    root = tmp_path_factory.mktemp("line")
    paths = LINE.write(root / "line", 300, seed=2)
    store = f"duckdb://{root / 'store.duckdb'}"
    assert main(["ingest", str(paths["data"]), "--mapping", str(paths["mapping"]), "--store", store,
                 "--quiet"]) == 0
    out = root / "m"
    assert main(["fit", "--store", store, "--process", str(paths["process"]), "--edits", str(paths["edits"]),
                 "--out", str(out), "--method", "advi", "--advi-steps", "1500", "--draws", "60",
                 "--seed", "1", "--quiet", "--no-calibrate"]) == 0
    return {"model": out, "store": store, "paths": paths, "root": root}


def test_fit_learns_within_edges_with_the_true_sign(fitted, capsys):
    model = CausalModel.load(fitted["model"])
    lay, P = model.layout_, model.params_
    names = np.asarray(lay.names)[lay.within_i]
    truth = {(e.source, e.target): e.weight for e in LINE.edges if e.within}
    assert sorted(names) == sorted(f"within[{2 * LINE.station_of(b)},{a}->{b}]" for a, b in truth)
    W = np.zeros_like(P.mix)
    W[:, lay.within_q, lay.within_c, lay.within_c2] = 1.0
    mi = model.graph_.modeled_index
    for (a, b), w in truth.items():
        q = LINE.station_of(b) - 1
        coef = np.linalg.inv(P.mix[:, q])   # I - W
        est = -coef[:, mi[b], mi[a]]
        assert np.sign(np.median(est)) == np.sign(w), (a, b)
        assert np.quantile(np.sign(w) * est, 0.03) > 0, (a, b)   # the interval excludes 0


def test_the_filter_with_within_edges_matches_the_joint_gaussian(fitted):
    # _split_mix runs the diagonal filter on the model with within edges; the
    # joint Gaussian of the readings (noise_covariance with mix) must agree.
    from recovery.causal.queries import _batch
    from recovery.causal.queries.root_cause import _no_shift_evidence

    model = CausalModel.load(fitted["model"])
    hist = LINE.step_data(1, seed=7, process=model.graph_.process)
    bv = _batch.view(model, hist, None)
    P = _batch._draws(model, 20)
    f = _batch._filter_batch(model, bv, P, _batch._plan_effective(model, bv, None))
    ev = _no_shift_evidence(model, bv, P, bv.q_last)
    none = int(np.flatnonzero(f.comp_seg == -1)[0])
    np.testing.assert_allclose(f.loglik[:, none], ev.ll0, rtol=1e-8, atol=1e-8)


def test_decode_tensor_holds_the_same_within_edges_as_decode(fitted):
    import pytensor
    import pytensor.tensor as pt

    lay = CausalModel.load(fitted["model"]).layout_
    theta = np.random.default_rng(0).normal(lay.prior_mu, 0.3)
    th = pt.dvector("th")
    T = lay.decode_tensor(th)
    fn = pytensor.function([th], [T["A"], T["mix"], T["B"], T["G"]])
    A, mix, B, G = fn(theta)
    P = lay.decode(theta[None])
    np.testing.assert_allclose(mix, P.mix[0], atol=1e-10)
    np.testing.assert_allclose(A, P.A[0], atol=1e-10)
    np.testing.assert_allclose(G, P.G[0], atol=1e-10)


def test_root_cause_follows_within_edges_to_the_station_that_began_it(fitted):
    # st2_m1 is planted 4 sd high; st2_m2 and st2_m3 move with it along the within
    # edges, and the diagnosis must name station 2's st2_m1, not its children.
    model = CausalModel.load(fitted["model"])
    top = []
    for i in range(5):
        rc = model.root_cause(LINE.step_data(1, seed=100 + i, shift={"st2_m1": 4.0},
                                             process=model.graph_.process), n_draws=40)
        top.append((rc.causes[0].cause, rc.steps[0].step))
        assert abs(sum(s.probability for s in rc.steps) - 1.0) < 1e-9
    assert sum(t == ("st2_m1", 3) for t in top) >= 4, top


def test_diagnose_and_recommend_read_a_batch_from_the_store(fitted, capsys, tmp_path):
    model, store = str(fitted["model"]), fitted["store"]
    capsys.readouterr()
    assert main(["diagnose", "--model", model, "--store", store, "--batch", "100007", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["batch_id"] == "100007" and out[0]["step"] == 6
    assert [s["step"] for s in out[0]["steps"]] and {s["step"] for s in out[0]["steps"]} <= {1, 3, 5}
    assert main(["diagnose", "--model", model, "--store", store, "--batch", "nope"]) == 2
    assert "holds no batch 'nope'" in capsys.readouterr().err
    # a part that has been through station 1 only: stored as step data, then recommended
    part = LINE.step_data(1, seed=9, shift={"st1_m2": 4.0}, first_id=900)
    part[part["step"] <= 2].to_parquet(tmp_path / "part.parquet")
    assert main(["ingest", str(tmp_path / "part.parquet"), "--process", str(fitted["paths"]["process"]),
                 "--store", store, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--model", model, "--store", store, "--batch", "L000900", "--agent", "none",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["note"].startswith("no levers") and rec["plan"] == []
    assert rec["root_cause"][0]["cause"] == "st1_m2"
    # the per-step diagnosis, as diagnose --json gives it: station 1 began it
    assert rec["steps"][0]["step"] == 1 and abs(sum(s["probability"] for s in rec["steps"]) - 1.0) < 1e-9
    assert 0.0 <= rec["p_accept"]["mean"] <= 1.0
    # the same part as a CSV in the step-data schema: diagnose reads it as recommend does
    part[part["step"] <= 2].to_csv(tmp_path / "part.csv", index=False)
    assert main(["diagnose", "--model", model, "--history", str(tmp_path / "part.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["steps"][0]["step"] == 1
    assert main(["recommend", "--model", model, "--agent", "none"]) == 2
    assert "give --history FILE, or --store URL with --batch ID" in capsys.readouterr().err


def test_a_levers_effect_reaches_a_within_child():
    # do() on a lever acts through B: with a within edge yield_strength -> residual_stress
    # at the temper step, the lever's effect on residual stress includes W times its
    # effect on yield strength (the reduced form mix @ B), in decode and decode_tensor.
    import pytensor
    import pytensor.tensor as pt

    from recovery.causal.config import PriorConfig
    from recovery.causal.layout import Layout, Standardisation
    from simulators.definition import load_process

    p = load_process("small")
    g = CausalGraph.from_process(p, parse_edits({"add_edge": [
        dict(step=7, source="yield_strength", target="residual_stress", within=True)]}))
    d, Q, L = len(g.modeled), len(p.inspections), len(p.levers)
    std = Standardisation(np.zeros((Q, d)), np.ones(d), p.nominal_plan(), np.ones(L), np.zeros(L), 0.0)
    lay = Layout(g, std, PriorConfig(), np.zeros(Q))
    mi, j, q = g.modeled_index, p.lever_index["temper_temperature"], 2
    ys, rs = mi["yield_strength"], mi["residual_stress"]
    assert [lay.names[k] for k in lay.within_i] == ["within[12,yield_strength->residual_stress]"]
    theta = lay.prior_mu.copy()
    theta[lay.within_i[0]] = 0.5
    for c, v in ((ys, 2.0), (rs, 0.3)):
        hit = np.flatnonzero((lay.lever_q == q) & (lay.lever_c == c) & (lay.lever_f == j))
        theta[lay.lever_i[hit[0]]] = v
    P = lay.decode(theta[None])
    assert P.B[0, q, ys, j] == pytest.approx(2.0)
    assert P.B[0, q, rs, j] == pytest.approx(0.3 + 0.5 * 2.0)
    th = pt.dvector("th")
    B = pytensor.function([th], lay.decode_tensor(th)["B"])(theta)
    np.testing.assert_allclose(B, P.B[0], atol=1e-12)
