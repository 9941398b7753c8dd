"""The rl agent: a PPO policy that corrects the engineer's rule (residual), in the env and as an agent."""

import numpy as np
import pytest

from recovery.agents.baselines import EngineerRule
from recovery.agents.rl import RLAgent, load_policy, train_policy
from recovery.evaluate import flagged_cases, situation_for
from simulators.env import MetalBarRecoveryEnv, action_of
from simulators.process import Simulator

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def rule():
    return EngineerRule(Simulator("small").process)


def test_zero_correction_follows_the_rule_in_the_env(rule):
    """With a base policy, the observation carries the rule's action and a zero
    action sets every lever of the episode to the rule's plan."""
    env = MetalBarRecoveryEnv("small", base=rule)
    plain = MetalBarRecoveryEnv("small")
    assert env.observation_space.shape[0] == plain.observation_space.shape[0] + env.action_space.shape[0]
    p = env.process
    lo, hi = p.lever_bounds()
    moved = 0
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        # the episode stops before its first lever step; the rule sees every inspection up to there
        last = max(s for s in p.inspection_steps if s <= env._pos)
        assert last >= info["detect_step"]
        expected = rule(env._readings[0], last, p.nominal_plan())
        first = [j for j in range(len(p.levers)) if p.levers[j].step == env.layout.decision_steps[env._decisions[0]]]
        for i, j in enumerate(first):
            assert obs[plain.observation_space.shape[0] + i] == pytest.approx(
                action_of(expected[j], p.levers[j].nominal, lo[j], hi[j]), abs=1e-6)
        done = False
        while not done:
            obs, r, done, _, step_info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        # no inspection between the flag and the last lever on most episodes: the plan is the rule's
        later_insp = [s for s in p.inspection_steps if last < s < max(lv.step for lv in p.levers)]
        if not later_insp:
            np.testing.assert_allclose(step_info["plan"], expected, rtol=1e-9, atol=1e-9)
            moved += int(np.any(np.abs(expected - p.nominal_plan()) > 1e-9))
    assert moved > 0


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    pol = train_policy("small", seed=0, total_timesteps=512, n_envs=2, n_steps=64, variants=2)
    d = pol.save(tmp_path_factory.mktemp("policy"))
    return pol, d


def test_policy_round_trip_keeps_its_base(tiny_policy):
    pol, d = tiny_policy
    assert pol.base == "heuristic"
    back = load_policy(d)
    assert back.base == "heuristic"
    obs = np.zeros(pol.model.observation_space.shape, dtype=np.float32)
    np.testing.assert_array_equal(pol.model.predict(obs, deterministic=True)[0],
                                  back.model.predict(obs, deterministic=True)[0])


def test_agent_with_a_silent_policy_proposes_the_rules_plan(tiny_policy, rule):
    """The agent builds the same observation and residual as the env: a policy whose
    output is 0 gives exactly the rule's plan; a trained one stays within bounds."""
    import torch

    pol, d = tiny_policy
    silent = load_policy(d)
    with torch.no_grad():
        silent.model.policy.action_net.weight.zero_()
        silent.model.policy.action_net.bias.zero_()
    sim = Simulator("small")
    p = sim.process
    cases, _ = flagged_cases(sim, 200, 4)
    agent, trained = RLAgent(silent), RLAgent(pol)
    moved = 0
    for c in cases[:15]:
        sit = situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False)
        prop = agent.propose(sit, seed=0)
        from recovery.agents.baselines import readings_from_history
        expected = rule(readings_from_history(p, sit.history), sit.step, p.nominal_plan())
        np.testing.assert_allclose(prop.plan, expected, rtol=1e-9, atol=1e-9)
        moved += int(np.any(np.abs(expected - p.nominal_plan()) > 1e-9))
        a, b = trained.propose(sit, seed=0), trained.propose(sit, seed=1)
        np.testing.assert_array_equal(a.plan, b.plan)  # deterministic policy
        assert p.levers_ok(a.plan).all()
    assert moved >= 5


def test_numpy_forward_pass_gives_sb3_predict_actions(tiny_policy):
    """The policy's forward pass on NumPy arrays gives SB3's deterministic actions
    on many random observations (float32 rounding aside)."""
    from recovery.agents.rl import PolicyForward

    pol, _ = tiny_policy
    fwd = PolicyForward(pol.model)
    rng = np.random.default_rng(0)
    n = pol.model.observation_space.shape[0]
    obs = np.concatenate([rng.normal(0.0, 1.0, (500, n)), rng.normal(0.0, 20.0, (500, n))]).astype(np.float32)
    want = pol.model.predict(obs, deterministic=True)[0]
    got = fwd(obs)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert np.abs(want).max() > 0.05  # a policy that moves, so the comparison means something


def test_agent_on_arrays_decides_as_the_step_by_step_predict_path(tiny_policy):
    """The agent's decision (rule on arrays, one NumPy forward pass for all steps ahead)
    gives the plans of the first form (one SB3 ``predict`` per decision step), on many
    random situations."""
    from tests.recovery.agents import naive
    from tests.recovery.agents.test_baselines import _random_readings

    pol, _ = tiny_policy
    agent = RLAgent(pol)
    p = pol.process
    rng = np.random.default_rng(1)
    lo, hi = p.lever_bounds()
    moved = 0
    for _ in range(200):
        r = _random_readings(p, rng)
        step = int(rng.choice(p.inspection_steps))
        plan = np.where(rng.random(len(lo)) < 0.7, p.nominal_plan(), rng.uniform(lo, hi))
        plan[p.free_levers(step)] = p.nominal_plan()[p.free_levers(step)]
        got = agent.decide(r, step, plan)
        want = naive.rl_plan(agent, r, step, plan)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * (hi - lo).max())
        moved += int(np.any(np.abs(got - plan) > 1e-9))
    assert moved > 20


def test_agent_falls_back_to_sb3_predict_for_other_policy_structures(tiny_policy, monkeypatch):
    """A policy PolicyForward cannot copy (here: refused on purpose) is run through SB3's
    ``predict``, one batch of observations, with the same plans."""
    import recovery.agents.rl as rl
    from tests.recovery.agents import naive
    from tests.recovery.agents.test_baselines import _random_readings

    def refuse(model):
        raise ValueError("not an MlpPolicy")

    pol, _ = tiny_policy
    original = rl.PolicyForward
    monkeypatch.setattr(rl, "PolicyForward", refuse)
    agent = RLAgent(pol)
    assert not isinstance(agent.forward, original)  # the fallback is in use
    p = pol.process
    lo, hi = p.lever_bounds()
    rng = np.random.default_rng(2)
    for _ in range(20):
        r = _random_readings(p, rng)
        step = int(rng.choice(p.inspection_steps))
        got = agent.decide(r, step, p.nominal_plan())
        # one batched predict against one per step: float32 sums may differ in the last bit
        np.testing.assert_allclose(got, naive.rl_plan(agent, r, step, p.nominal_plan()), rtol=1e-6,
                                   atol=1e-6 * (hi - lo).max())


def test_training_leaves_no_sb3_log_folder_behind(tmp_path, monkeypatch):
    """SB3's default logger makes ``tempdir/SB3-<time>`` on every learn(); training must not."""
    import tempfile

    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert tempfile.gettempdir() == str(tmp_path)
    pol = train_policy("small", seed=0, total_timesteps=64, n_envs=1, n_steps=32, variants=0)
    assert pol.model.num_timesteps >= 64
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")) == []
