"""Generated test lines (issue 22): a known DAG, seeded, written as a partner would."""

import json

import numpy as np
import pandas as pd

from simulators.definition import load_process
from simulators.lines import NONLINEAR, main, make_line


def test_same_seed_same_line_and_parts():
    a, b = make_line(stations=4, chars_per_station=(2, 4), seed=9), make_line(stations=4, chars_per_station=(2, 4), seed=9)
    assert a.edges == b.edges and a.stations == b.stations
    pd.testing.assert_frame_equal(a.parts(30, seed=1), b.parts(30, seed=1))
    assert not a.parts(30, seed=1).equals(a.parts(30, seed=2))
    assert make_line(stations=4, chars_per_station=(2, 4), seed=10).edges != a.edges


def test_edges_never_point_back_in_time_and_cover_every_kind():
    line = make_line(stations=6, chars_per_station=5, p_within=0.5, p_across=0.2, nonlinear_share=0.3, seed=2)
    order = {c: i for i, c in enumerate(line.characteristics)}
    for e in line.edges:
        assert order[e.source] < order[e.target]
        assert e.within == (line.station_of(e.source) == line.station_of(e.target))
        assert 0 <= line.station_of(e.target) - line.station_of(e.source) <= 2   # reach
    kinds = {(e.within, e.nonlinear) for e in line.edges}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}


def test_deviations_follow_the_structural_equations():
    line = make_line(stations=3, chars_per_station=3, p_within=0.6, p_across=0.3, nonlinear_share=0.3, seed=5)
    x = line.deviations(40_000, seed=1)
    for c in line.characteristics:
        parents = [e for e in line.edges if e.target == c]
        if not parents:
            assert abs(x[c].std() - 1.0) < 0.03
            continue
        cols = [x[e.source] + NONLINEAR * (x[e.source] ** 2 - 1) if e.nonlinear else x[e.source] for e in parents]
        X = np.column_stack(cols + [np.ones(len(x))])
        w, *_ = np.linalg.lstsq(X, x[c].to_numpy(), rcond=None)
        np.testing.assert_allclose(w[:-1], [e.weight for e in parents], atol=0.03)
    shifted = line.deviations(40_000, seed=1, shift={line.characteristics[0]: 3.0})
    assert abs((shifted - x)[line.characteristics[0]].mean() - 3.0) < 1e-9


def test_written_files_load_and_hold_the_truth(tmp_path):
    assert main(["--out", str(tmp_path), "--stations", "3", "--chars", "2", "--parts", "40", "--seed", "3"]) == 0
    p = load_process(tmp_path / "line.toml")
    line = make_line(stations=3, chars_per_station=2, seed=3)
    assert [c.name for c in p.characteristics] == list(line.characteristics)
    assert [s.kind for s in p.steps] == ["station", "inspection"] * 3
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [(e["from"], e["to"]) for e in truth["edges"]] == [(e.source, e.target) for e in line.edges]
    csv = pd.read_csv(tmp_path / "parts.csv", sep=";", decimal=",")
    assert len(csv) == 40 and list(csv.columns[:2]) == ["part", "time"]
    lo, hi = p.final_bands()
    inside = ((csv.iloc[:, 2:].to_numpy() >= lo) & (csv.iloc[:, 2:].to_numpy() <= hi)).mean()
    assert inside > 0.99        # bands at +-4 sd of each characteristic's spread
    df = line.step_data(5, seed=4, process=p)
    assert set(df["step"]) == {2, 4, 6} and df["batch_id"].nunique() == 5


def test_laplace_noise_keeps_the_structure_and_unit_variance_but_not_the_shape():
    from scipy.stats import kurtosis

    g = make_line(stations=3, chars_per_station=3, p_within=0.6, p_across=0.3, seed=5)
    lap = make_line(stations=3, chars_per_station=3, p_within=0.6, p_across=0.3, seed=5, noise="laplace")
    assert lap.edges == g.edges and lap.noise == "laplace" and lap.truth()["noise"] == "laplace"
    assert "noise" not in g.truth()        # the Gaussian truth files stay as they were
    roots = [c for c in g.characteristics if not any(e.target == c for e in g.edges)]
    xg, xl = g.deviations(40_000, seed=1), lap.deviations(40_000, seed=1)
    for c in roots:
        assert abs(xl[c].std() - 1.0) < 0.03
        assert abs(kurtosis(xl[c]) - 3.0) < 0.4 and abs(kurtosis(xg[c])) < 0.2   # Laplace: excess 3
    try:
        make_line(noise="cauchy")
    except ValueError as exc:
        assert "noise must be 'gaussian' or 'laplace'" in str(exc)
    else:
        raise AssertionError("an unknown noise was accepted")
