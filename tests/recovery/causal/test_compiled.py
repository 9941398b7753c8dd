"""The compiled log-density cache: cached against fresh compilation, the key, a bad entry."""

import copy
import ctypes
import warnings

import numpy as np
import pytest

from recovery.causal import compiled as cc
from recovery.causal.likelihood import data_values, fit_data, loglik_tensor
from recovery.causal.sampling import build_pymc_model, model_data

from .test_model import small_layout

pytestmark = pytest.mark.filterwarnings("ignore")


def _toy(y0):
    """A two-parameter model whose data ``y`` enter as a shared input of unknown length."""
    def build():
        import pymc as pm
        import pytensor
        import pytensor.tensor as pt

        y = pytensor.shared(np.asarray(y0, dtype=float), name="y", shape=(None,))
        with pm.Model() as m:
            th = pm.Normal("theta", 0.0, 3.0, shape=2)
            pm.Potential("ll", pt.sum(-th[1] - 0.5 * ((y - th[0]) / pt.exp(th[1])) ** 2))
        return m
    return build


def _want(y, x):
    """The toy's log-density and gradient, by hand (up to the normal constant)."""
    mu, ls = x
    r = (y - mu) / np.exp(ls)
    logp = -0.5 * np.sum((x / 3.0) ** 2) + np.sum(-ls - 0.5 * r**2)
    grad = np.array([-mu / 9.0 + np.sum(r) / np.exp(ls), -ls / 9.0 + np.sum(-1.0 + r**2)])
    return logp, grad


def _call_c(model, x):
    """The C entry point nutpie calls, with the model's bound data."""
    f = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p)(model.compiled_logp_func.address)
    x = np.ascontiguousarray(x, dtype=float)
    grad, logp = np.zeros_like(x), np.zeros(())
    rc = f(len(x), x.ctypes.data, grad.ctypes.data, logp.ctypes.data, model.user_data.ctypes.data)
    assert rc == 0
    return float(logp), grad


def _draws(model):
    import nutpie

    tr = nutpie.sample(model, draws=30, tune=30, chains=1, seed=7, progress_bar=False)
    return tr.posterior["theta"].values


def test_cached_and_fresh_compilation_agree_on_new_data(tmp_path):
    rng = np.random.default_rng(0)
    y1, y2 = rng.normal(1.0, 2.0, 40), rng.normal(-0.5, 0.7, 65)  # another length: data, not structure
    start = np.zeros(2)
    first = cc.compile_nutpie(_toy(y1), "toy", {"y": y1}, start, folder=tmp_path)
    assert not first.cache_hit and (tmp_path / "toy.pkl").exists()
    # the cache was written from y1; bound to y2 it must be the model of y2
    cached = cc.compile_nutpie(_toy(y1), "toy", {"y": y2}, start, folder=tmp_path)
    fresh = cc.compile_nutpie(_toy(y2), "toy", {"y": y2}, start, use_cache=False)
    assert cached.cache_hit and not fresh.cache_hit
    for x in rng.normal(0.0, 0.5, (4, 2)):
        want = _want(y2, x)
        for c in (cached, fresh):
            lp, g = _call_c(c.model, x)
            assert lp - want[0] == pytest.approx(_call_c(fresh.model, np.zeros(2))[0] - _want(y2, np.zeros(2))[0])
            np.testing.assert_allclose(g, want[1], rtol=1e-10)
            lp2, g2 = c.logp_dlogp(x)  # what checked_start sees: the same data
            assert lp2 == pytest.approx(lp, rel=1e-12)
            np.testing.assert_allclose(g2, g, rtol=1e-12)
        assert _call_c(cached.model, x)[0] == pytest.approx(_call_c(fresh.model, x)[0], rel=1e-12)
    np.testing.assert_array_equal(_draws(cached.model), _draws(fresh.model))


