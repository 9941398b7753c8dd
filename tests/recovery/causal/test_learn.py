"""recovery learn-graph (issue 22): edges from history, no edge back in time,
stability selection's error bound stated, the edits load in fit."""

import json

import numpy as np
import pytest

from recovery.causal._lasso import lasso_path, lasso_path_reference
from recovery.causal.graph import CausalGraph, load_edits
from recovery.causal.learn import LearnGraphError, learn_graph
from recovery.cli import main
from simulators.definition import parse_process
from simulators.lines import make_line

pytestmark = pytest.mark.filterwarnings("ignore")

LINE = make_line(stations=4, chars_per_station=4, p_within=0.35, p_across=0.12, seed=3)


@pytest.fixture(scope="module")
def proc():
    return parse_process(LINE.process_toml(), "line.toml")


def test_lasso_kernel_matches_its_numpy_twin():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    y = X @ np.array([1.0, 0.0, -0.5, 0.0, 0.2, 0.0]) + rng.standard_normal(200)
    X, y = X - X.mean(0), y - y.mean()
    G, c = X.T @ X / 200, X.T @ y / 200
    lams = np.abs(c).max() * np.geomspace(1, 0.01, 12)
    fast = lasso_path(G, c, lams, 1e-12, 5000)
    np.testing.assert_allclose(fast, lasso_path_reference(G, c, lams, 1e-12, 5000), atol=1e-9)
    assert (fast[0] == 0).sum() >= 5           # at lambda_max only one may enter
    np.testing.assert_allclose(fast[-1], np.linalg.lstsq(X, y, rcond=None)[0], atol=0.05)


def test_learns_the_generated_graph_forward_in_time(proc):
    hist = LINE.step_data(600, seed=5, process=proc)
    g = learn_graph(hist, proc, subsamples=30, seed=1)
    truth = {(e.source, e.target) for e in LINE.edges}
    est = {(e.source, e.target) for e in g.edges}
    tp = len(truth & est)
    assert tp / len(est) >= 0.8 and tp / len(truth) >= 0.7, (sorted(est - truth), sorted(truth - est))
    order = {c: i for i, c in enumerate(LINE.characteristics)}
    for e in g.edges:
        assert order[e.source] < order[e.target]                 # never back in time
        assert e.within == (LINE.station_of(e.source) == LINE.station_of(e.target))
        assert e.step == LINE.step_of(e.target)
        assert e.low <= e.weight <= e.high and 0.8 <= e.selected_frequency <= 1.0
    assert g.n_parts == 600 and g.subsamples == 30 and g.error_bound > 0
    # the same seed gives the same proposal
    again = learn_graph(hist, proc, subsamples=30, seed=1)
    assert again.edges == g.edges


def test_a_linear_weight_comes_back_in_physical_units(proc):
    hist = LINE.step_data(2000, seed=6, process=proc)
    g = learn_graph(hist, proc, subsamples=10, seed=0)
    lin = [e for e in LINE.edges if not e.nonlinear
           and sum(f.target == e.target for f in LINE.edges) == 1]   # a single linear parent
    assert lin
    for e in lin:
        got = next(x for x in g.edges if (x.source, x.target) == (e.source, e.target))
        true = e.weight * LINE.sigma[e.target] / LINE.sigma[e.source]      # mm per mm
        assert got.low - 0.1 * abs(true) <= true <= got.high + 0.1 * abs(true), (e, got)


def test_independent_characteristics_give_no_edges(proc):
    empty = make_line(stations=3, chars_per_station=3, p_within=0.0, p_across=0.0, seed=2)
    p = parse_process(empty.process_toml(), "empty.toml")
    g = learn_graph(empty.step_data(400, seed=1, process=p), p, subsamples=20, seed=0)
    assert len(g.edges) <= 1


def test_too_few_parts_and_bad_settings_are_refused(proc):
    with pytest.raises(LearnGraphError, match="at least 20 parts"):
        learn_graph(LINE.step_data(10, seed=1, process=proc), proc)
    with pytest.raises(LearnGraphError, match="threshold must be in"):
        learn_graph(LINE.step_data(30, seed=1, process=proc), proc, threshold=0.5)


def test_cli_writes_edits_that_fit_loads_and_prints_the_contract(proc, tmp_path, capsys):
    paths = LINE.write(tmp_path / "line", 300, seed=8)
    hist = tmp_path / "hist.parquet"
    LINE.step_data(300, seed=8, process=proc).to_parquet(hist)
    out = tmp_path / "learned.toml"
    capsys.readouterr()
    assert main(["learn-graph", "--data", str(hist), "--process", str(paths["process"]), "--out", str(out),
                 "--subsamples", "20", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert {"method", "n_parts", "seconds", "edges"} <= set(body) and body["n_parts"] == 300
    assert body["edges"] and {"from", "to", "weight", "low", "high", "selected_frequency"} <= set(body["edges"][0])
    names = set(LINE.characteristics)
    assert all(e["from"] in names and e["to"] in names for e in body["edges"])
    g = CausalGraph.from_process(proc, load_edits(out))
    assert len([x for x in g.log if x.startswith("added")]) == len(body["edges"])
    assert any(e.kind == "within" for e in g.edges)
    assert main(["learn-graph", "--data", str(hist), "--process", str(paths["process"]),
                 "--out", str(tmp_path / "x.txt")]) == 2
    assert "expected a .toml file name" in capsys.readouterr().err


def test_within_order_from_data_finds_the_cause_under_non_gaussian_noise():
    # With uniform (non-Gaussian) noise the pairwise LiNGAM measure tells x -> y even
    # when the listing puts y first; with Gaussian noise nothing could.
    from recovery.causal.learn import _lingam_order

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 3000)
    y = 0.8 * x + rng.uniform(-1, 1, 3000)
    z = -0.6 * y + rng.uniform(-1, 1, 3000)
    Z = np.column_stack([z, y, x])
    Z = (Z - Z.mean(0)) / Z.std(0)
    assert _lingam_order(Z, ["z", "y", "x"]) == ["x", "y", "z"]


def test_a_learned_graph_with_a_cycle_within_a_step_is_refused_by_fit_with_the_cycle_named(tmp_path, capsys):
    # An engineer edits the proposal and closes a loop at station 2: fit must refuse the
    # file before fitting, naming the cycle, not fit a graph the model cannot solve.
    paths = LINE.write(tmp_path / "line", 40, seed=8)
    hist = tmp_path / "hist.parquet"
    LINE.step_data(40, seed=8, process=parse_process(LINE.process_toml(), "line.toml")).to_parquet(hist)
    edits = tmp_path / "learned.toml"
    edits.write_text("\n".join(
        f'[[add_edge]]\nstep = 3\nsource = "{a}"\ntarget = "{b}"\nwithin = true\n'
        for a, b in (("st2_m1", "st2_m2"), ("st2_m2", "st2_m4"), ("st2_m4", "st2_m1"))), "utf-8")
    capsys.readouterr()
    assert main(["fit", "--data", str(hist), "--process", str(paths["process"]), "--edits", str(edits),
                 "--out", str(tmp_path / "m"), "--method", "advi", "--quiet", "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    assert "cycle within step 3: st2_m1 -> st2_m2 -> st2_m4 -> st2_m1" in err
    assert not (tmp_path / "m").exists()
