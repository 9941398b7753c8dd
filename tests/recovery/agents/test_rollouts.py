"""Planner rollouts from posterior draws of a batch's state, against the true state."""

import dataclasses

import numpy as np
import pytest

from recovery.agents.rollouts import accept_interval, posterior_bars, rollout_objective, sample_conflicts
from recovery.evaluate import flagged_cases, situation_for
from simulators.process import Simulator

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def cases():
    sim = Simulator("small")
    cs, _ = flagged_cases(sim, 300, 31)
    assert len(cs) >= 20
    return sim, cs


def test_stacked_states_roll_out_like_one_state_repeated(cases):
    sim, cs = cases
    c = cs[0]
    plans = np.stack([sim.process.nominal_plan()] * 2)
    one = sim.rollout(c.state, c.detect_step, plans, 5, 3, c.conditions)
    stacked = sim.rollout(np.tile(c.state, (5, 1)), c.detect_step, plans, 5, 3, c.conditions)
    np.testing.assert_array_equal(one, stacked)
    with pytest.raises(ValueError, match="state must have shape"):
        sim.rollout(np.tile(c.state, (2, 1)), c.detect_step, plans, 5, 3, c.conditions)


def test_posterior_bars_sit_around_the_true_bars(small_model, cases):
    """The drawn batch means bracket the true ones; rollouts from the draws and from
    the true bars agree on P(accept) of the nominal plan and of a helpful plan."""
    model, _ = small_model
    sim, cs = cases
    p = sim.process
    hits = total = 0
    gaps = []
    for c in cs[:20]:
        sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
        bars = posterior_bars(sim, model, sit.history, 200, seed=2)
        assert bars.step == c.detect_step and bars.state.shape == (200 * p.bars_per_batch, p.n_chars)
        means = bars.state.reshape(200, p.bars_per_batch, p.n_chars).mean(axis=1)
        true = c.state.mean(axis=0)
        for name in ("diameter", "yield_strength"):
            ci = p.char_index[name]
            lo, hi = np.quantile(means[:, ci], [0.01, 0.99])
            hits += lo <= true[ci] <= hi
            total += 1
        objective = rollout_objective(sim, bars, seed=5)
        plans = np.stack([p.nominal_plan(), p.nominal_plan()])
        plans[1, p.lever_index["grinding_allowance"]] = 40.0
        _, pa, _ = objective(plans)
        truth = (sim.rollout(c.state, c.detect_step, plans, 200, 5, c.conditions) >= p.acceptance_level).mean(axis=1)
        gaps.append(np.abs(pa - truth))
    assert hits / total >= 0.85
    assert np.mean(gaps) < 0.15


def test_posterior_bars_are_reproducible(small_model, cases):
    model, _ = small_model
    sim, cs = cases
    p = sim.process
    sit = situation_for(sim, cs[1], cs[1].detect_step, cs[1].obs, p.nominal_plan(), cs[1].state, truth=False)
    a = posterior_bars(sim, model, sit.history, 50, seed=8)
    b = posterior_bars(sim, model, sit.history, 50, seed=8)
    np.testing.assert_array_equal(a.state, b.state)


def test_accept_interval_brackets_the_estimate():
    lo, hi = accept_interval(0.8, 256)
    assert lo < 0.8 < hi and hi - lo < 0.12
    lo, hi = accept_interval(0.0, 256)
    assert lo == 0.0 < hi < 0.02


def _sample(history, step, name):
    m = history[(history["kind"].astype(str) == "measurement") & (history["step"] == step)
                & (history["variable"].astype(str) == name)]
    return m["value"].to_numpy(dtype=float)


def test_sample_conflicts_flag_only_draws_far_from_the_sample(cases):
    sim, cs = cases
    p = sim.process
    c = cs[0]
    sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
    x = _sample(sit.history, c.detect_step, "diameter")
    se = max(x.std(ddof=1), p.characteristic("diameter").gauge_sigma) / np.sqrt(len(x))
    ci = p.char_index["diameter"]
    rng = np.random.default_rng(0)
    near = x.mean() + se * rng.standard_normal(500)
    assert sample_conflicts(p, sit.history, c.detect_step, {ci: near}) == {}
    # drawn means 3 sd (of the difference) away pass, 6 sd away do not
    tight = np.full(500, x.mean())
    assert sample_conflicts(p, sit.history, c.detect_step, {ci: tight + 3 * se}) == {}
    got = sample_conflicts(p, sit.history, c.detect_step, {ci: tight + 6 * se})
    assert list(got) == [ci]
    xbar, se_got, z = got[ci]
    assert xbar == pytest.approx(x.mean()) and se_got == pytest.approx(se) and z == pytest.approx(-6, rel=1e-6)
    # a step without a sample says nothing
    assert sample_conflicts(p, sit.history, c.detect_step + 1, {ci: tight + 6 * se}) == {}


