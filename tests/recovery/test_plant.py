"""A plant that differs from the process file: the world runs on the plant, the agents only
know the file, and the planner can plan with calibrated physics instead of the file's."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from recovery.agents import make_agent
from recovery.agents.base import Agent, Proposal
from recovery.calibration.posterior import PredictiveCheck, from_values
from recovery.cli import main
from recovery.evaluate import evaluate_agents, flagged_cases, physics_difference, situation_for
from simulators.definition import load_process
from simulators.process import Simulator

PLANTS = Path(__file__).resolve().parents[2] / "examples" / "plants"
SMALL_PLANT = PLANTS / "small_plant.toml"


@pytest.fixture(scope="module")
def file_and_plant():
    return load_process("small"), load_process(SMALL_PLANT)


class Recorder(Agent):
    """The heuristic, recording what it is shown."""

    name = "heuristic"

    def __init__(self, process):
        from recovery.agents.baselines import HeuristicAgent
        self.inner = HeuristicAgent(process)
        self.seen = []

    def _propose(self, situation, seed):
        self.seen.append(situation)
        return self.inner._propose(situation, seed)


def test_the_plant_changes_the_world_but_not_what_the_agents_see(file_and_plant):
    process, plant = file_and_plant
    results, seen = {}, {}
    for world in (process, plant):
        rec = Recorder(process)
        sim = Simulator(world)
        oracle = make_agent("oracle", sim, budget="tiny", process=process)
        results[world.digest] = evaluate_agents(sim, [rec, oracle], 120, seed=3, process=process)
        seen[world.digest] = rec.seen
        assert oracle.search.sim.process is world           # the oracle alone plans with the world
    for sits in seen.values():
        assert sits and all(s.process is process for s in sits)  # the agents are shown the file only
    # same agent, same seed, another world: other outcomes
    rate = {d: r["agents"]["heuristic"]["recovery_rate"] for d, r in results.items()}
    assert rate[process.digest] != rate[plant.digest]


def test_the_heuristic_keeps_the_files_sensitivities_whatever_the_world(file_and_plant):
    process, plant = file_and_plant
    a = make_agent("heuristic", Simulator(plant), process=process)
    b = make_agent("heuristic", Simulator(process))
    cases, _ = flagged_cases(Simulator(process), 80, 2)
    c = cases[0]
    sit = situation_for(Simulator(plant), c, c.detect_step, c.obs, process.nominal_plan(), c.state,
                        truth=False, process=process)
    assert sit.process is process
    np.testing.assert_array_equal(a.propose(sit, 0).plan, b.propose(sit, 0).plan)


def _cli(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_evaluate_with_a_plant_reports_both_and_refuses_another_structure(capsys, file_and_plant):
    process, plant = file_and_plant
    base = ["evaluate", "--batches", "120", "--seed", "3", "--process", "small", "--agents",
            "none,heuristic", "--budget", "tiny", "--quiet", "--json"]
    rc, out, _ = _cli(base + ["--plant", str(SMALL_PLANT)], capsys)
    assert rc == 0
    res = json.loads(out)
    assert res["plant"] == {"name": plant.name, "digest": plant.digest, "path": str(SMALL_PLANT)}
    assert res["process"]["digest"] == process.digest and res["process"]["path"] == "small"
    rc, out, _ = _cli(base, capsys)
    same = json.loads(out)
    assert same["plant"] == same["process"]
    assert same["agents"]["heuristic"]["recovery_rate"] != res["agents"]["heuristic"]["recovery_rate"]
    # the tables name the plant and the process
    rc, out, _ = _cli(base[:-1] + ["--plant", str(SMALL_PLANT)], capsys)
    assert rc == 0 and f"plant        {plant.name} ({SMALL_PLANT}" in out and "what the agents know" in out
    # another structure: a clear error naming the first difference, non-zero exit
    rc, _, err = _cli(base + ["--plant", str(PLANTS / "plant_b_hot_bath.toml")], capsys)
    assert rc == 2 and "first difference: bars_per_batch: 20" in err


def test_simulate_with_a_plant_runs_its_physics(tmp_path, capsys, file_and_plant):
    import pandas as pd

    from simulators.schema import validate

    process, plant = file_and_plant
    a, b = tmp_path / "file.parquet", tmp_path / "plant.parquet"
    assert main(["simulate", "--batches", "30", "--seed", "1", "--out", str(a), "--process", "small",
                 "--quiet"]) == 0
    assert main(["simulate", "--batches", "30", "--seed", "1", "--out", str(b), "--process", "small",
                 "--plant", str(SMALL_PLANT), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"plant        {SMALL_PLANT} (digest {plant.digest})" in text
    fa, fb = pd.read_parquet(a), pd.read_parquet(b)
    validate(fb, process)                                     # step data of the file's structure
    assert fa[["batch_id", "step", "variable"]].equals(fb[["batch_id", "step", "variable"]])
    assert not np.allclose(fa["value"], fb["value"])           # other physics, other readings
    assert main(["simulate", "--batches", "3", "--seed", "1", "--out", str(b), "--process", "small",
                 "--plant", str(PLANTS / "plant_a_soft_rolls.toml"), "--quiet"]) == 2


# ---- the planner with calibrated physics ------------------------------------------

@pytest.fixture(scope="module")
def flagged(file_and_plant):
    process, _ = file_and_plant
    sim = Simulator(process)
    cases, _ = flagged_cases(sim, 120, 5)
    c = cases[0]
    return situation_for(sim, c, c.detect_step, c.obs, process.nominal_plan(), c.state, truth=False)


def _healthy_history(process):
    """A healthy batch's step data up to its second inspection."""
    from simulators.schema import observations_frame

    sim = Simulator(process)
    res = sim.simulate(1, 7, faults=False)
    return observations_frame(process, res.conditions, res.obs, res.plan, upto_step=process.inspection_steps[1])


