"""The Optuna planner core and the decision rule, on objectives whose answer is known."""

import numpy as np
import pytest

from recovery.agents.decision import choose_action
from recovery.agents.plan_search import PlannerConfig, optimise_plan
from simulators import load_process

P = load_process("small")
T, G, PT, POL = (P.lever_index[n] for n in ("temper_temperature", "grinding_allowance", "plating_time",
                                           "polish_passes"))


def together(plans):
    """Accepted only when the temper is hot AND the grinding takes 40-60 um more;
    a smooth distance guides the search, as the model planner's does."""
    t, g = plans[:, T], plans[:, G]
    dist = np.maximum(0.0, 480.0 - t) / 50.0 + np.where(t >= 480.0, np.abs(g - 50.0) / 50.0, 1.0)
    ok = (t >= 480.0) & (np.abs(g - 50.0) <= 10.0)
    value = np.where(ok, 1500.0, -400.0) - P.lever_cost(plans)
    return value, ok.astype(float), value - 300.0 * dist


def test_levers_that_only_help_together_are_found_and_the_rest_left_alone():
    r = optimise_plan(P, 6, together, seed=3)
    assert r.p_accept == 1.0
    assert r.plan[T] >= 480.0 and abs(r.plan[G] - 50.0) <= 10.0
    # plating and polishing do nothing here: pruned back to nominal
    nom = P.nominal_plan()
    assert r.plan[PT] == nom[PT] and r.plan[POL] == nom[POL]
    assert P.within_bounds(r.plan)


def test_one_at_a_time_screening_alone_misses_them():
    cfg = PlannerConfig(screen_rounds=1, max_levers=1, n_trials=16, batch_size=8)
    assert optimise_plan(P, 6, together, seed=3, config=cfg).p_accept == 0.0


def test_replanning_from_a_good_plan_barely_moves_it():
    first = optimise_plan(P, 6, together, seed=3)
    again = optimise_plan(P, 6, together, seed=4, start=first.plan)
    assert again.p_accept == 1.0
    assert again.start_value == pytest.approx(first.value)
    assert again.moved < 0.1


def test_past_levers_keep_their_values():
    start = P.nominal_plan()
    start[T] = 470.0
    r = optimise_plan(P, 8, together, seed=3, start=start)   # temper (step 7) is past
    assert r.plan[T] == 470.0 and r.p_accept == 0.0


def test_decide_weighs_the_expected_costs():
    eco = P.economics
    assert choose_action(P, 3, 0.0, 0.9, 40.0).decision == "intervene"
    assert choose_action(P, 3, 0.95, 0.96, 40.0).decision == "continue"   # a tiny gain does not pay the levers
    d = choose_action(P, 9, 0.0, 0.0, 0.0)
    assert d.decision == "scrap"
    assert d.expected_cost["scrap"] == pytest.approx(eco.scrap_cost + eco.batch_value
                                             - eco.processing_cost_per_step * (P.n_steps - 9))