def test_posterior_bars_start_from_the_sample_the_model_contradicts(small_model, cases, monkeypatch):
    """A model whose state sits far from what the last sample reads (its additive lever
    response after a large correction) is overruled for that characteristic only."""
    model, _ = small_model
    sim, cs = cases
    p = sim.process
    c = cs[2]
    sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
    honest = posterior_bars(sim, model, sit.history, 100, seed=4)
    assert honest.from_sample == ()
    real = type(model).state_draws
    ci = p.char_index["diameter"]

    def biased(self, history, n, **kw):
        d = real(self, history, n, **kw)
        v = d.values.copy()
        v[:, d.names.index("diameter")] += 0.5          # mm: far outside the sample
        return dataclasses.replace(d, values=v)

    monkeypatch.setattr(type(model), "state_draws", biased)
    moved = posterior_bars(sim, model, sit.history, 100, seed=4)
    assert len(moved.from_sample) == 1 and moved.from_sample[0].startswith("diameter at step")
    means = moved.state.reshape(100, p.bars_per_batch, p.n_chars).mean(axis=1)
    x = _sample(sit.history, c.detect_step, "diameter")
    assert abs(means[:, ci].mean() - x.mean()) < 0.05 < 0.5
    # the other characteristics keep the model's draws
    other = p.char_index["yield_strength"]
    hm = honest.state.reshape(100, p.bars_per_batch, p.n_chars).mean(axis=1)
    assert abs(means[:, other].mean() - hm[:, other].mean()) < 1e-9


def test_a_miss_at_an_earlier_inspection_keeps_the_rollouts_on_the_samples(small_model, cases, monkeypatch):
    """The model missed diameter's sample at the first inspection only: at the next one its
    draws sit near the sample again, but the rollouts take the sample for diameter."""
    model, _ = small_model
    sim, cs = cases
    p = sim.process
    c = next(x for x in cs if x.detect_step == p.inspection_steps[0])
    plan = p.nominal_plan()
    state, obs = c.state.copy(), c.obs[None].copy()
    nxt = p.inspection_steps[1]
    sim.run(state, c.detect_step, nxt, plan, c.conditions, np.random.default_rng(c.seed), obs=obs)
    sit = situation_for(sim, c, nxt, obs[0], plan, state, truth=False)
    assert len(_sample(sit.history, c.detect_step, "diameter")) >= 3 <= len(_sample(sit.history, nxt, "diameter"))
    honest = posterior_bars(sim, model, sit.history, 100, seed=4)
    assert honest.from_sample == ()
    real = type(model).state_draws

    def wrong_then(self, history, n, **kw):
        d = real(self, history, n, **kw)
        if int(history["step"].max()) < nxt:          # the model's state at the first inspection
            v = d.values.copy()
            v[:, d.names.index("diameter")] += 0.5
            d = dataclasses.replace(d, values=v)
        return d

    monkeypatch.setattr(type(model), "state_draws", wrong_then)
    bars = posterior_bars(sim, model, sit.history, 100, seed=4)
    assert len(bars.from_sample) == 1 and bars.from_sample[0].startswith(f"diameter at step {nxt}")
    ci = p.char_index["diameter"]
    means = bars.state.reshape(100, p.bars_per_batch, p.n_chars).mean(axis=1)[:, ci]
    x = _sample(sit.history, nxt, "diameter")
    se = max(x.std(ddof=1), p.characteristic("diameter").gauge_sigma) / np.sqrt(len(x))
    assert abs(means.mean() - x.mean()) < 4 * se / np.sqrt(100) + 1e-9 and means.std() == pytest.approx(se, rel=0.3)