def test_rollouts_use_the_posteriors_physics(small_model, flagged, file_and_plant):
    from recovery.agents.planner_agent import PlannerAgent
    from recovery.agents.rollouts import posterior_bars, rollout_objective

    model, _ = small_model
    process, plant = file_and_plant
    truth = physics_difference(process, plant)
    perfect = PlannerAgent(model, budget="tiny", posterior=from_values(process, [truth]))
    plain = PlannerAgent(model, budget="tiny")
    assert perfect.calibrated and not plain.calibrated
    n, seed = 48, 4
    nothing = process.nominal_plan()[None]
    healthy = _healthy_history(process)
    pa = {}
    for name, agent in (("file", plain), ("plant", perfect)):
        bars = posterior_bars(agent.sim, model, healthy, n, seed=seed, params=agent.physics_draws(n, seed))
        pa[name] = float(rollout_objective(agent.sim, bars, seed=seed)(nothing)[1][0])
    # the plant accepts far fewer healthy batches than the file (0.26 against 0.99,
    # examples/plants/README.md): so does the planner's P(accept) with the plant's physics
    assert pa["file"] > 0.8 and pa["plant"] < pa["file"] - 0.3
    # and the proposal says which physics it planned with
    prop = perfect.propose(flagged, seed=1)
    assert prop.extra["calibrated"] is True and plain.propose(flagged, seed=1).extra["calibrated"] is False


def test_a_two_point_posterior_splits_the_rollouts(small_model, flagged, file_and_plant):
    from recovery.agents.planner_agent import PlannerAgent
    from recovery.agents.rollouts import posterior_bars

    model, _ = small_model
    process, plant = file_and_plant
    truth = physics_difference(process, plant)
    file_values = {k: process.step(k[0]).params[k[1]] for k in truth}
    agent = PlannerAgent(model, budget="tiny", posterior=from_values(process, [file_values, truth]))
    n, seed = 40, 2
    phys = agent.physics_draws(n, seed)
    sim = agent.sim
    is_plant = np.array([np.array_equal(x, Simulator(plant).arrays.params) for x in phys])
    is_file = np.array([np.array_equal(x, sim.arrays.params) for x in phys])
    assert (is_plant | is_file).all() and 10 <= is_plant.sum() <= 30
    # each rollout ran with its own draw: rollout i equals rollout i of the simulator of that physics
    bars = posterior_bars(sim, model, flagged.history, n, seed=seed, params=phys)
    plans = process.nominal_plan()[None]
    mixed = sim.rollout(bars.state, bars.step, plans, n, seed, bars.conditions, params=phys)[0]
    on_file = sim.rollout(bars.state, bars.step, plans, n, seed, bars.conditions)[0]
    on_plant = Simulator(plant).rollout(bars.state, bars.step, plans, n, seed, bars.conditions)[0]
    np.testing.assert_array_equal(mixed[is_file], on_file[is_file])
    np.testing.assert_array_equal(mixed[is_plant], on_plant[is_plant])
    assert not np.array_equal(on_file, on_plant)


