"""Calibration on the small plant: known physics recovered, unmoved levers reported
uninformed, the planted difference found, structure refused, the CLI's JSON contract.

Tiny budgets (a few dozen design points, short NUTS chains); the statistical check
with the full budget is marked ``slow``.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recovery.calibration import (CalibrationConfig, CalibrationError, PhysicsPosterior,
                                  calibrate)
from simulators.definition import load_process, parse_process
from simulators.process import Simulator

PLANTS = Path(__file__).resolve().parents[3] / "examples" / "plants"
TINY = CalibrationConfig(design_points=60, rounds=3, extra_rounds=1, bootstrap=200, draws=300,
                         tune=300, check_draws=4)


def _history(plant, n, seed, *, fix_lever=None):
    sim = Simulator(plant)
    rng = np.random.default_rng(seed)
    plans = sim.exploration_plans(n, 0.3, rng)
    if fix_lever is not None:
        j = plant.lever_index[fix_lever]
        plans[:, j] = plant.levers[j].nominal
    return sim.simulate(n, rng, plan=plans).observations


def _truth(plant, post):
    return {k: plant.step(k[0]).params[k[1]] for k in post.keys}


@pytest.fixture(scope="module")
def planted():
    """The small plant with a die that draws 0.02 mm more (not an uncertain parameter)."""
    text = (PLANTS / "small_plant.toml").read_text()
    old = "params = { reduction = 0.5, sigma = 0.002, batch_sigma = 0.002 }"
    assert old in text
    plant = parse_process(text.replace(old, old.replace("0.5,", "0.52,")), "planted.toml")
    post = calibrate(_history(plant, 400, 11), load_process("small"), seed=0, config=TINY)
    return plant, post


@pytest.fixture(scope="module")
def unmoved():
    """The small plant's history in which nobody ever moved the temper temperature."""
    plant = load_process(PLANTS / "small_plant.toml")
    hist = _history(plant, 400, 12, fix_lever="temper_temperature")
    return plant, hist, calibrate(hist, load_process("small"), seed=1, config=TINY)


def test_calibration_recovers_the_small_plant(planted):
    plant, post = planted
    base = load_process("small")
    assert post.converged and post.method == "surrogate-nuts"
    assert post.keys == tuple(u.key for u in base.uncertain)
    truth = _truth(plant, post)
    by = {(p.step, p.param): p for p in post.parameters}
    informed = [p for p in post.parameters if p.informed]
    assert len(informed) >= 4
    covered = [p.low <= truth[(p.step, p.param)] <= p.high for p in informed]
    assert sum(covered) >= len(informed) - 1
    # the bath's efficiency (x0.85) and polishing per pass (x1.2): learned, not the file's value
    for key in [(10, "efficiency"), (11, "per_pass")]:
        p = by[key]
        assert p.informed and not p.low <= p.file_value <= p.high
        assert abs(p.mean - truth[key]) < 0.3 * abs(p.file_value - truth[key])
    assert post.draws.shape == (TINY.draws * TINY.chains, len(post.keys))
    assert post.diagnostics["rhat_max"] < 1.05


def test_predictive_checks_name_the_planted_difference(planted):
    _, post = planted
    assert post.failed_checks() == ((3, "diameter"),)
    bad = next(c for c in post.checks if not c.ok)
    assert "level differs" in bad.detail
    assert len(post.checks) == 11      # every inspection x characteristic gauged


def test_an_unmoved_lever_cannot_inform_its_sensitivity(unmoved):
    plant, _, post = unmoved
    by = {(p.step, p.param): p for p in post.parameters}
    p = by[(7, "temperature_scale")]
    assert not p.informed
    assert "never moved" in post.diagnostics["uninformed"]["step 7 temperature_scale"]
    assert "temper_temperature" not in post.diagnostics["levers_moved"]
    # the temper's level at the nominal temperature is still learned
    assert by[(7, "drop")].informed
    assert by[(7, "drop")].low <= plant.step(7).params["drop"] <= by[(7, "drop")].high


