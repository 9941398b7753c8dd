"""Kernel throughput against the NumPy reference and the random-draw bound.

Prints JSON. Usage: ``python benchmarks/kernel.py [--repeat 5]``.

- bar-steps/s of the numba kernel and of the NumPy twin, at planning size
  (1,000 batches) and at 100,000 bars, for the built-in 50-step process;
- normal draws per second from a Generator inside numba in the same run, and
  the bound they put on the kernel: draws/s divided by the draws one bar-step
  needs (counted from the process: bar draws, batch draws and gauge draws);
- the kernel's share of that bound (target >= 0.5) and its speed-up over the
  reference (target >= 5 at 1,000 batches).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import time

import numpy as np
from numba import njit

from simulators.kinds import KINDS
from simulators.process import Simulator


@njit(cache=True)
def _draw(rng, out):
    for i in range(out.shape[0]):
        out[i] = rng.standard_normal()


def draws_per_bar_step(sim: Simulator) -> float:
    """Random draws the kernel makes per bar and step, averaged over the process."""
    p = sim.process
    bars = p.bars_per_batch
    total = 0.0
    for s in p.steps:
        spec = KINDS[s.kind]
        total += spec.normals + spec.uniforms
        if s.kind not in ("washing", "inspection"):
            total += 1.0 / bars  # one batch-level draw shared by the batch's bars
    for ins in p.inspections:
        total += ins.sample * len(ins.measures) / bars
    return total / p.n_steps


def time_run(sim: Simulator, n_batches: int, repeat: int) -> float:
    p = sim.process
    cond = sim.sample_conditions(n_batches, 1)
    plan = np.broadcast_to(p.nominal_plan(), (n_batches, len(p.levers)))
    best = np.inf
    for r in range(repeat):
        state, obs = sim.new_state(n_batches), sim.new_obs(n_batches)
        rng = np.random.default_rng(r)
        t = time.perf_counter()
        sim.run(state, 0, p.n_steps, plan, cond, rng, obs=obs)
        best = min(best, time.perf_counter() - t)
    return n_batches * p.bars_per_batch * p.n_steps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    fast, slow = Simulator(), Simulator(reference=True)
    time_run(fast, 10, 1)  # compile
    bars = fast.process.bars_per_batch
    sizes = {"1000_batches": 1000, "100000_bars": 100_000 // bars}
    out: dict = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                 "date": time.strftime("%Y-%m-%d"), "threads": 1, "bars_per_batch": bars}
    buf = np.empty(20_000_000)
    _draw(np.random.default_rng(0), buf[:10])
    t = time.perf_counter()
    _draw(np.random.default_rng(0), buf)
    draws_per_s = len(buf) / (time.perf_counter() - t)
    per = draws_per_bar_step(fast)
    bound = draws_per_s / per
    out["normal_draws_per_s"] = draws_per_s
    out["draws_per_bar_step"] = per
    out["rng_bound_bar_steps_per_s"] = bound
    for name, n in sizes.items():
        k = time_run(fast, n, args.repeat)
        r = time_run(slow, n, max(1, args.repeat // 2))
        out[name] = {"kernel_bar_steps_per_s": k, "reference_bar_steps_per_s": r,
                     "kernel_over_reference": k / r, "kernel_share_of_rng_bound": k / bound}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
