"""Batch status and outcome labels (recovery.status): the rules behind the service's batch list."""

from types import SimpleNamespace

import pytest

from recovery.status import ON_TRACK_P, RECOVERABLE_P, STATUSES, batch_status, outcome_label


def _rec(decision, p_plan, p_nothing):
    return SimpleNamespace(decision=decision, p_accept={"mean": p_plan}, p_accept_do_nothing={"mean": p_nothing})


@pytest.mark.parametrize("decision, p_plan, p_nothing, expected", [
    ("scrap", 0.99, 0.99, "scrap recommended"),          # scrap wins whatever the odds
    ("continue", ON_TRACK_P, ON_TRACK_P, "on track"),     # the threshold itself is on track
    ("continue", 0.95, ON_TRACK_P - 1e-9, "at risk"),
    ("intervene", RECOVERABLE_P, 0.1, "recoverable"),
    ("intervene", RECOVERABLE_P - 1e-9, 0.1, "at risk"),
    ("intervene", 0.99, 0.99, "recoverable"),            # an intervention is never "on track"
])
def test_status_of_a_recommendation(decision, p_plan, p_nothing, expected):
    assert batch_status(_rec(decision, p_plan, p_nothing), last_step=6, n_steps=12) == expected


def test_status_without_a_recommendation_depends_on_the_last_step():
    assert batch_status(None, last_step=12, n_steps=12) == "finished"
    assert batch_status(None, last_step=11, n_steps=12) == "at risk"
    assert set(STATUSES) == {"on track", "at risk", "recoverable", "scrap recommended", "finished"}


def test_outcome_is_pending_until_the_final_inspection_then_its_verdict(small_model):
    from simulators.process import Simulator
    from simulators.schema import observations_frame

    model, _ = small_model
    sim = Simulator("small")
    p = sim.process
    seen = set()
    for seed in range(40):         # batches of both verdicts: the label must follow the simulator's flag
        cond = sim.sample_conditions(1, seed, faults=True, first_id=seed + 1)
        res = sim.simulate(1, seed, conditions=cond)
        full = observations_frame(p, cond, res.obs, res.plan)
        b = str(full["batch_id"].iloc[0])
        cut = full[full["step"] < p.n_steps]
        assert outcome_label(model, cut, b) == "pending"
        label = outcome_label(model, full, b)
        assert label == ("rejected" if res.flags[0, -1] else "accepted")
        seen.add(label)
        if seen == {"accepted", "rejected"}:
            break
    assert seen == {"accepted", "rejected"}
