"""The gymnasium env and its vectorised variant."""

import gymnasium as gym
import numpy as np
import pytest

from simulators.env import ENV_ID, MetalBarRecoveryEnv, MetalBarRecoveryVectorEnv
from simulators.process import Simulator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_gymnasium_and_sb3_checks_pass():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check

    check_env(gym.make(ENV_ID).unwrapped)
    sb3_check(MetalBarRecoveryEnv("small"))


def _episode(env, seed, action):
    obs, info = env.reset(seed=seed)
    out = [obs]
    rewards = []
    while True:
        obs, r, term, trunc, step_info = env.step(action)
        out.append(obs)
        rewards.append(r)
        if term or trunc:
            return np.array(out), rewards, info, step_info


def test_same_seed_same_episode():
    a = _episode(MetalBarRecoveryEnv(), 5, np.zeros(2))
    b = _episode(MetalBarRecoveryEnv(), 5, np.zeros(2))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2]
    c = _episode(MetalBarRecoveryEnv(), 6, np.zeros(2))
    assert c[2]["batch_id"] != a[2]["batch_id"] or not np.array_equal(c[0], a[0])


def test_actions_map_to_the_lever_bounds():
    env = MetalBarRecoveryEnv()
    p = env.process
    lo, hi = p.lever_bounds()
    for action, want in ((-1.0, lo), (1.0, hi)):
        env.reset(seed=1)
        while True:
            _, _, term, _, info = env.step(np.full(2, action))
            if term:
                break
        plan = info["plan"]
        free = np.array([lv.step > 15 for lv in p.levers])  # this seed is flagged at step 15
        assert p.within_bounds(plan)
        np.testing.assert_allclose(plan[free], want[free])
    env.reset(seed=1)
    env.step(np.full(2, 7.0))  # outside [-1, 1]: clipped, never outside the bounds
    assert p.within_bounds(env.plan)


def test_episode_starts_at_the_flagging_inspection():
    env = MetalBarRecoveryEnv(force_fault="misaligned_bending_die")
    obs, info = env.reset(seed=2)
    assert info["detect_step"] == 35 and info["fault"] == "misaligned_bending_die"
    # the next decision is the re-bend at step 36
    d = env.layout.decision_steps
    assert obs[2 * env.layout.n_pairs + 1 + list(d).index(36)] == 1.0


def test_reward_is_value_or_scrap_minus_lever_costs():
    env = MetalBarRecoveryEnv("small")
    p = env.process
    for seed in range(6):
        env.reset(seed=seed)
        total, costs = 0.0, 0.0
        while True:
            _, r, term, _, info = env.step(env.action_space.sample())
            total += r
            costs += info["lever_cost"]
            if term:
                break
        assert info["lever_cost"] >= 0
        end = p.economics.batch_value if info["accepted"] else -p.economics.scrap_cost
        assert total == pytest.approx(end - costs)
        assert info["accepted"] == (info["in_spec_fraction"] >= p.acceptance_level)


def test_doing_nothing_rarely_saves_a_flagged_batch_and_the_right_lever_does():
    # ground truth: a misaligned bending die is undone by re-bending by minus the error
    env = MetalBarRecoveryEnv(force_fault="misaligned_bending_die")
    nothing = fixed = 0
    for seed in range(8):
        for fix in (False, True):
            env.reset(seed=seed)
            mag = env._cond.fault[0, 32]  # true misalignment (deg), known to the test only
            first = True
            while True:
                a = env.action_for({"rebend_1": -mag / 0.95}) if (first and fix) else env.nominal_action()
                first = False
                _, _, term, _, info = env.step(a)
                if term:
                    break
            if fix:
                fixed += info["accepted"]
            else:
                nothing += info["accepted"]
    assert nothing <= 2 and fixed >= 6


def test_vector_env_semantics_and_determinism():
    from gymnasium.vector.utils import batch_space  # noqa: F401  (API present)

    v = MetalBarRecoveryVectorEnv(6, "small")
    obs, _ = v.reset(seed=4)
    assert obs.shape == (6, v.single_observation_space.shape[0]) and v.observation_space.contains(obs)
    ends, after_end = 0, []
    prev = np.zeros(6, dtype=bool)
    for _ in range(30):
        obs, r, term, trunc, _ = v.step(np.zeros((6, 1)))
        # NEXT_STEP autoreset: the step after an end restarts with reward 0
        assert np.all(r[prev] == 0.0) and not term[prev].any()
        prev = term
        ends += term.sum()
    assert ends > 0
    v2 = MetalBarRecoveryVectorEnv(6, "small")
    o2, _ = v2.reset(seed=4)
    o1, _ = v.reset(seed=4)
    np.testing.assert_array_equal(o1, o2)
    for _ in range(10):
        a, b = v.step(np.ones((6, 1)) * 0.3), v2.step(np.ones((6, 1)) * 0.3)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_domain_randomisation_draws_from_the_given_simulators():
    sims = [Simulator("small"), Simulator("small")]
    env = MetalBarRecoveryEnv(simulators=sims)
    env.reset(seed=0)
    assert env._sim in sims


