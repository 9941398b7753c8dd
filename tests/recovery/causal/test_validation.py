"""The ground-truth checks behind benchmarks/causal_accuracy.py, on small budgets."""

import numpy as np
import pytest

from recovery.causal.validation import calibration, hdi_contains, parameter_coverage, root_cause_accuracy
from simulators.process import Simulator

pytestmark = pytest.mark.filterwarnings("ignore")


def test_hdi_contains():
    x = np.random.default_rng(0).normal(size=4000)
    assert hdi_contains(x, 0.0) and hdi_contains(x, 1.6)
    assert not hdi_contains(x, 2.3) and not hdi_contains(x, -2.3)


def test_checks_on_the_small_model(small_model):
    model, _ = small_model
    sim = Simulator("small")
    par = parameter_coverage(model, sim, 400, 7)
    assert par["n"] == len(par["items"]) > 30
    assert par["coverage"] >= 0.7
    assert {"mean", "lever", "drift", "bar_sd"} <= set(par["by_group"])
    rc = root_cause_accuracy(model, sim, 80, 8)
    assert rc["n_flagged"] > 10 and rc["top3"] >= 0.9
    cal = calibration(model, sim, 60, 9, base_rate=0.7)
    assert cal["n"] > 20 and cal["brier"] < cal["brier_naive"]
    # The simulator's P(accept) from the true state is the outcome's expectation:
    # no worse a forecast than the model's, and the bins' rates agree with it.
    assert cal["brier_simulator"] <= cal["brier"] + 0.02
    n = sum(r["n"] for r in cal["bins"])
    exp = sum(r["n"] * r["expected"] for r in cal["bins"]) / n
    obs = sum(r["n"] * r["observed"] for r in cal["bins"]) / n
    assert abs(exp - obs) < 0.1


@pytest.mark.slow
def test_the_default_process_meets_the_accuracy_targets():
    """The issue's targets on 1,000 training batches (NUTS, about 5 minutes): 94% HDIs
    hold the simulated truth for >= 90% of the parameters (the robust posterior; the
    sampler's own draws fall short, which is why the adjustment exists), root cause
    top-1 >= 80% and top-3 >= 95% on flagged batches, and P(accept) within 0.05 of the
    simulator's in every reliability bin with 30 decisions or more."""
    from dataclasses import replace

    from recovery.causal.model import CausalModel, FitConfig
    from simulators.campaign import simulate_chunk

    sim = Simulator("default")
    res = simulate_chunk(sim.process, 1000, 0, 1)
    model = CausalModel(sim.process, config=FitConfig(seed=1)).fit(res.observations, progress=False)
    assert model.report_.converged
    par = parameter_coverage(model, sim, 20000, 101)
    assert par["coverage"] >= 0.9
    th = model.theta_draws(robust=False)
    idx = np.linspace(0, len(th) - 1, model.params_.n_draws).round().astype(int)
    raw = replace(model.layout_.decode(th[idx]), sbar=model.params_.sbar)
    robust = model.params_
    model.params_ = raw
    assert parameter_coverage(model, sim, 20000, 101)["coverage"] < par["coverage"]
    model.params_ = robust
    rc = root_cause_accuracy(model, sim, 1500, 201)
    assert rc["top1"] >= 0.8 and rc["top3"] >= 0.95
    cal = calibration(model, sim, 2000, 301, base_rate=float(res.accepted.mean()))
    assert cal["bins_enough"] >= 3 and cal["max_gap_enough_bins"] <= 0.05
    assert cal["brier"] < cal["brier_naive"] / 4