def test_a_plant_without_a_planted_difference_passes_every_check(unmoved):
    _, _, post = unmoved
    assert post.failed_checks() == (), [c.detail for c in post.checks if not c.ok]


def test_since_keeps_a_window_of_production_days(unmoved):
    _, hist, _ = unmoved
    cfg = CalibrationConfig(design_points=30, rounds=1, extra_rounds=0, bootstrap=50, draws=50,
                            tune=50, check_draws=2)
    post = calibrate(hist, load_process("small"), seed=0, config=cfg, since=50.0)
    n = post.diagnostics["n_batches"]
    assert post.diagnostics["since"] == 50.0 and 150 <= n <= 250
    with pytest.raises(CalibrationError, match="no complete batch from production day 1000"):
        calibrate(hist, load_process("small"), config=cfg, since=1000.0)


def test_history_of_another_structure_is_refused():
    small = load_process("small")
    other = Simulator("default").simulate(5, seed=0).observations
    with pytest.raises(CalibrationError, match="does not have the structure of process"):
        calibrate(other, small, config=TINY)
    hist = Simulator(small).simulate(20, seed=0).observations
    no_lever = hist[hist["variable"] != "plating_time"]
    with pytest.raises(CalibrationError, match="no value of lever 'plating_time'"):
        calibrate(no_lever, small, config=TINY)
    no_reading = hist[~((hist["step"] == 6) & (hist["variable"] == "residual_stress"))]
    with pytest.raises(CalibrationError, match="no reading of 'residual_stress' at inspection step 6"):
        calibrate(no_reading, small, config=TINY)


def test_a_process_without_uncertain_parameters_is_refused():
    text = (PLANTS / "small_plant.toml").read_text()
    for kind in ("temper", "plating", "polishing"):
        text = text.replace(f'kind = "{kind}"\n', f'kind = "{kind}"\nuncertain = false\n')
    p = parse_process(text, "none.toml")
    assert p.uncertain == ()
    with pytest.raises(CalibrationError, match="no uncertain parameter"):
        calibrate(Simulator(p).simulate(20, seed=0).observations, p, config=TINY)