def test_the_cache_keeps_the_structure_not_the_data(tmp_path):
    # A fit's readings are partners' data: the entry on disk must not hold them, and
    # emptying them for the pickle must not change the fit that wrote it.
    import pickle

    y = np.array([123.456789, 7.25, -3.5])
    first = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    x = np.array([0.3, -0.2])
    np.testing.assert_allclose(first.logp_dlogp(x)[1], _want(y, x)[1], rtol=1e-10)
    np.testing.assert_allclose(_call_c(first.model, x)[1], _want(y, x)[1], rtol=1e-10)
    raw = (tmp_path / "toy.pkl").read_bytes()
    assert y.tobytes() not in raw and np.float64(123.456789).tobytes() not in raw
    parts = pickle.loads(raw)["parts"]
    assert all(v.get_value().size == 0 for v in cc._shared_inputs(parts))


def test_an_unreadable_cache_entry_is_rebuilt(tmp_path):
    import shutil

    y = np.linspace(-1.0, 1.0, 9)
    x = np.array([0.2, 0.1])
    cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    # a hit needs only the head and numba's machine code: the functions' pickle is not read
    (tmp_path / "toy.pkl").write_bytes(b"not a pickle")
    hit = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    assert hit.cache_hit and hit.machine_code_cached and hit.note is None
    np.testing.assert_allclose(_call_c(hit.model, x)[1], _want(y, x)[1], rtol=1e-10)
    # once numba's cache is gone the functions are needed, and an unreadable pickle is rebuilt
    shutil.rmtree(tmp_path / "__pycache__")
    again = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    assert not again.cache_hit and "unreadable" in again.note
    np.testing.assert_allclose(_call_c(again.model, x)[1], _want(y, x)[1], rtol=1e-10)
    # numba's cache lost, the pickle whole: the machine code is rebuilt from the pickle
    shutil.rmtree(tmp_path / "__pycache__")
    reload = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    assert reload.cache_hit and not reload.machine_code_cached
    np.testing.assert_allclose(_call_c(reload.model, x)[1], _want(y, x)[1], rtol=1e-10)
    # an unreadable head is rebuilt too
    (tmp_path / "toy.head.pkl").write_bytes(b"\x80garbage")
    bad_head = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    assert not bad_head.cache_hit and "unreadable" in bad_head.note
    assert cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path).cache_hit


def test_the_affine_map_samples_the_same_posterior(tmp_path):
    # theta = shift + scale * x: the same density of theta in other coordinates (a warm
    # start's mass matrix). The gradient in x is the chain rule's, the draws stored are
    # theta's, and their posterior is the untransformed one within Monte Carlo error.
    import nutpie

    y = np.random.default_rng(3).normal(1.5, 0.8, 50)
    shift, scale = np.array([1.4, -0.2]), np.array([0.11, 0.1])
    plain = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path)
    warm = cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path, shift=shift,
                             scale=scale)
    assert warm.cache_hit
    for th in np.random.default_rng(4).normal(0.0, 0.5, (3, 2)) + shift:
        lp, g = warm.logp_dlogp(th)  # back in theta's coordinates
        np.testing.assert_allclose(g, _want(y, th)[1], rtol=1e-10)
        assert lp == pytest.approx(plain.logp_dlogp(th)[0], rel=1e-12)
        lpx, gx = _call_c(warm.model, (th - shift) / scale)
        np.testing.assert_allclose(gx, _want(y, th)[1] * scale, rtol=1e-10)
    with pytest.raises(ValueError, match="positive scale"):
        cc.compile_nutpie(_toy(y), "toy", {"y": y}, np.zeros(2), folder=tmp_path, scale=np.array([1.0, 0.0]))
    draws = {}
    for name, c in (("plain", plain), ("warm", warm)):
        tr = nutpie.sample(c.model, draws=1000, tune=300, chains=2, seed=11, progress_bar=False)
        draws[name] = tr.posterior["theta"].values.reshape(-1, 2)
    a, b = draws["plain"], draws["warm"]
    # about 2,000 draws each, nearly independent: a 5-sigma band on the means and sds
    se = np.sqrt(a.var(axis=0) / 500 + b.var(axis=0) / 500)
    assert np.all(np.abs(a.mean(axis=0) - b.mean(axis=0)) < 5 * se)
    np.testing.assert_allclose(b.std(axis=0), a.std(axis=0), rtol=0.15)
    assert abs(b[:, 0].mean() - y.mean()) < 0.1  # and it is the toy's posterior