def test_recommend_says_which_physics_and_flags_failed_checks(small_model, flagged, file_and_plant):
    from recovery.recommend import recommend

    model, _ = small_model
    process, plant = file_and_plant
    post = from_values(process, [physics_difference(process, plant)])
    plain = recommend(flagged.history, model, seed=0, n_draws=50,
                      agent=make_agent("planner", Simulator(process), model=model, budget="tiny"))
    assert plain.physics == "file" and plain.to_dict()["physics"] == "file" and not plain.failed_checks
    last = process.n_steps
    chars = [c.name for c in process.characteristics]
    bad = dataclasses.replace(post, checks=tuple(PredictiveCheck(last, c, False, "outside 94%") for c in chars)
                              + (PredictiveCheck(1, chars[0], False, "behind the batch"),))
    agent = make_agent("planner", Simulator(process), model=model, budget="tiny", posterior=bad)
    rec = recommend(flagged.history, model, seed=0, n_draws=50, agent=agent, posterior=bad)
    assert rec.physics == "calibrated"
    assert rec.out_of_range and rec.failed_checks and all(s == last for s, _ in rec.failed_checks)
    assert any("failed predictive check" in r for r in rec.reasons)
    assert rec.to_dict()["failed_checks"][0]["step"] == last
    # checks that pass mark nothing
    good = dataclasses.replace(post, checks=tuple(PredictiveCheck(last, c, True, "") for c in chars))
    ok = recommend(flagged.history, model, seed=0, n_draws=50, posterior=good,
                   agent=make_agent("planner", Simulator(process), model=model, budget="tiny", posterior=good))
    assert not ok.failed_checks


# ---- rl on the calibrated physics ---------------------------------------------------

def test_rl_trains_on_physics_drawn_from_the_posterior(file_and_plant):
    from recovery.agents.rl import training_simulators

    process, plant = file_and_plant
    truth = physics_difference(process, plant)
    file_values = {k: process.step(k[0]).params[k[1]] for k in truth}
    post = from_values(process, [file_values, truth])
    sims = training_simulators(process, seed=0, variants=4, posterior=post, physics_draws=16)
    assert len(sims) == 16
    kinds = [np.array_equal(s.arrays.params, Simulator(plant).arrays.params) for s in sims]
    files = [np.array_equal(s.arrays.params, Simulator(process).arrays.params) for s in sims]
    assert all(a or b for a, b in zip(kinds, files)) and any(kinds) and any(files)
    # partners and factories still vary around the file's, as without a posterior
    assert len({s.process.partners[0].offset for s in sims}) > 1
    plain = training_simulators(process, seed=0, variants=4)
    assert all(np.array_equal(s.arrays.params, Simulator(process).arrays.params) for s in plain)


def test_train_rl_with_a_model_folder_uses_its_calibration(small_model, tmp_path, capsys, file_and_plant):
    import shutil

    from recovery.agents.rl import load_policy
    from recovery.pipeline import CALIBRATION

    _, saved = small_model
    process, plant = file_and_plant
    d = tmp_path / "model"
    shutil.copytree(saved, d)
    args = ["train-rl", "--model", str(d), "--timesteps", "64", "--quiet", "--seed", "1"]
    assert main(args + ["--out", str(tmp_path / "p0")]) == 0
    assert "holds no calibration" in capsys.readouterr().out
    assert load_policy(tmp_path / "p0").physics == "file"
    from_values(process, [physics_difference(process, plant)]).save(d / CALIBRATION)
    assert main(args + ["--out", str(tmp_path / "p1")]) == 0
    assert "with calibration (64 draws) physics" in capsys.readouterr().out
    assert load_policy(tmp_path / "p1").physics == "calibration (64 draws)"


# ---- the calibration in the model folder ------------------------------------------

