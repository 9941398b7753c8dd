"""Latency of the gymnasium env and throughput of its vectorised variant.

Prints JSON. Usage: ``python benchmarks/env_step.py [--steps 20000]``.

- ``env.step`` single-call latency (median, p95) on the built-in process, for
  the bare env and through ``gymnasium.make`` (its wrappers included), resets
  excluded from the step times; reset latency separately;
- env-steps/s of the single env including resets, and of
  ``MetalBarRecoveryVectorEnv`` at 8 and 64 envs.
Target: ``env.step`` <= 20 us.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import time
import warnings

import gymnasium as gym
import numpy as np

from simulators.env import ENV_ID, MetalBarRecoveryEnv, MetalBarRecoveryVectorEnv

warnings.filterwarnings("ignore")


def step_latency(env, n: int) -> dict:
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, resets = [], []
    while len(steps) < n:
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        t = time.perf_counter()
        _, _, term, trunc, _ = env.step(a)
        steps.append(time.perf_counter() - t)
        if term or trunc:
            t = time.perf_counter()
            env.reset()
            resets.append(time.perf_counter() - t)
    s, r = np.array(steps) * 1e6, np.array(resets) * 1e6
    return {"step_us_median": float(np.median(s)), "step_us_p95": float(np.quantile(s, 0.95)),
            "reset_us_median": float(np.median(r)), "steps_per_s_with_resets": n / ((s.sum() + r.sum()) / 1e6)}


def vector_rate(num_envs: int, n_steps: int) -> float:
    v = MetalBarRecoveryVectorEnv(num_envs)
    v.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        v.step(rng.uniform(-1, 1, v.action_space.shape))
    t = time.perf_counter()
    for _ in range(n_steps):
        v.step(rng.uniform(-1, 1, v.action_space.shape))
    return num_envs * n_steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20_000)
    args = ap.parse_args()
    step_latency(MetalBarRecoveryEnv(), 200)  # compile
    out = {"date": time.strftime("%Y-%m-%d"), "process": "default",
           "bare_env": step_latency(MetalBarRecoveryEnv(), args.steps),
           "gym_make": step_latency(gym.make(ENV_ID), args.steps),
           "vector_env_steps_per_s": {str(n): vector_rate(n, max(50, args.steps // n)) for n in (8, 64)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
