"""The env's kernels (simulators._kernels.env_*) equal their NumPy twins (simulators.reference)."""

import numpy as np
import pytest

from simulators import _kernels as k
from simulators import reference as ref
from simulators.env import make_vector_env

N_ENVS = 4


@pytest.fixture(scope="module")
def venv():
    env = make_vector_env(N_ENVS, process="small")
    yield env
    env.close()


def _readings(lay, rng, n):
    n_insp = int(lay.q.max()) + 1
    max_sample = int(lay.sample.max())
    n_chars = int(lay.c.max()) + 1
    r = lay.nominal[None, None, None, :1] + rng.normal(0.0, 1.0, (n, n_insp, max_sample, n_chars))
    r[rng.random(r.shape) < 0.05] = np.nan        # a missing reading makes its mean unmeasured
    r[0, 0::2] = 1e9                              # far out both ways (by inspection): the +-50 clip
    r[0, 1::2] = -1e9
    r[1, lay.q[0], 0, lay.c[0]] = np.nan          # batch 1's first pair is surely unmeasured
    return r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_observations_equal_the_twin(venv, seed):
    lay = venv._single.layout
    rng = np.random.default_rng(seed)
    readings = _readings(lay, rng, N_ENVS)
    n_dec = lay.size - 2 * lay.n_pairs - 1
    pos = rng.integers(0, lay.n_steps + 1, N_ENVS)
    pos[0] = lay.n_steps                          # env 0 fully gauged
    dec = rng.integers(-1, n_dec + 1, N_ENVS)     # past the last decision: none
    args = (lay.q, lay.c, lay.sample, lay.insp_step, lay.nominal, lay.width)
    fast = np.full((N_ENVS, lay.size), 7.0)
    slow = np.full((N_ENVS, lay.size), -7.0)
    k.env_fill_many(readings, *args, pos, dec, n_dec, lay.n_steps, fast)
    ref.env_fill_many_reference(readings, *args, pos, dec, n_dec, lay.n_steps, slow)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast[0].max() == 50.0 and fast[0].min() == -50.0    # both clips exercised
    one_fast, one_slow = np.full(lay.size, 3.0), np.full(lay.size, -3.0)
    k.env_fill(readings[1], *args, lay.n_steps, 0, lay.n_steps, one_fast)
    ref.env_fill_reference(readings[1], *args, lay.n_steps, 0, lay.n_steps, one_slow)
    np.testing.assert_allclose(one_fast, one_slow, rtol=1e-12, atol=1e-12)
    assert 0.0 < one_fast[lay.n_pairs:2 * lay.n_pairs].mean() < 1.0   # some gauged, some missing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_actions_equal_the_twin(venv, seed):
    e = venv._single
    rng = np.random.default_rng(seed)
    table = venv._table
    n_dec = table.shape[0]
    n_act = venv.single_action_space.shape[0]
    actions = rng.uniform(-1.3, 1.3, (N_ENVS, n_act))        # beyond +-1: clipped
    actions[0, :] = 0.1                                       # inside the dead zone: nominal, no cost
    moving = np.array([0, 2, 3], dtype=np.int64)
    decision = rng.integers(0, n_dec, N_ENVS)
    levers = (e._lo, e._span, e._int, e._nominal, e._per_use, e._per_unit)
    plan_f = np.tile(e._nominal, (N_ENVS, 1))
    plan_s = plan_f.copy()
    rew_f, rew_s = np.full(N_ENVS, 5.0), np.full(N_ENVS, 5.0)
    k.env_apply_actions(actions, moving, decision, table, *levers, plan_f, rew_f)
    ref.env_apply_actions_reference(actions, moving, decision, table, *levers, plan_s, rew_s)
    np.testing.assert_array_equal(plan_f, plan_s)
    np.testing.assert_allclose(rew_f, rew_s, rtol=1e-12)
    assert rew_f[0] == 0.0 and rew_f[1] == 5.0                # dead zone costs nothing; env 1 not moving
    idx = np.arange(len(e._lo), dtype=np.int64)
    row_f, row_s = e._nominal.copy(), e._nominal.copy()
    a = rng.uniform(-1.0, 1.0, len(idx))
    cf = k.env_apply_action(a, idx, *levers, row_f)
    cs = ref.env_apply_action_reference(a, idx, *levers, row_s)
    np.testing.assert_array_equal(row_f, row_s)
    assert cf == pytest.approx(cs, rel=1e-12)
    ints = e._int.astype(bool)
    assert np.all(row_f[ints] == np.round(row_f[ints]))
