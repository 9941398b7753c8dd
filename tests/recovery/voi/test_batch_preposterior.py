"""Preposterior analysis on known cases (no model, no simulator): a reading that
cannot change the decision is worth 0, a perfect one the EVPI, and the reading
likelihood points at the draw the reading came from."""

import numpy as np
import pytest

from recovery.voi.preposterior import (decide, posterior_weights, preposterior_value, reading_loglik,
                                       resample, simulate_readings)


def _toy(rng, S=400):
    """A hidden level theta per draw; option values linear in theta (no rollout noise).

    continue pays 110 - 40 theta, intervene 60 (costs a lever, safe), scrap -20.
    theta ~ U(0, 2): continuing is best on average (70), intervening when theta > 1.25.
    """
    theta = rng.uniform(0.0, 2.0, S)
    after = np.vstack([110.0 - 40.0 * theta, np.full(S, 60.0), np.full(S, -20.0)])
    return theta, after, ["continue", "intervene", "scrap"]


def _evpi(after, now_option):
    """Expected value of perfect information, computed directly: best option per state,
    against the option chosen without information."""
    return float(after.max(axis=0).mean() - after[now_option].mean())


def test_an_uninformative_reading_is_worth_nothing():
    rng = np.random.default_rng(0)
    theta, after, kinds = _toy(rng)
    now = int(decide(after.mean(axis=1), kinds))
    assert kinds[now] == "continue"
    # the reading does not depend on the state: every draw explains it equally
    ll = np.zeros((len(theta), len(theta)))
    r = preposterior_value(after, after, ll, kinds)
    assert r.evsi == pytest.approx(0.0, abs=1e-9)
    assert r.p_change == 0.0
    assert r.low <= 0.0 <= r.high


def test_a_reading_that_cannot_change_the_decision_is_worth_nothing():
    rng = np.random.default_rng(1)
    S = 300
    theta = rng.uniform(0.0, 2.0, S)
    # continuing wins in every state, whatever is read
    after = np.vstack([200.0 - 40.0 * theta, np.full(S, 60.0), np.full(S, -20.0)])
    kinds = ["continue", "intervene", "scrap"]
    y = theta + 0.01 * rng.standard_normal(S)   # a very informative reading
    ll = -0.5 * ((y[:, None] - theta[None, :]) / 0.01) ** 2
    r = preposterior_value(after, after, ll, kinds)
    assert r.evsi == 0.0 and r.p_change == 0.0


def test_a_perfect_reading_is_worth_the_evpi():
    rng = np.random.default_rng(2)
    # discrete states, each drawn many times, so leaving a draw out still leaves its state
    levels = np.array([0.2, 0.8, 1.3, 1.9])
    theta = levels[rng.integers(0, 4, 400)]
    after = np.vstack([100.0 - 40.0 * theta, np.full(400, 60.0), np.full(400, -20.0)])
    kinds = ["continue", "intervene", "scrap"]
    now = int(decide(after.mean(axis=1), kinds))
    ll = np.where(theta[:, None] == theta[None, :], 0.0, -np.inf)
    r = preposterior_value(after, after, ll, kinds, min_gain=0.0)
    evpi = _evpi(after, now)
    assert evpi > 5.0                       # the toy is not trivial
    assert r.evsi == pytest.approx(evpi, abs=1e-9)


def test_a_noisy_reading_is_worth_between_zero_and_the_evpi_and_more_with_less_noise():
    rng = np.random.default_rng(3)
    theta, after, kinds = _toy(rng, S=600)
    now = int(decide(after.mean(axis=1), kinds))
    evpi = _evpi(after, now)
    values = []
    for sd in (1.0, 0.3, 0.05):
        y = theta + sd * rng.standard_normal(len(theta))
        ll = -0.5 * ((y[:, None] - theta[None, :]) / sd) ** 2
        values.append(preposterior_value(after, after, ll, kinds).evsi)
    assert 0.0 <= values[0] < values[1] < values[2] <= evpi + 1e-9
    assert values[2] > 0.8 * evpi


def test_decide_follows_choose_actions_min_gain_rule():
    kinds = ["continue", "intervene", "scrap"]
    assert decide(np.array([10.0, 10.5, -5.0]), kinds, min_gain=1.0) == 0   # not enough gain
    assert decide(np.array([10.0, 11.5, -5.0]), kinds, min_gain=1.0) == 1
    assert decide(np.array([-30.0, -25.0, -20.0]), kinds) == 2


def test_weights_leave_the_own_draw_out_and_fall_back_to_the_prior():
    ll = np.array([[0.0, -np.inf, -np.inf], [0.0, 0.0, -1.0], [-np.inf, -np.inf, 5.0]])
    w = posterior_weights(ll)
    assert np.allclose(w.sum(axis=1), 1.0)
    assert np.all(np.diag(w) == 0.0)
    # reading 0 is explained only by draw 0, its own: nothing left, the prior (others equal)
    assert np.allclose(w[0], [0.0, 0.5, 0.5])
    assert w[1, 0] > w[1, 2] > 0


def test_the_reading_likelihood_picks_the_batch_it_was_read_from():
    rng = np.random.default_rng(4)
    S, N = 50, 40
    means = rng.normal(10.0, 1.0, S)
    spreads = rng.uniform(0.1, 0.6, S)
    bars = means[:, None] + spreads[:, None] * rng.standard_normal((S, N))
    y = simulate_readings(bars, 20, 0.05, rng)
    ll = reading_loglik(y, bars, 0.05)
    assert ll.shape == (S, S)
    # rank of the draw each reading came from, among all draws (0: the most likely)
    rank = (ll > ll[np.arange(S), np.arange(S)][:, None]).sum(axis=1)
    assert np.mean(rank == 0) > 0.6 and np.mean(rank < 3) > 0.9
    # every bar read, no gauge noise: the mean is known exactly, so the true draw wins
    y_all = simulate_readings(bars, N, 0.0, rng)
    assert np.all(np.argmax(reading_loglik(y_all, bars, 0.0), axis=1) == np.arange(S))


def test_crack_counts_use_the_hypergeometric_likelihood():
    N = 20
    bars = np.zeros((3, N))
    bars[1, :2] = 1.0      # 2 cracked bars
    bars[2, :10] = 1.0     # 10 cracked bars
    read = np.array([[1.0, 1.0, 0.0, 0.0, 0.0]])       # 2 cracked among 5
    ll = reading_loglik(read, bars, 0.0, binary=True)[0]
    assert ll[0] == -np.inf                             # no cracked bar in draw 0
    assert ll[2] > ll[1] > -np.inf


def test_simulated_readings_have_the_gauge_noise_and_refuse_too_many_bars():
    rng = np.random.default_rng(5)
    bars = np.full((2000, 10), 3.0)
    y = simulate_readings(bars, 4, 0.5, rng)
    assert y.shape == (2000, 4)
    assert y.std() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="between 1 and the 10 bars"):
        simulate_readings(bars, 11, 0.5, rng)


def test_systematic_resampling_follows_the_weights():
    rng = np.random.default_rng(6)
    idx = resample(np.array([0.0, 0.25, 0.75]), 400, rng)
    assert not (idx == 0).any()
    assert np.mean(idx == 2) == pytest.approx(0.75, abs=0.01)
