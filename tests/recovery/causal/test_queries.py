"""Per-batch queries against the simulator's ground truth."""

import numpy as np
import pandas as pd
import pytest

from recovery.causal.model import DataError
from recovery.evaluate import flagged_cases
from simulators.schema import observations_frame
from tests.recovery.causal.conftest import one_batch


def test_state_intervals_hold_the_true_batch_means(advi_model, small_sim, fresh):
    """The true batch-mean state (the simulator's latent) lies in the 94% HDI."""
    p = small_sim.process
    hits = total = 0
    for b in range(fresh.conditions.n_batches):
        for step in (3, 6, 12):
            st = advi_model.state(one_batch(small_sim, fresh, b, upto_step=step))
            assert st.step == step
            for name, est in st.variables.items():
                true = fresh.latent[b, step, p.char_index[name]]
                hits += est.hdi_low <= true <= est.hdi_high
                total += 1
                assert est.hdi_low <= est.mean <= est.hdi_high
    assert total > 300
    assert hits / total >= 0.85


def test_state_reports_only_identified_characteristics(advi_model, small_sim, fresh):
    st = advi_model.state(one_batch(small_sim, fresh, 0, upto_step=6))
    # gauged at 6: diameter, strength, stress; ovality was gauged at 3 and nothing
    # acts on it between 3 and 6, so its level is known too; coating is not.
    assert set(st.variables) == {"diameter", "ovality", "yield_strength", "residual_stress"}
    assert st.variables["yield_strength"].unit == "MPa"
    d = st.to_dict()
    assert set(d["diameter"]) == {"mean", "hdi_low", "hdi_high", "unit"}


def test_root_cause_finds_the_injected_fault(advi_model, small_sim):
    cases, _ = flagged_cases(small_sim, 400, seed=21)
    assert len(cases) >= 30
    p = small_sim.process
    top1 = top3 = 0
    for c in cases:
        hist = observations_frame(p, c.conditions, c.obs[None], p.nominal_plan()[None], upto_step=c.detect_step)
        rc = advi_model.root_cause(hist)
        probs = [x.probability for x in rc.causes]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-9
        assert rc.flagged and rc.step == c.detect_step
        names = [x.cause for x in rc.causes]
        top1 += names[0] == c.fault
        top3 += c.fault in names[:3]
        best = rc.causes[0]
        if best.cause == c.fault:
            assert best.step == c.fault_step
            assert f"flagged at step {c.detect_step}" in best.path
    assert top1 / len(cases) >= 0.8
    assert top3 / len(cases) >= 0.95


def test_a_batch_with_two_faults_shows_a_shift_in_both_segments(advi_model, small_sim):
    """Worn drawing die (step 2) and furnace over-temperature (step 4) on one batch:
    the mixture's "two or more" component puts a shift in both segments. With one
    shift per batch at most, one of the two would have to pass as batch noise."""
    p = small_sim.process
    cond = small_sim.sample_conditions(6, 3, faults=False, first_id=7)
    for f in p.faults[:2]:
        cond.fault[:, f.step - 1] = f.high
        cond.occurred[:, f.step - 1] = True
    res = small_sim.simulate(6, 3, conditions=cond)
    hist = observations_frame(p, cond, res.obs, res.plan, upto_step=p.inspections[1].step)
    for b in cond.batch_ids:
        fp = advi_model.state(hist, batch=b).fault_probability
        first, second = (fp[p.inspections[q].step] for q in (0, 1))
        assert first > 0.5 and second > 0.5, (b, fp)


def test_root_cause_path_reads_like_an_engineer_wrote_it(advi_model, small_sim):
    cond = small_sim.sample_conditions(1, 5, force_fault="furnace_over_temperature")
    res = small_sim.simulate(1, seed=5, conditions=cond)
    rc = advi_model.root_cause(one_batch(small_sim, res, 0, upto_step=6))
    best = rc.causes[0]
    assert best.cause == "furnace_over_temperature" and best.step == 4
    assert best.path.startswith("step 4 austenitising (FA2, Rod and heat): furnace_over_temperature "
                                "raised yield_strength -> flagged at step 6 inspection after hardening "
                                "(yield_strength")
    assert "out of final band under the nominal plan: yield_strength" in best.path