def test_tiny_ppo_learns_without_error():
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    torch.set_num_threads(1)
    model = PPO("MlpPolicy", MetalBarRecoveryEnv("small"), n_steps=32, batch_size=16, seed=0, verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default leaves a tempdir/SB3-* folder
    model.learn(total_timesteps=64)


def test_import_simulators_registers_the_envs_without_loading_them():
    """``import simulators`` alone makes ``gym.make`` and ``gym.make_vec`` work, and
    loads neither the env module nor numba until an env is made (a fresh
    interpreter: this one has imported both already)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import simulators
import gymnasium as gym
assert "simulators.env" not in sys.modules and "numba" not in sys.modules, "loaded too early"
env = gym.make("MetalBarRecovery-v0")
obs, _ = env.reset(seed=3)
assert env.observation_space.contains(obs)
assert env.spec.max_episode_steps == len({lv.step for lv in simulators.load_process().levers})
venv = gym.make_vec("MetalBarRecovery-v0", num_envs=3, vectorization_mode="vector_entry_point")
assert type(venv).__name__ == "MetalBarRecoveryVectorEnv"
obs, _ = venv.reset(seed=3)
assert obs.shape == (3,) + env.observation_space.shape
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_each_episode_runs_with_the_physics_of_its_own_simulator():
    """Simulators of different physics (posterior draws): an episode's batch runs on
    the physics of the simulator it came from, in the single and the vector env."""
    from simulators.definition import load_process

    p = load_process("small")
    plating = next(s for s in p.steps if s.kind == "plating")
    thick = p.with_params({(plating.index, "efficiency"): 3 * plating.params["efficiency"]})
    sims = [Simulator(p), Simulator(thick)]
    ct = p.char_index["coating_thickness"]
    hi = p.final_bands()[1][ct]
    env = MetalBarRecoveryEnv(simulators=sims)
    seen = set()
    for seed in range(16):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, done, _, _ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        thick_world = env._sim is sims[1]
        seen.add(thick_world)
        # three times the bath efficiency: far too much chrome, and only there
        assert (env._state[:, ct].mean() > hi) == thick_world
    assert seen == {True, False}
    venv = MetalBarRecoveryVectorEnv(4, simulators=sims)
    venv.reset(seed=0)
    for _ in range(40):
        venv.step(np.zeros(venv.action_space.shape, dtype=np.float32))
        bpb = p.bars_per_batch
        for e in range(4):
            if venv._pos[e] == p.n_steps:
                mean = venv._state[e * bpb:(e + 1) * bpb, ct].mean()
                assert (mean > hi) == (venv._set[e] == 1)


def _kernel_args(sim, n, start, stop, rng):
    """Valid arguments of ``KernelStep`` for ``n`` fresh batches of ``sim``."""
    from simulators.process import KernelStep

    k = KernelStep(sim.process)
    cond = sim.sample_conditions(n, rng)
    noise, unif, cursor = k.draws(rng, n, start, stop)
    args = dict(state=sim.new_state(n), after_step=start, stop_step=stop,
                param_set=np.zeros(n, dtype=np.int64), plan=np.tile(sim.process.nominal_plan(), (n, 1)),
                fault=cond.fault, drift=cond.drift, readings=sim.new_obs(n), noise=noise, uniform=unif,
                cursor=cursor)
    return k, args


def test_kernel_step_refuses_arrays_the_kernel_cannot_take_and_names_them():
    sim = Simulator("small")
    rng = np.random.default_rng(0)
    n_steps = sim.process.n_steps
    k, good = _kernel_args(sim, 2, 0, n_steps, rng)
    k.check(**good)
    k(**good)  # the checked arrays run
    assert np.isfinite(good["state"]).all() and good["cursor"][0] == len(good["noise"])
    bad = {
        "state": (dict(state=sim.new_state(3)), r"state must be C-contiguous float64 of shape \(%d, %d\)"
                  % (2 * sim.process.bars_per_batch, sim.process.n_chars)),
        "state_f32": (dict(state=sim.new_state(2).astype(np.float32)), "state must be .* got float32"),
        "plan_strided": (dict(plan=np.tile(sim.process.nominal_plan(), (2, 2))[:, ::2]),
                         "plan must be C-contiguous .* C-contiguous=False"),
        "readings": (dict(readings=sim.new_obs(1)), "readings must be"),
        "param_set": (dict(param_set=np.array([0, 1])), r"param_set must index the 1 parameter set"),
        "noise": (dict(noise=good["noise"][:-1]), rf"noise holds {len(good['noise']) - 1} draws; steps "
                                                 rf"1..{n_steps} of 2 batch\(es\) read {len(good['noise'])}"),
        "cursor": (dict(cursor=np.array([0, 5], dtype=np.int64)), "uniform holds"),
        "steps": (dict(stop_step=n_steps + 1), "after_step <= stop_step"),
    }
    for what, (change, msg) in bad.items():
        args = {**good, **change}
        with pytest.raises(ValueError, match=msg):
            k.check(**args)


def test_env_reset_refuses_a_bad_batch_before_any_step():
    """The env checks an episode's arrays once, at reset; steps only forward to the kernel."""
    env = MetalBarRecoveryEnv("small")
    good_next = env.source.next

    def short_state(rng, fault=None):
        sim, state, cond, readings, detect = good_next(rng, fault)
        return sim, state[:-1], cond, readings, detect  # one bar missing

    env.source.next = short_state
    with pytest.raises(ValueError, match="state must be C-contiguous float64 of shape"):
        env.reset(seed=0)
    env.source.next = good_next
    env.reset(seed=0)
    env.step(env.nominal_action())
