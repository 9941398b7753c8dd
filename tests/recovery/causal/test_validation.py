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
