"""The numba kernel against its NumPy twin, determinism, and the physics it promises."""

import numpy as np
import pytest

from simulators.process import Simulator


@pytest.fixture(scope="module")
def sim():
    return Simulator()


@pytest.mark.parametrize("process", [None, "small"])
def test_kernel_equals_reference(process):
    fast, slow = Simulator(process), Simulator(process, reference=True)
    kw = dict(record_latent=True, explore=0.5)
    a, b = fast.simulate(60, seed=3, **kw), slow.simulate(60, seed=3, **kw)
    assert a.conditions.occurred.any()  # faults were exercised
    np.testing.assert_allclose(a.state, b.state, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.latent, b.latent, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(a.obs), np.isnan(b.obs))
    np.testing.assert_allclose(a.obs, b.obs, rtol=1e-12, atol=1e-12, equal_nan=True)


def _plant_keys(p):
    """A few physics parameters of different kinds (temper, stress relief, plating, polishing,
    rebend), so per-batch physics is exercised across the kernel's branches."""
    keys = []
    for kind, name in [("temper", "drop"), ("stress_relief", "activation"), ("plating", "efficiency"),
                       ("polishing", "per_pass"), ("rebend", "radius"), ("straightening", "force_scale"),
                       ("bending", "critical_coating"), ("quench", "gain")]:
        for s in p.steps:
            if s.kind == kind and not any(lv.step == s.index and lv.sets == name for lv in p.levers):
                keys.append((s.index, name))
                break
    return keys


@pytest.mark.parametrize("process", [None, "small"])
def test_kernel_equals_reference_with_per_batch_physics(process):
    fast, slow = Simulator(process), Simulator(process, reference=True)
    p = fast.process
    keys = _plant_keys(p)
    assert len(keys) >= 3
    file_values = np.array([p.step(s).params[n] for s, n in keys])
    draws = file_values * np.array([[1.0] * len(keys), [0.8] * len(keys), [1.25] * len(keys)])
    params = fast.physics(keys, draws)
    n = 24
    sets = np.arange(n) % 3
    cond = fast.sample_conditions(n, 5)
    plan = fast.exploration_plans(n, 0.5, np.random.default_rng(1))
    out = []
    for sim in (fast, slow):
        st, obs, lat = sim.new_state(n), sim.new_obs(n), np.zeros((n, p.n_steps + 1, p.n_chars))
        sim.run(st, 0, p.n_steps, plan, cond, 8, obs=obs, latent=lat, params=params, param_set=sets)
        out.append((st, obs, lat))
    for x, y in zip(*out):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, equal_nan=True)
    # and each batch ran with its own set: set 0 is the file, so those batches equal a plain run
    st0 = fast.new_state(n)
    fast.run(st0, 0, p.n_steps, plan, cond, 8, obs=fast.new_obs(n))  # same gauge draws
    rows = np.repeat(sets == 0, p.bars_per_batch)
    np.testing.assert_array_equal(out[0][0][rows], st0[rows])
    assert not np.allclose(out[0][0][~rows], st0[~rows])


def test_physics_equals_with_params():
    sim = Simulator("small")
    p = sim.process
    keys = _plant_keys(p)
    draws = np.array([[p.step(s).params[n] * f for s, n in keys] for f in (0.9, 1.1)])
    params = sim.physics(keys, draws)
    for i in range(2):
        q = p.with_params(dict(zip(keys, draws[i])))
        np.testing.assert_array_equal(params[i], q.arrays.params)
    lever = p.levers[0]
    with pytest.raises(ValueError, match="no physics parameter"):
        sim.physics([(lever.step, lever.sets)], [[1.0]])
    with pytest.raises(ValueError, match="param_set"):
        sim.run(sim.new_state(2), 0, 1, p.nominal_plan(), sim.sample_conditions(2, 0), 0,
                params=params, param_set=np.array([0, 2]))


def test_same_seed_same_data_and_different_seed_differs(sim):
    a, b, c = sim.simulate(30, seed=9), sim.simulate(30, seed=9), sim.simulate(30, seed=10)
    np.testing.assert_array_equal(a.state, b.state)
    assert a.observations.equals(b.observations)
    assert not np.array_equal(a.state, c.state)