def test_the_key_follows_the_structure_not_the_data(small_sim):
    _, g, summ, std, layout, spread = small_layout(small_sim, n=30, seed=2)
    fd = fit_data(summ, g, std, layout, spread)
    _, g2, summ2, std2, layout2, spread2 = small_layout(small_sim, n=40, seed=3)
    fd2 = fit_data(summ2, g2, std2, layout2, spread2)
    assert [i.tolist() for i, _, _ in fd.patterns] == [i.tolist() for i, _, _ in fd2.patterns]
    bars, dig = small_sim.process.bars_per_batch, small_sim.process.digest
    key = cc.structure_key(layout, fd, None, bars, dig)
    assert cc.structure_key(layout2, fd2, None, bars, dig) == key  # new data, same structure
    assert cc.structure_key(layout, fd, None, bars, "another process") != key
    prior = (layout.prior_mu, np.diag(layout.prior_sd**2))
    assert cc.structure_key(layout, fd, prior, bars, dig) != key
    # a pattern that observes fewer readings is another graph
    idx, Zp, zeta = fd.patterns[0]
    fewer = fd.__class__(fd.rows, fd.n_sample, fd.gauge, [(idx[1:], Zp[:, 1:], zeta)], fd.R, 0)
    assert cc.structure_key(layout, fewer, None, bars, dig) != key
    # so is a layout whose fixed carry-over differs (an expert edit of the graph)
    other = copy.copy(layout)
    other.carry_fixed = layout.carry_fixed.copy()
    other.carry_fixed[0, 0, 0] = 0.5
    assert cc.structure_key(other, fd, None, bars, dig) != key


def test_the_likelihood_with_shared_data_equals_the_one_with_constants(small_sim):
    import pytensor
    import pytensor.tensor as pt

    _, g, summ, std, layout, spread = small_layout(small_sim)
    fd = fit_data(summ, g, std, layout, spread)
    theta = pt.vector("theta")
    data = {k: pytensor.shared(v, name=k, shape=(None,) * v.ndim) for k, v in data_values(fd).items()}
    P = layout.decode_tensor(theta)
    f = pytensor.function([theta], [loglik_tensor(P, fd, layout, 8, per_batch=True),
                                    loglik_tensor(P, fd, layout, 8, per_batch=True, data=data)],
                          mode="FAST_COMPILE")
    for s in range(3):
        th = layout.prior_mu + 0.3 * layout.prior_sd * np.random.default_rng(s).standard_normal(layout.size)
        a, b = f(th)
        np.testing.assert_allclose(b, a, rtol=1e-12)
    # and the PyMC model's data are those of the fit
    md = model_data(layout, fd, None)
    np.testing.assert_array_equal(md["prior_mu"], layout.prior_mu)
    m = build_pymc_model(layout, fd, None, 8, shared=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp_shared = m.compile_logp()({"theta": layout.prior_mu})
        lp_const = build_pymc_model(layout, fd, None, 8).compile_logp()({"theta": layout.prior_mu})
    assert lp_shared == pytest.approx(lp_const, rel=1e-12)


def _idata(theta, diverging=None, step=0.3):
    import arviz as az

    C, S, _ = theta.shape
    stats = {"step_size": np.full((C, S), step),
             "diverging": np.zeros((C, S), bool) if diverging is None else diverging}
    return az.from_dict(posterior={"theta": theta}, sample_stats=stats, dims={"theta": ["param"]})


def test_only_a_healthy_fit_leaves_a_warm_state(tmp_path, monkeypatch):
    from recovery.causal.sampling import _leave_warm

    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path))
    rng = np.random.default_rng(5)
    good = rng.normal([1.0, -2.0, 0.5], [0.1, 0.5, 2.0], (2, 400, 3))
    notes = []
    _leave_warm(_idata(good), "k", notes)
    w = cc.read_warm("k", 3)
    np.testing.assert_allclose(w.mean, good.reshape(-1, 3).mean(axis=0))
    np.testing.assert_allclose(w.sd, good.reshape(-1, 3).std(axis=0))
    assert w.step_size == 0.3 and not notes
    assert cc.read_warm("k", 4) is None  # another size is another structure's
    # chains that disagree (one stuck in another mode), a divergence, or one chain: nothing left
    stuck = good.copy()
    stuck[1, :, 1] += 3.0
    div = np.zeros((2, 400), bool)
    div[0, 7] = True
    for bad, name in ((_idata(stuck), "a"), (_idata(good, diverging=div), "b"), (_idata(good[:1]), "c")):
        _leave_warm(bad, name, notes)
        assert cc.read_warm(name, 3) is None and not (tmp_path / f"{name}.warm.npz").exists()
    # an unreadable or unusable entry means a cold start, never an error
    (tmp_path / "k.warm.npz").write_bytes(b"garbage")
    assert cc.read_warm("k", 3) is None
    cc.write_warm("k", cc.WarmState(np.zeros(3), np.array([1.0, 0.0, 1.0]), 0.3))
    assert cc.read_warm("k", 3) is None


