"""Latency of the rl agent's decision against SB3 ``predict`` of the same network.

Prints JSON. Usage: ``python benchmarks/rl_decision.py [--policy DIR] [--cases 300] [--repeat 5]``.

- anchor: ``model.predict(obs, deterministic=True)`` of the agent's own PPO
  network on one observation, timed per call in the same run;
- ``agent``: ``RLAgent.propose`` (the decision as the evaluation times it:
  the engineer's rule, the policy for every lever step ahead, the plan check)
  on the situations of flagged batches, with the gauge readings as arrays
  (what ``recovery.evaluate`` hands over);
- ``agent_from_history``: the same, with only the step table (a store's
  history), so the readings are read from the DataFrame first;
- ``decide``: ``RLAgent.decide`` alone (arrays in, plan out), when it exists;
- ``*_cpu``: the anchor's and the agent's CPU time of this thread per call (the
  agent's includes ``propose``'s bookkeeping), less sensitive to a loaded machine.

Without ``--policy`` a residual policy of the default network size (64 x 64)
is trained for a few steps on the default process: the latency depends on the
network and the process, not on how well it was trained.
Target: P95 of ``agent`` <= 2 x the anchor's P95, and <= 1 ms.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import dataclasses
import json
import platform
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def _stats(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"n": len(ms), "p50_ms": float(np.median(ms)), "p95_ms": float(np.quantile(ms, 0.95))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", help="a saved policy folder (default: train a tiny one)")
    ap.add_argument("--process", default=None, help="process for the tiny policy (default: built-in)")
    ap.add_argument("--cases", type=int, default=300, help="batches simulated to find flagged ones")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes over the situations")
    args = ap.parse_args()

    import torch

    from recovery.agents.rl import RLAgent, load_policy, train_policy
    from recovery.evaluate import flagged_cases, situation_for
    from simulators.process import Simulator

    torch.set_num_threads(1)
    t = time.perf_counter()
    if args.policy:
        pol = load_policy(args.policy)
    else:
        pol = train_policy(args.process, seed=0, total_timesteps=512, n_envs=1, n_steps=256, variants=0)
    setup_s = time.perf_counter() - t
    agent = RLAgent(pol)
    sim = Simulator(pol.process)
    p = sim.process
    cases, _ = flagged_cases(sim, args.cases, 3)
    sits = [situation_for(sim, c, c.detect_step, c.obs, p.nominal_plan(), c.state, truth=False) for c in cases]
    has_readings = "readings" in {f.name for f in dataclasses.fields(sits[0])}
    bare = [dataclasses.replace(s, readings=None) for s in sits] if has_readings else sits
    obs = np.zeros(pol.model.observation_space.shape, dtype=np.float32)

    for s in sits[:5]:  # warm-up: numba dispatch, torch's first call
        agent.propose(s, 0)
        pol.model.predict(obs, deterministic=True)
    anchor, prop, hist, dec = [], [], [], []
    # CPU time of this thread too: on a shared machine the wall-clock tail is
    # mostly waiting for a core, which the thread's CPU time leaves out
    anchor_cpu, prop_cpu = [], []
    rng = np.random.default_rng(0)
    for _ in range(args.repeat):
        for s, b in zip(sits, bare):
            x = rng.normal(0.0, 1.0, obs.shape).astype(np.float32)
            c, t = time.thread_time(), time.perf_counter()
            pol.model.predict(x, deterministic=True)
            anchor.append(time.perf_counter() - t)
            anchor_cpu.append(time.thread_time() - c)
            c = time.thread_time()
            prop.append(agent.propose(s, 0).latency_s)
            prop_cpu.append(time.thread_time() - c)
            hist.append(agent.propose(b, 0).latency_s)
            if hasattr(agent, "decide"):
                t = time.perf_counter()
                agent.decide(s.gauge_readings(), s.step, s.plan)
                dec.append(time.perf_counter() - t)
    a, g = _stats(anchor), _stats(prop)
    out = {
        "process": p.name, "n_situations": len(sits), "repeat": args.repeat,
        "decision_steps_ahead_mean": float(np.mean([np.sum(agent.layout.decision_steps > s.step) for s in sits])),
        "policy": args.policy or "tiny (512 steps)", "net_arch": str(pol.model.policy.net_arch),
        "anchor_sb3_predict": a, "agent": g,
        "agent_from_history": _stats(hist) if has_readings else None,
        "decide": _stats(dec) if dec else None,
        "anchor_cpu": _stats(anchor_cpu), "agent_cpu": _stats(prop_cpu),
        "ratio_p95_agent_to_anchor": g["p95_ms"] / a["p95_ms"],
        "target_met": bool(g["p95_ms"] <= 2 * a["p95_ms"] and g["p95_ms"] <= 1.0),
        "setup_s": setup_s, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