def test_fit_calibrates_into_the_model_folder_or_says_it_cannot(tmp_path, capsys, monkeypatch, file_and_plant):
    """Only the plumbing: ``calibrate`` is replaced by one that returns the plant's values."""
    import recovery.calibration as calibration
    from recovery.calibration import PhysicsPosterior

    process, plant = file_and_plant
    data = tmp_path / "hist.parquet"
    Simulator(plant).simulate(40, 4, explore=0.3).observations.to_parquet(data)
    fit = ["fit", "--data", str(data), "--process", "small", "--method", "advi", "--advi-steps", "200",
           "--draws", "20", "--quiet"]
    calls = []

    def fake(history, proc, *, seed=0, config=None, cluster=None, since=None):
        calls.append((len(history), proc.digest, seed))
        return from_values(proc, [physics_difference(proc, plant)])

    monkeypatch.setattr(calibration, "calibrate", fake, raising=False)
    assert main(fit + ["--out", str(tmp_path / "m1"), "--seed", "3"]) == 0
    assert "calibration  given, 1 draws of 5 physics parameters" in capsys.readouterr().out
    assert calls == [(len(__import__("pandas").read_parquet(data)), process.digest, 3)]
    back = PhysicsPosterior.load(tmp_path / "m1" / "calibration")
    assert back.values(0) == physics_difference(process, plant)
    assert main(fit + ["--out", str(tmp_path / "m2"), "--no-calibrate"]) == 0
    assert len(calls) == 1 and not (tmp_path / "m2" / "calibration").exists()
    # a version without calibrate: fit goes on and says so
    import io

    from recovery.pipeline import calibrate_into
    monkeypatch.delattr(calibration, "calibrate")
    log = io.StringIO()
    assert calibrate_into(None, process, tmp_path / "m3", seed=0, log=log) is None
    assert "calibration  skipped" in log.getvalue() and not (tmp_path / "m3").exists()
    # one that did not converge is kept apart and never planned with
    monkeypatch.setattr(calibration, "calibrate", lambda history, proc, **kw: dataclasses.replace(
        from_values(proc, [physics_difference(proc, plant)]), converged=False), raising=False)
    log = io.StringIO()
    assert calibrate_into(None, process, tmp_path / "m4", seed=0, log=log) is None
    assert "NOT converged" in log.getvalue()
    assert not (tmp_path / "m4" / "calibration").exists()
    assert PhysicsPosterior.exists(tmp_path / "m4" / "calibration-not-converged")


def test_evaluate_and_recommend_pick_the_calibration_up_from_the_model_folder(small_model, tmp_path, capsys,
                                                                             file_and_plant):
    import shutil

    from recovery.pipeline import CALIBRATION

    _, saved = small_model
    process, plant = file_and_plant
    d = tmp_path / "model"
    shutil.copytree(saved, d)
    from_values(process, [physics_difference(process, plant)]).save(d / CALIBRATION)
    ev = ["evaluate", "--batches", "40", "--seed", "5", "--process", "small", "--plant", str(SMALL_PLANT),
          "--model", str(d), "--agents", "planner", "--budget", "tiny", "--quiet", "--json"]
    assert main(ev) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] is True
    assert main(ev + ["--no-calibrate"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] is False
    # recommend, on a flagged batch's history
    sim = Simulator(process)
    cases, _ = flagged_cases(sim, 120, 5)
    c = cases[0]
    hist = tmp_path / "b.parquet"
    situation_for(sim, c, c.detect_step, c.obs, process.nominal_plan(), c.state, truth=False).history.to_parquet(hist)
    assert main(["recommend", "--model", str(d), "--history", str(hist), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["physics"] == "calibrated"
    assert main(["recommend", "--model", str(d), "--history", str(hist)]) == 0
    assert "plans use calibrated physics" in capsys.readouterr().out


def test_the_service_plans_with_the_calibration_in_its_model_folder(small_model, tmp_path, file_and_plant):
    import shutil

    from recovery.pipeline import CALIBRATION
    from recovery.service.app import Service
    from tests.recovery.service.conftest import build_world

    _, saved = small_model
    process, plant = file_and_plant
    url, data_dir, _ = build_world(tmp_path, batches=[(1, "worn_drawing_die")], token_spec=())
    with_cal = tmp_path / "model"
    shutil.copytree(saved, with_cal)
    from_values(process, [physics_difference(process, plant)]).save(with_cal / CALIBRATION)
    physics = {}
    for name, d in (("plain", saved), ("calibrated", with_cal)):
        svc = Service(url, d, data_dir=data_dir / name)
        assert (svc.posterior is not None) == (name == "calibrated")
        physics[name] = svc.assess("B-1").rec.physics
    assert physics == {"plain": "file", "calibrated": "calibrated"}
