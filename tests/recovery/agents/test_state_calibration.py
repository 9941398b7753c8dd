"""Is what the planner starts its rollouts from calibrated? The causal model's state
draws against the true batch means, and the posterior of a batch's bar spread."""

import numpy as np
import pytest

from recovery.agents.rollouts import P_SCATTERED, spread_posterior
from recovery.evaluate import flagged_cases, situation_for
from simulators.process import Simulator

pytestmark = pytest.mark.filterwarnings("ignore")


def test_state_draws_cover_the_true_batch_means_at_their_nominal_rates(small_model):
    """On the flagged batches of the small process, at the detection inspection: the true
    batch mean of every characteristic whose level the model knows lies in the draws'
    central 94% interval about 94% of the time and in the 50% one about half the time,
    and the truth's z-score is centred, neither too wide nor too narrow on the whole."""
    model, _ = small_model
    sim = Simulator("small")
    p = sim.process
    cases, _ = flagged_cases(sim, 300, 31)
    assert len(cases) >= 40
    in50, in94, z = [], [], []
    for c in cases:
        sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
        d = model.state_draws(sit.history, 400, seed=3)
        for j, name in enumerate(d.names):
            ci = p.char_index[name]
            if not d.absolute[j] or p.characteristics[ci].role == "crack":
                continue
            v, truth = d.values[:, j], c.state[:, ci].mean()
            lo50, hi50, lo94, hi94 = np.quantile(v, [0.25, 0.75, 0.03, 0.97])
            in50.append(lo50 <= truth <= hi50)
            in94.append(lo94 <= truth <= hi94)
            z.append((truth - v.mean()) / v.std())
    z = np.array(z)
    assert len(z) >= 100
    # binomial sd of a coverage over >= 100 rows is <= 0.05 (50%) and 0.024 (94%)
    assert 0.40 <= np.mean(in50) <= 0.68
    assert 0.88 <= np.mean(in94) <= 0.99
    assert abs(z.mean()) < 0.25
    assert 0.7 < z.std() < 1.3


def test_a_healthy_looking_sample_keeps_the_healthy_spread():
    ratio, prob = spread_posterior(1.0, 5, 1.0, 0.0)
    assert ratio[0] == 1.0 and prob.sum() == pytest.approx(1.0)
    assert prob[0] > 0.9                         # mostly "healthy"
    assert (ratio * prob).sum() < 1.2


def test_a_scattered_sample_widens_the_spread():
    """Five bars whose variance is ten times the healthy one (an over-temperature): the
    posterior leaves the healthy hypothesis and centres near the sample's ratio."""
    ratio, prob = spread_posterior(10.0, 5, 1.0, 0.0)
    assert prob[0] < 0.01
    mean_log = (np.log(ratio) * prob).sum()
    assert np.log(3.0) < mean_log < np.log(30.0)
    # the gauge's share of the sample variance is not taken for bar spread
    _, with_gauge = spread_posterior(2.0, 5, 1.0, 1.0)
    _, without = spread_posterior(2.0, 5, 1.0, 0.0)
    assert with_gauge[0] > without[0]


def test_the_probability_of_a_scattered_batch_is_calibrated_on_its_prior():
    """Batches drawn from the prior (healthy with 1 - P_SCATTERED, else a log-uniform
    ratio): among those the posterior calls scattered with probability ~q, about q are."""
    rng = np.random.default_rng(5)
    n, k = 3000, 5
    scattered = rng.random(n) < P_SCATTERED
    r = np.where(scattered, np.exp(rng.uniform(0.0, np.log(100.0), n)), 1.0)
    s2 = r * rng.chisquare(k - 1, n) / (k - 1)
    q = np.array([1.0 - spread_posterior(float(v), k, 1.0, 0.0)[1][0] for v in s2])
    assert abs(q.mean() - scattered.mean()) < 0.02
    for lo, hi in ((0.0, 0.1), (0.1, 0.9), (0.9, 1.0001)):
        m = (q >= lo) & (q < hi)
        assert m.sum() >= 50
        assert abs(scattered[m].mean() - q[m].mean()) < 0.08


@pytest.mark.parametrize("args, kw, message", [
    ((1.0, 1, 1.0, 0.0), {}, "k >= 2"),
    ((1.0, 5, 0.0, 0.0), {}, "positive healthy variance"),
    ((1.0, 5, 1.0, 0.0), {"p_scattered": 1.5}, "p_scattered"),
    ((1.0, 5, 1.0, 0.0), {"max_ratio": 1.0}, "max_ratio"),
])
def test_spread_posterior_refuses_bad_input(args, kw, message):
    with pytest.raises(ValueError, match=message):
        spread_posterior(*args, **kw)