def test_running_in_segments_equals_one_run(sim):
    cond = sim.sample_conditions(8, 5)
    plan = sim.process.nominal_plan()
    s1, s2 = sim.new_state(8), sim.new_state(8)
    o1, o2 = sim.new_obs(8), sim.new_obs(8)
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    sim.run(s1, 0, 50, plan, cond, r1, obs=o1)
    for a, b in [(0, 5), (5, 17), (17, 33), (33, 50)]:
        sim.run(s2, a, b, plan, cond, r2, obs=o2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(o1, o2)


def test_rollouts_use_common_random_numbers(sim):
    res = sim.simulate(1, seed=4, faults=False)
    state = sim.new_state(1)
    sim.run(state, 0, 15, sim.process.nominal_plan(), res.conditions, 0)
    plans = np.tile(sim.process.nominal_plan(), (3, 1))
    plans[2, sim.process.lever_index["rechrome_time"]] = 12.0
    out = sim.rollout(state, 15, plans, 6, seed=77, conditions=res.conditions)
    np.testing.assert_array_equal(out[0], out[1])  # same plan, same seed: same outcome
    again = sim.rollout(state, 15, plans, 6, seed=77, conditions=res.conditions)
    np.testing.assert_array_equal(out, again)


def _final(sim, n, seed, lever=None, value=None, force_fault=None, faults=False):
    p = sim.process
    plan = p.nominal_plan()
    if lever:
        plan[p.lever_index[lever]] = value
    cond = sim.sample_conditions(n, seed, faults=faults, force_fault=force_fault)
    res = sim.simulate(n, seed, plan=plan, conditions=cond, record_latent=True)
    return res


def test_worn_die_shows_at_the_next_inspection_not_before(sim):
    ok = _final(sim, 40, 1)
    bad = _final(sim, 40, 1, force_fault="worn_drawing_die")
    d = sim.process.char_index["diameter"]
    mag = bad.conditions.fault[:, 6]
    # same seed, same noise: the shift after step 7 is exactly the die wear
    np.testing.assert_allclose(bad.latent[:, 7, d] - ok.latent[:, 7, d], mag, rtol=1e-9)
    np.testing.assert_array_equal(bad.latent[:, 5, d], ok.latent[:, 5, d])
    assert bad.flags[:, 1].mean() > 0.9 and not bad.flags[:, 0].any()  # seen at 15, not at 5


def test_heat_less_keeps_strength_and_heat_more_sheds_it(sim):
    ys = sim.process.char_index["yield_strength"]
    vals = [_final(sim, 20, 2, "temper2_temperature", t).latent[:, -1, ys].mean() for t in (300, 400, 500)]
    assert vals[0] > vals[1] > vals[2]
    # exponential in temperature: the hotter 100 K sheds more than the cooler 100 K
    assert (vals[1] - vals[2]) > 2 * (vals[0] - vals[1])


def test_polishing_has_diminishing_returns_and_removes_chrome(sim):
    p = sim.process
    ra, ct = p.char_index["roughness"], p.char_index["coating_thickness"]
    r = [_final(sim, 20, 3, "refinish_passes", n).latent[:, -1] for n in (0, 1, 2, 3)]
    gains = [r[i][:, ra].mean() - r[i + 1][:, ra].mean() for i in range(3)]
    assert gains[0] > gains[1] > gains[2] > 0
    assert r[0][:, ct].mean() - r[3][:, ct].mean() == pytest.approx(3.0, abs=0.01)  # 1 um per pass


def test_stress_relief_is_arrhenius_in_temperature(sim):
    rs = sim.process.char_index["residual_stress"]
    s = {t: _final(sim, 20, 4, "stress_relief_temperature", t).latent[:, 19, rs].mean() for t in (250, 350, 450)}
    assert s[250] > s[350] > s[450]
    assert (s[250] - s[350]) < (s[350] - s[450]) * 3  # relaxation accelerates with temperature


def test_thick_rechrome_cracks_at_the_second_bend(sim):
    cr = sim.process.char_index["crack"]
    thin = _final(sim, 30, 5).latent[:, -1, cr].mean()
    thick = _final(sim, 30, 5, "rechrome_time", 20.0).latent[:, -1, cr].mean()
    assert thin < 0.01 and thick > 0.05


def test_springback_grows_nonlinearly_with_strength():
    from simulators._kernels import springback_ratio
    r = np.array([springback_ratio(ys, 16.0, 33.0, 210000.0) for ys in (600.0, 900.0, 1200.0, 1500.0)])
    d = np.diff(r)
    assert np.all(d > 0) and d[2] < d[0]  # rises, and ever more slowly (3x - 4x^3)


def test_grinding_burn_cannot_be_recovered(sim):
    res = _final(sim, 30, 6, force_fault="grinding_burn")
    assert not res.accepted.any()  # cracked bars stay cracked whatever happens later


def test_pre_drawn_noise_reproduces_the_generator_and_is_counted_exactly(sim):
    from simulators import _kernels

    a, p = sim.arrays, sim.process
    n = 5
    cond = sim.sample_conditions(n, 2)
    plan = np.ascontiguousarray(np.tile(p.nominal_plan(), (n, 1)))
    # steps 1..21 draw only normals, so one normal stream serves both ways
    s1, o1 = sim.new_state(n), sim.new_obs(n)
    sim.run(s1, 0, 21, plan, cond, np.random.default_rng(9), obs=o1)
    nn, nu = _kernels.draws_needed(a.kind_id, a.normals, a.insp_of_step, a.insp_measures, a.insp_sample,
                                   n, p.bars_per_batch, 0, 21)
    assert nu == 0
    noise = np.random.default_rng(9).standard_normal(nn)
    s2, o2, cur = sim.new_state(n), sim.new_obs(n), np.zeros(2, dtype=np.int64)
    _kernels.advance(s2, p.bars_per_batch, 0, 21, a.kind_id, a.normals, a.params[None], np.zeros(n, dtype=np.int64),
                     a.target, a.slot,
                     a.lever_first, a.lever_count, a.lever_param, plan, cond.fault, cond.drift,
                     a.insp_of_step, a.insp_measures, a.insp_sample, a.gauge_sigma, o2,
                     np.empty((0, 0, 0)), None, noise, np.empty(0), cur)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(o1, o2)
    assert cur[0] == nn
    # and over the whole process, uniforms included, the count is exact
    nn, nu = _kernels.draws_needed(a.kind_id, a.normals, a.insp_of_step, a.insp_measures, a.insp_sample,
                                   n, p.bars_per_batch, 0, p.n_steps)
    s3, o3, cur = sim.new_state(n), sim.new_obs(n), np.zeros(2, dtype=np.int64)
    _kernels.advance(s3, p.bars_per_batch, 0, p.n_steps, a.kind_id, a.normals, a.params[None], np.zeros(n, dtype=np.int64),
                     a.target, a.slot,
                     a.lever_first, a.lever_count, a.lever_param, plan, cond.fault, cond.drift,
                     a.insp_of_step, a.insp_measures, a.insp_sample, a.gauge_sigma, o3,
                     np.empty((0, 0, 0)), None, np.ones(nn) * 0.1, np.full(nu, 0.5), cur)
    assert tuple(cur) == (nn, nu)