def test_cli_json_contract_and_saved_calibration(tmp_path, capsys, monkeypatch, unmoved):
    import recovery.calibration as cal
    from recovery.cli import main

    _, hist, _ = unmoved
    data = tmp_path / "hist.parquet"
    hist.to_parquet(data)
    real = cal.calibrate
    monkeypatch.setattr(cal, "calibrate", lambda *a, **kw: real(*a, **kw, config=TINY))
    rc = main(["calibrate", "--data", str(data), "--out", str(tmp_path / "cal"), "--process",
               "small", "--seed", "3", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["converged"] is True
    assert {"process", "method", "converged", "seconds", "parameters", "checks"} <= set(doc)
    assert doc["process"]["name"] == "small-chromed-rod" and doc["method"] == "surrogate-nuts"
    assert [(p["step"], p["param"]) for p in doc["parameters"]] == [
        (u.step, u.param) for u in load_process("small").uncertain]
    for p in doc["parameters"]:
        assert {"step", "param", "file_value", "mean", "low", "high", "informed"} <= set(p)
        assert p["low"] <= p["mean"] <= p["high"] and isinstance(p["informed"], bool)
    for c in doc["checks"]:
        assert set(c) == {"step", "characteristic", "ok", "detail"}
    saved = PhysicsPosterior.load(tmp_path / "cal")
    saved.check_process(load_process("small"))
    assert saved.converged and saved.n_draws == TINY.draws * TINY.chains


def test_cli_reads_a_campaign_folder_like_one_file(tmp_path, capsys, monkeypatch, unmoved):
    """A folder of Parquet parts (a campaign) calibrates to the same posterior as the
    same rows in one file, for the same seed."""
    import recovery.calibration as cal
    from recovery.cli import main

    _, hist, _ = unmoved
    one = tmp_path / "hist.parquet"
    hist.to_parquet(one)
    folder = tmp_path / "campaign"
    folder.mkdir()
    ids = hist["batch_id"].astype(str).unique()
    for i, part in enumerate(np.array_split(ids, 3)):
        hist[hist["batch_id"].astype(str).isin(part)].to_parquet(folder / f"part-{i}.parquet")
    real = cal.calibrate
    monkeypatch.setattr(cal, "calibrate", lambda *a, **kw: real(*a, **kw, config=TINY))
    for data, out in ((one, "a"), (folder, "b")):
        assert main(["calibrate", "--data", str(data), "--out", str(tmp_path / out), "--process", "small",
                     "--seed", "2", "--json"]) == 0
        capsys.readouterr()
    a, b = PhysicsPosterior.load(tmp_path / "a"), PhysicsPosterior.load(tmp_path / "b")
    assert a.diagnostics["n_batches"] == b.diagnostics["n_batches"] == len(ids)
    np.testing.assert_allclose(a.draws, b.draws)


def test_cli_refuses_a_mismatched_history(tmp_path, capsys):
    from recovery.cli import main

    data = tmp_path / "hist.parquet"
    Simulator("default").simulate(5, seed=0).observations.to_parquet(data)
    rc = main(["calibrate", "--data", str(data), "--out", str(tmp_path / "cal"), "--process", "small"])
    assert rc == 2
    assert "does not have the structure of process 'small-chromed-rod'" in capsys.readouterr().err
    assert not (tmp_path / "cal").exists()


def test_not_converged_is_reported_and_not_saved_as_good(tmp_path, capsys, monkeypatch, unmoved):
    import recovery.calibration as cal
    from recovery.cli import main

    _, hist, _ = unmoved
    data = tmp_path / "hist.parquet"
    hist.to_parquet(data)
    # One design round in the prior's whole box and a sampler that cannot adapt:
    # the posterior reaches past the emulator's box and the chains disagree.
    bad = CalibrationConfig(design_points=12, rounds=1, extra_rounds=0, bootstrap=50, draws=20,
                            tune=5, check_draws=2, min_ess=1000.0)
    real = cal.calibrate
    monkeypatch.setattr(cal, "calibrate", lambda *a, **kw: real(*a, **kw, config=bad))
    rc = main(["calibrate", "--data", str(data), "--out", str(tmp_path / "cal"), "--process",
               "small", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["converged"] is False
    assert doc["diagnostics"]["ess_bulk_min"] < 1000.0
    assert not PhysicsPosterior.exists(tmp_path / "cal")
    assert PhysicsPosterior.load(tmp_path / "cal" / "not-converged").converged is False


def test_same_seed_same_posterior_on_a_cluster():
    plant = load_process(PLANTS / "small_plant.toml")
    hist = _history(plant, 150, 5)
    cfg = CalibrationConfig(design_points=20, rounds=2, extra_rounds=0, bootstrap=50, draws=50,
                            tune=50, check_draws=2, chunk=7)
    a = calibrate(hist, load_process("small"), seed=4, config=cfg)
    b = calibrate(hist, load_process("small"), seed=4, config=cfg, cluster="local:1")
    assert np.array_equal(a.draws, b.draws)
    assert a.checks == b.checks


@pytest.mark.slow
def test_full_budget_covers_the_small_plant():
    plant = load_process(PLANTS / "small_plant.toml")
    post = calibrate(_history(plant, 1000, 21), load_process("small"), seed=2)
    truth = _truth(plant, post)
    informed = [p for p in post.parameters if p.informed]
    assert post.converged and len(informed) == 5
    assert all(p.low <= truth[(p.step, p.param)] <= p.high for p in informed)
    assert post.failed_checks() == ()
