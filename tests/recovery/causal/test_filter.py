"""The numba kernels equal their readable NumPy twins."""

import numpy as np
import pytest

from recovery.causal import _filter
from recovery.causal.queries import hdi


def random_system(rng, S=3, Q=4, d=3):
    A = rng.normal(0, 0.4, (S, Q, d, d)) + np.eye(d)
    u = rng.normal(0, 1, (S, Q, d))
    nv = rng.uniform(0.1, 1.0, (S, Q, d))
    m = rng.normal(0, 1, (S, Q, d))
    R = rng.uniform(0.05, 0.5, (S, Q, d))
    z = rng.normal(0, 2, (Q, d))
    obs = rng.random((Q, d)) < 0.6
    obs[1] = False          # an inspection with no reading at all
    extra = rng.uniform(1, 5, (S, Q, d))
    return A, u, nv, m, R, z, obs, extra


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_seg", [1, 3, 4])
def test_kalman_equals_joint_gaussian_conditioning(seed, n_seg):
    args = random_system(np.random.default_rng(seed))
    comp = np.array([_filter.NONE, 0, 2, _filter.SEVERAL], dtype=np.int64)
    got = _filter.kalman(*args, comp, n_seg)
    ref = _filter.kalman_reference(*args, comp, n_seg)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-9)


def test_component_weights_are_the_fault_patterns_probabilities():
    """Against enumerating every pattern of independent segment shifts."""
    import itertools

    pi = np.array([0.2, 0.0, 0.05, 0.3])
    segs = [0, 2, 3]
    lw, codes = _filter.component_log_weights(pi, segs)
    assert list(codes) == [_filter.NONE, 0, 2, 3, _filter.SEVERAL]
    want = np.zeros(5)
    for hits in itertools.product([0, 1], repeat=len(segs)):
        pr = np.prod([pi[r] if h else 1 - pi[r] for r, h in zip(segs, hits)])
        want[0 if sum(hits) == 0 else (1 + hits.index(1) if sum(hits) == 1 else 4)] += pr
    np.testing.assert_allclose(np.exp(lw), want, rtol=1e-12)
    lw1, codes1 = _filter.component_log_weights(pi, [2])     # one segment: no "several"
    assert list(codes1) == [_filter.NONE, 2]
    np.testing.assert_allclose(np.exp(lw1), [0.95, 0.05])


def test_the_several_component_adds_every_segments_shift():
    args = random_system(np.random.default_rng(5))
    A, u, nv, m, R, z, obs, extra = args
    _, cov_all, ll_all = _filter.kalman(*args, np.array([_filter.SEVERAL], dtype=np.int64), 4)
    _, cov_sum, ll_sum = _filter.kalman(A, u, nv + extra, m, R, z, obs, extra,
                                        np.array([_filter.NONE], dtype=np.int64), 4)
    np.testing.assert_allclose(cov_all, cov_sum, rtol=1e-12)
    np.testing.assert_allclose(ll_all, ll_sum, rtol=1e-12)


def test_a_fault_component_widens_the_state():
    args = random_system(np.random.default_rng(4))
    mean, cov, ll = _filter.kalman(*args, np.array([-1, 3], dtype=np.int64), 4)
    assert (np.diagonal(cov[:, 1], axis1=1, axis2=2) >= np.diagonal(cov[:, 0], axis1=1, axis2=2) - 1e-12).all()


def test_accept_probability_equals_reference():
    rng = np.random.default_rng(3)
    S, K, d, F, P = 4, 5, 3, 4, 6
    X0 = rng.normal(0, 1, (S, K, d))
    Kf = rng.normal(0, 0.5, (S, d, F))
    phi = rng.normal(0, 1, (P, F))
    base = rng.normal(0, 0.2, (S, d))
    scale = np.array([1.0, 2.0, 0.5])
    lower, upper = np.array([-3.0, -4.0, -np.inf]), np.array([3.0, 5.0, 1.5])
    sbar = rng.uniform(0.3, 1.0, (S, d))
    use = np.array([True, True, False])
    crack = rng.uniform(0.9, 1.0, (S, K))
    logc = _filter.log_binomial_coefficients(20)
    got = _filter.accept_probability(X0, Kf, phi, base, scale, lower, upper, sbar, use, crack, 20, 18, logc)
    ref = _filter.accept_probability_reference(X0, Kf, phi, base, scale, lower, upper, sbar, use, crack, 20, 18)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert got.shape == (P, S) and ((got >= 0) & (got <= 1)).all()


def test_hdi_of_a_normal_sample():
    x = np.random.default_rng(0).normal(5.0, 2.0, (200_000, 2))
    lo, hi = hdi(x, 0.94)
    # the narrowest window is flat near its optimum: its width is sharp, its place less so
    np.testing.assert_allclose(hi - lo, 2 * 1.8808 * 2.0, rtol=0.005)
    np.testing.assert_allclose((lo + hi) / 2, 5.0, atol=0.1)
    skewed = np.random.default_rng(1).exponential(1.0, 100_000)
    lo, hi = hdi(skewed, 0.94)
    assert lo < 0.01 and abs(hi - np.log(1 / 0.06)) < 0.05   # HDI of Exp(1) starts at 0