@pytest.mark.slow
def test_a_warm_started_fit_gives_the_posterior_of_a_cold_one(small_sim, tmp_path, monkeypatch):
    # The second fit of a process starts from the first fit's posterior, scaled by
    # its sd, with fewer tuning steps: on new data its posterior must be the one a
    # cold fit of those data gives, within Monte Carlo error.
    import arviz as az

    from recovery.causal.model import CausalModel, FitConfig

    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path))
    d1 = small_sim.simulate(300, seed=21, explore=0.3).observations
    d2 = small_sim.simulate(300, seed=22, explore=0.3).observations
    cfg = FitConfig(draws=400, tune=400, chains=2, seed=3, warm_tune=150, robust="none")
    first = CausalModel("small", config=cfg).fit(d1, progress=False)
    assert first.report_.rhat_max < 1.05 and list(tmp_path.glob("*.warm.npz"))
    warm = CausalModel("small", config=cfg).fit(d2, progress=False)
    assert any(n.startswith("warm start") for n in warm.report_.notes)
    assert warm.idata_.warmup_sample_stats.sizes["draw"] == 150
    cold = CausalModel("small", config=FitConfig(**{**cfg.__dict__, "warm_tune": None})).fit(d2, progress=False)
    assert not any(n.startswith("warm start") for n in cold.report_.notes)
    assert cold.idata_.warmup_sample_stats.sizes["draw"] == 400
    assert warm.report_.rhat_max < 1.05
    a, b = warm.theta_draws(robust=False), cold.theta_draws(robust=False)
    se = np.hypot(*(np.asarray(az.mcse(m.idata_.posterior, var_names=["theta"])["theta"].values)
                    for m in (warm, cold)))
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
    assert z.max() < 5.0 and (z > 3.0).mean() < 0.05
    np.testing.assert_allclose(a.std(axis=0), b.std(axis=0), rtol=0.3)


def test_a_warm_start_is_asked_for_not_taken_by_default():
    # A warm-started fit's draws depend on the cache; the same seed must give the
    # same fit anywhere, so only `--warm-start` (or FitConfig(warm_tune=N)) starts warm.
    from recovery.causal.config import FitConfig
    from recovery.cli import build_parser

    assert FitConfig().warm_tune is None
    parse = build_parser().parse_args
    assert parse(["fit", "--data", "h.parquet", "--out", "m"]).warm_start is None
    assert parse(["fit", "--data", "h.parquet", "--out", "m", "--warm-start"]).warm_start == 200
    assert parse(["fit", "--data", "h.parquet", "--out", "m", "--warm-start", "120"]).warm_start == 120