def test_predict_many_agrees_with_predict_and_with_the_simulator(advi_model, small_sim):
    """A strength fault at step 4: hotter tempering saves the batch. The model's
    ranking of temper temperatures matches the simulator's rollouts."""
    p = small_sim.process
    cond = small_sim.sample_conditions(1, 8, force_fault="furnace_over_temperature")
    st = small_sim.new_state(1)
    obs = small_sim.new_obs(1)
    small_sim.run(st, 0, 6, p.nominal_plan(), cond, 8, obs=obs)
    hist = observations_frame(p, cond, obs, p.nominal_plan()[None], upto_step=6)
    plans = np.tile(p.nominal_plan(), (6, 1))
    plans[:, 0] = [400, 450, 465, 480, 495, 505]
    many = advi_model.predict_many(hist, plans, n_draws=200, seed=3)
    assert many.p_accept.shape == (6,) and many.draws.shape == (6, 200)
    assert (many.low <= many.high).all() and not many.out_of_range.any()
    one = advi_model.predict(hist, plans[3], n_draws=200, seed=3)
    assert one.p_accept == pytest.approx(many.p_accept[3], abs=1e-12)
    truth = small_sim.rollout(st, 6, plans, 400, 9, cond)
    true_p = (truth >= p.acceptance_level - 1e-12).mean(axis=1)
    best = int(np.argmax(many.p_accept))
    assert true_p[best] >= true_p.max() - 0.15      # the model's choice is (nearly) the best
    assert many.p_accept[1] < 0.05 and true_p[1] < 0.05   # nominal: the batch is lost
    assert many.p_accept[best] > 0.3 and true_p[best] > 0.3


def test_plans_and_batches_outside_the_data_are_flagged(advi_model, small_sim, fresh):
    p = small_sim.process
    hist = one_batch(small_sim, fresh, 1, upto_step=6)
    plan = p.nominal_plan()
    plan[1] = 150.0       # grinding allowance far beyond anything in the history
    pr = advi_model.predict(hist, plan)
    assert pr.out_of_range and any("grinding_allowance" in r for r in pr.reasons)
    many = advi_model.predict_many(hist, np.stack([p.nominal_plan(), plan]))
    assert list(many.out_of_range) == [False, True]
    odd = hist.copy()
    odd.loc[odd["variable"] == "diameter", "value"] += 0.5
    st = advi_model.state(odd)
    assert st.out_of_range and any("diameter at step 3" in r for r in st.reasons)


def test_bad_histories_get_clear_errors(advi_model, small_sim, fresh):
    two = pd.concat([one_batch(small_sim, fresh, 0), one_batch(small_sim, fresh, 1)])
    with pytest.raises(DataError, match="holds 2 batches"):
        advi_model.state(two)
    with pytest.raises(DataError, match="not in the history"):
        advi_model.state(two, batch="B-999")
    assert advi_model.state(two, batch="B-2").batch_id == "B-2"
    levers_only = one_batch(small_sim, fresh, 0)
    levers_only = levers_only[levers_only["kind"] != "measurement"]
    with pytest.raises(DataError, match="has no measurement"):
        advi_model.root_cause(levers_only)
    from simulators.process import Simulator

    other = Simulator().simulate(1, seed=2).observations
    with pytest.raises(DataError, match="do not match process"):
        advi_model.predict(other)


def test_queries_are_deterministic(advi_model, small_sim, fresh):
    hist = one_batch(small_sim, fresh, 2, upto_step=6)
    a, b = advi_model.predict(hist, seed=4), advi_model.predict(hist, seed=4)
    assert a.p_accept == b.p_accept and a.final == b.final
    assert advi_model.root_cause(hist).causes == advi_model.root_cause(hist).causes


def test_state_draws_agree_with_the_state_and_hold_the_truth(advi_model, small_sim, fresh):
    """Joint draws: same centre as ``state``, reproducible, and around the true batch means."""
    p = small_sim.process
    hits = total = 0
    for b in range(fresh.conditions.n_batches):
        hist = one_batch(small_sim, fresh, b, upto_step=6)
        d = advi_model.state_draws(hist, 400, seed=4)
        st = advi_model.state(hist)
        assert d.step == 6 and d.values.shape == (400, len(d.names))
        known = {n for n, a in zip(d.names, d.absolute) if a}
        assert known == set(st.variables) - {"crack"}
        for c, name in enumerate(d.names):
            if not d.absolute[c]:
                continue
            est = st.variables[name]
            assert abs(d.values[:, c].mean() - est.mean) <= 0.25 * (est.hdi_high - est.hdi_low) + 1e-12
            lo, hi = np.quantile(d.values[:, c], [0.03, 0.97])
            hits += lo <= fresh.latent[b, 6, p.char_index[name]] <= hi
            total += 1
    assert hits / total >= 0.85
    again = advi_model.state_draws(hist, 400, seed=4)
    np.testing.assert_array_equal(again.values, d.values)
