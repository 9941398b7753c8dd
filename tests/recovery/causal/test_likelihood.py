"""The one noise covariance of the gauged means: NumPy against the sampler's PyTensor form."""

import numpy as np
import pytest

from recovery.causal.layout import segment_fault_rates
from recovery.causal.likelihood import fit_data, noise_covariance, noise_covariance_tensor
from tests.recovery.causal.test_model import small_layout


def test_numpy_noise_covariance_equals_the_pytensor_one(small_sim):
    import pytensor
    import pytensor.tensor as pt

    _, g, summ, std, layout, spread = small_layout(small_sim)
    fd = fit_data(summ, g, std, layout, spread)
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    rng = np.random.default_rng(7)
    thetas = layout.prior_mu + 0.4 * layout.prior_sd * rng.standard_normal((3, layout.size))
    theta = pt.vector("theta")
    sym = layout.decode_tensor(theta)
    Sig_t, Gl_t = noise_covariance_tensor(sym["A"], sym["tau"], fd.R, q_, c_, layout.Q, layout.d)
    f = pytensor.function([theta], [Sig_t, *Gl_t], mode="FAST_COMPILE")
    P = layout.decode(thetas)
    Sigma, Gl = noise_covariance(P.A, P.tau, fd.R, q_, c_)
    assert Sigma.shape == (3, len(q_), len(q_))
    for s in range(3):
        want = f(thetas[s])
        np.testing.assert_allclose(Sigma[s], want[0], rtol=1e-12, atol=1e-14)
        for r in range(layout.Q):
            np.testing.assert_allclose(Gl[s, r], want[1 + r], rtol=1e-12, atol=1e-14)
    # a covariance: symmetric and positive definite
    np.testing.assert_allclose(Sigma, np.swapaxes(Sigma, 1, 2))
    assert (np.linalg.eigvalsh(Sigma) > 0).all()


def test_noise_covariance_on_a_prefix_of_segments_is_the_matching_block(small_sim):
    """The root-cause query passes only the segments up to its inspection: the
    covariance of those readings must be the same block as in the full model."""
    _, g, summ, std, layout, spread = small_layout(small_sim)
    fd = fit_data(summ, g, std, layout, spread)
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    P = layout.decode(layout.prior_mu[None] + 0.2)
    full, _ = noise_covariance(P.A, P.tau, fd.R, q_, c_)
    qf = 1
    keep = q_ <= qf
    part, Gl = noise_covariance(P.A[:, :qf + 1], P.tau[:, :qf + 1], fd.R[keep], q_[keep], c_[keep])
    np.testing.assert_allclose(part[0], full[0][np.ix_(keep, keep)], rtol=1e-12)
    assert Gl.shape == (1, qf + 1, keep.sum(), layout.d)


def test_segment_fault_rates_combine_the_catalogue_faults_of_each_segment(small_sim):
    from recovery.causal.graph import CausalGraph

    p = small_sim.process
    g = CausalGraph.from_process(p)
    rates = segment_fault_rates(p, g)
    assert rates.shape == (len(p.inspections),)
    for seg in g.segments():
        want = 1.0 - np.prod([1.0 - p.faults[i].rate for i in seg.faults]) if seg.faults else 0.0
        assert rates[seg.index] == pytest.approx(want, rel=1e-12)
    assert (rates > 0).any() and (rates < 1).all()
