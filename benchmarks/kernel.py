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
def _draw(rng, out, reps):
    # A cache-resident buffer: the bound is the generator, not memory bandwidth.
    for _ in range(reps):
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


def time_once(sim: Simulator, n_batches: int, seed: int) -> float:
    """Seconds for one whole-process run of ``n_batches`` (conditions drawn outside)."""
    p = sim.process
    cond = sim.sample_conditions(n_batches, 1)
    plan = np.broadcast_to(p.nominal_plan(), (n_batches, len(p.levers)))
    state, obs = sim.new_state(n_batches), sim.new_obs(n_batches)
    state[...] = 0.0  # touch the pages now: first-touch faults are not simulation time
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    sim.run(state, 0, p.n_steps, plan, cond, rng, obs=obs)
    return time.perf_counter() - t


def paired(fast: Simulator, slow: Simulator, n_batches: int, repeat: int) -> dict:
    """Kernel and reference timed in alternation; ratios are per pair, so a noisy
    neighbour slows both sides of a pair alike."""
    p = fast.process
    work = n_batches * p.bars_per_batch * p.n_steps
    k, r = [], []
    for i in range(repeat):
        k.append(time_once(fast, n_batches, i))
        r.append(time_once(slow, n_batches, i))
    k, r = np.array(k), np.array(r)
    return {"kernel_bar_steps_per_s": float(work / np.median(k)),
            "reference_bar_steps_per_s": float(work / np.median(r)),
            "kernel_over_reference": float(np.median(r / k)),
            "kernel_over_reference_min": float(np.min(r / k))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    fast, slow = Simulator(), Simulator(reference=True)
    time_once(fast, 10, 0)  # compile
    bars = fast.process.bars_per_batch
    sizes = {"1000_batches": 1000, "100000_bars": 100_000 // bars}
    out: dict = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                 "date": time.strftime("%Y-%m-%d"), "threads": 1, "bars_per_batch": bars}
    buf = np.empty(4096)
    _draw(np.random.default_rng(0), buf, 1)
    draws_per_s = 0.0
    for r in range(args.repeat):
        t = time.perf_counter()
        _draw(np.random.default_rng(r), buf, 5000)
        draws_per_s = max(draws_per_s, 5000 * len(buf) / (time.perf_counter() - t))
    per = draws_per_bar_step(fast)
    bound = draws_per_s / per
    out["normal_draws_per_s"] = draws_per_s
    out["draws_per_bar_step"] = per
    out["rng_bound_bar_steps_per_s"] = bound
    for name, n in sizes.items():
        out[name] = paired(fast, slow, n, args.repeat)
        out[name]["kernel_share_of_rng_bound"] = out[name]["kernel_bar_steps_per_s"] / bound
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
