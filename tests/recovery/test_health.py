"""``recovery health`` and :func:`recovery.health.plant_health` on simulated seasons.

The model is fitted (ADVI, tiny budget) on the first half of a season of the
small process; the second half either repeats the first, or has factory FA1
drifting (3 batch sigmas per 100 days) and the furnace fault's rate doubled.
"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recovery.cli import main
from recovery.health import plant_health
from simulators.definition import load_process
from simulators.process import Simulator

N_FIT, N_WINDOW, HALF_DAY = 150, 300, 50.0
FACTORY_KEYS = {"factory", "partner", "characteristic", "offset", "offset_low", "offset_high",
                "drift_per_100d", "drift_low", "drift_high", "changed"}
FAULT_KEYS = {"fault", "step", "rate", "low", "high", "changed"}


def _half(process, n, days, seed, first_id, *, drifting=None, doubled=None):
    if drifting:
        process = replace(process, factories=tuple(replace(f, drift=3.0) if f.id == drifting else f
                                                   for f in process.factories))
    if doubled:
        process = replace(process, faults=tuple(replace(f, rate=2 * f.rate) if f.name == doubled else f
                                                for f in process.faults))
    sim = Simulator(process)
    rng = np.random.default_rng(seed)
    cond = sim.sample_conditions(n, rng, time=days, first_id=first_id)
    return sim.simulate(n, rng, conditions=cond, explore=0.3).observations


@pytest.fixture(scope="module")
def season():
    """(model, first half, second half unchanged, second half with the changes)."""
    from recovery.causal.model import CausalModel, FitConfig

    # the furnace fault at 20% (40% once doubled): a doubling is then visible in 300 batches
    process = load_process("small")
    process = replace(process, faults=tuple(replace(f, rate=0.2 if f.name == "furnace_over_temperature" else 0.08)
                                            for f in process.faults))
    first = _half(process, N_FIT, np.linspace(0, HALF_DAY, N_FIT, endpoint=False), 3, 1)
    later = np.linspace(HALF_DAY, 2 * HALF_DAY, N_WINDOW, endpoint=False)
    same = _half(process, N_WINDOW, later, 10, N_FIT + 1)
    changed = _half(process, N_WINDOW, later, 10, N_FIT + 1, drifting="FA1",
                    doubled="furnace_over_temperature")
    model = CausalModel(process, config=FitConfig(method="advi", advi_steps=1500, draws=100, seed=0)).fit(
        first, progress=False)
    return model, first, same, changed


def test_contract_and_intervals(season):
    model, first, _, changed = season
    rep = plant_health(model, pd.concat([first, changed]), since=HALF_DAY)
    out = json.loads(json.dumps(rep.to_dict()))
    assert out["factories"] and out["faults"]
    for row in out["factories"]:
        assert FACTORY_KEYS <= set(row)
        assert row["offset_low"] <= row["offset"] <= row["offset_high"]
        assert row["drift_low"] <= row["drift_per_100d"] <= row["drift_high"]
        assert isinstance(row["changed"], bool)
    for row in out["faults"]:
        assert FAULT_KEYS <= set(row)
        assert 0.0 <= row["low"] <= row["rate"] <= row["high"] <= 1.0
    assert out["window"] == {"since": HALF_DAY, "until": pytest.approx(2 * HALF_DAY - HALF_DAY / N_WINDOW),
                             "n_batches": N_WINDOW, "n_baseline": N_FIT}
    # units are the characteristic's: a diameter drift of a few micrometres per 100 days is in mm
    fa1 = next(r for r in out["factories"] if r["factory"] == "FA1" and r["characteristic"] == "diameter")
    assert fa1["unit"] == "mm" and abs(fa1["drift_per_100d"]) < 0.1


def test_names_the_drifting_factory_and_the_doubled_fault(season):
    model, first, _, changed = season
    rep = plant_health(model, pd.concat([first, changed]), since=HALF_DAY)
    assert rep.changed_factories == [("FA1", "diameter")]
    assert rep.changed_faults == ["furnace_over_temperature"]
    furnace = next(f for f in rep.faults if f.fault == "furnace_over_temperature")
    assert furnace.window_share > 1.5 * furnace.expected_share


def test_no_alarm_without_change(season):
    model, first, same, _ = season
    rep = plant_health(model, pd.concat([first, same]), since=HALF_DAY)
    assert rep.changed_factories == [] and rep.changed_faults == []
    assert all(f.changed is False for f in rep.factories)


def test_level_test_spread_is_the_mean_innovation_over_the_draws(season):
    # the level test's posterior term: the window's weighted mean innovation under each
    # draw; its mean is the innovation of the posterior means (linear but for A x m)
    from recovery.causal.summaries import summarise
    from recovery.health import _innovations, _mean_innovation_draws

    model, first, same, _ = season
    summ = summarise(pd.concat([first, same]), model.graph_.process)
    e, _ = _innovations(model, summ)
    rng = np.random.default_rng(0)
    spreads = []
    for q in range(model.layout_.Q):
        for c in np.flatnonzero(model.layout_.gauged[q]):
            w = np.isfinite(e[:, q, c]) & (summ.day >= HALF_DAY)
            wt = rng.random(w.sum())
            wt /= wt.sum()
            d = _mean_innovation_draws(model, summ, w, wt, q, c)
            assert d.shape == (model.params_.n_draws,)
            assert d.mean() == pytest.approx(wt @ e[w, q, c], abs=0.02 + 0.02 * abs(wt @ e[w, q, c]))
            spreads.append(d.std())
    assert all(s > 0 for s in spreads)


def test_gate_day_comes_sooner_at_a_lower_gate_level(season):
    model = season[0]
    low = {(f.factory, f.characteristic): f.gate_day for f in plant_health(model, gate_level=0.05).factories}
    high = {(f.factory, f.characteristic): f.gate_day for f in plant_health(model, gate_level=0.5).factories}
    both = [k for k in low if low[k] is not None and high[k] is not None]
    assert both
    assert all(low[k] <= high[k] for k in both)
    with pytest.raises(ValueError, match="gate_level"):
        plant_health(model, gate_level=1.0)


def test_partner_sees_only_its_factories(season):
    model, first, _, changed = season
    p = model.graph_.process
    b_steps = {s.index for s in p.steps if s.partner == "B"}
    rep = plant_health(model, pd.concat([first, changed]), since=HALF_DAY, partner="B")
    assert rep.factories and {f.factory for f in rep.factories} == {"FB1"}
    assert all(f.partner == "B" for f in rep.factories)
    assert all(f.step in b_steps for f in rep.faults)
    assert "furnace_over_temperature" not in {f.fault for f in rep.faults}


def test_empty_window_and_other_process_give_a_valid_report(season):
    model, first, _, _ = season
    rep = plant_health(model, first, since=500.0)
    assert rep.n_window == 0 and "no batch produced on or after day 500" in rep.notes[0]
    assert rep.factories and all(f.changed is None for f in rep.factories)
    other = Simulator("default").simulate(3, 1).observations
    rep = plant_health(model, other)
    assert any("do not match the model's process" in n for n in rep.notes)
    assert all(f.changed is None for f in rep.factories + rep.faults)
    rep = plant_health(model, first.iloc[:0])
    assert rep.n_window == 0 and rep.notes == ("no step data: the change test did not run",)


def test_cli_reads_the_store(season, tmp_path, capsys):
    from recovery.data.ingest import ingest
    from recovery.data.store import open_store

    model, first, _, changed = season
    model.save(tmp_path / "model")
    src = tmp_path / "steps.parquet"
    pd.concat([first, changed]).to_parquet(src, index=False)
    url = f"duckdb://{tmp_path / 'store.duckdb'}"
    with open_store(url) as st:
        assert ingest(src, store=st, process=model.graph_.process, quarantine=tmp_path / "q.csv").rejected == 0
    assert main(["health", "--model", str(tmp_path / "model"), "--store", url, "--since", "50",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["factory"], r["characteristic"]) for r in out["factories"] if r["changed"]] == [("FA1", "diameter")]
    assert main(["health", "--model", str(tmp_path / "model"), "--store", url, "--since", "50",
                 "--partner", "B", "--json"]) == 0
    assert {r["factory"] for r in json.loads(capsys.readouterr().out)["factories"]} == {"FB1"}
    # an empty store: a clear note and an empty window, exit 0
    empty = f"duckdb://{tmp_path / 'empty.duckdb'}"
    assert main(["health", "--model", str(tmp_path / "model"), "--store", empty, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["window"]["n_batches"] == 0 and "holds no step data" in out["notes"][0]
    assert main(["health", "--model", str(tmp_path / "model"), "--gate-level", "1"]) == 2
    assert "--gate-level" in capsys.readouterr().err


def test_light_load_gives_the_full_models_report(season, tmp_path):
    """``recovery health`` reads the model without ArviZ; the draws, the kept
    parameters and the report are those of ``CausalModel.load``."""
    import subprocess
    import sys

    from recovery.causal.errors import ModelLoadError
    from recovery.causal.model import CausalModel
    from recovery.health import load_health_model

    model, first, _, changed = season
    model.save(tmp_path / "model")
    light, full = load_health_model(tmp_path / "model"), CausalModel.load(tmp_path / "model")
    np.testing.assert_array_equal(light.theta_draws(), full.theta_draws())
    for name in ("A", "B", "G", "tau", "m", "sbar", "pi", "tauf"):
        np.testing.assert_array_equal(getattr(light.params_, name), getattr(full.params_, name))
    data = pd.concat([first, changed])
    assert plant_health(light, data, since=HALF_DAY).to_dict() == plant_health(full, data, since=HALF_DAY).to_dict()
    # the health path imports neither ArviZ nor the estimator
    code = ("import sys; from recovery.health import load_health_model, plant_health; "
            f"plant_health(load_health_model({str(tmp_path / 'model')!r})); "
            "print(sorted(m for m in ('arviz', 'xarray', 'pymc', 'recovery.causal.model') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # a posterior of another layout is refused, not misread
    import h5py

    with h5py.File(tmp_path / "model" / "posterior.nc", "r+") as f:
        del f["posterior"]["theta_robust"]
        del f["posterior"]["theta"]
    with pytest.raises(ModelLoadError, match="cannot read the posterior draws"):
        load_health_model(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_health_model(tmp_path / "nowhere")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_seasons_name_the_change(seed):
    """Two more seasons (``benchmarks/health_seasons.py`` measures 20): each names
    the factory that starts drifting and the fault whose rate doubles, and the
    drifting factory's change p-value is far smaller than on the unchanged season."""
    from recovery.causal.model import CausalModel, FitConfig

    process = load_process("small")
    process = replace(process, faults=tuple(replace(f, rate=0.2 if f.name == "furnace_over_temperature" else 0.08)
                                            for f in process.faults))
    first = _half(process, N_FIT, np.linspace(0, HALF_DAY, N_FIT, endpoint=False), 1000 * seed + 1, 1)
    later = np.linspace(HALF_DAY, 2 * HALF_DAY, N_WINDOW, endpoint=False)
    same = _half(process, N_WINDOW, later, 1000 * seed + 2, N_FIT + 1)
    moved = _half(process, N_WINDOW, later, 1000 * seed + 2, N_FIT + 1, drifting="FA1",
                  doubled="furnace_over_temperature")
    model = CausalModel(process, config=FitConfig(method="advi", advi_steps=1500, draws=200, seed=seed)).fit(
        first, progress=False)
    rep = plant_health(model, pd.concat([first, moved]), since=HALF_DAY)
    quiet = plant_health(model, pd.concat([first, same]), since=HALF_DAY)
    assert ("FA1", "diameter") in rep.changed_factories
    assert "furnace_over_temperature" in rep.changed_faults
    p_moved = next(f.change_p for f in rep.factories if f.factory == "FA1")
    p_same = next(f.change_p for f in quiet.factories if f.factory == "FA1")
    assert p_moved < 1e-6 < p_same
