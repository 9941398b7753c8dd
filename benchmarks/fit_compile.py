"""Fit compile cache: a first fit of a process, then a second fit of the same
process on new data, which should take nutpie's compiled log-density from the
cache (``recovery.causal.compiled``) instead of compiling it again.

Each fit runs in its own Python process, as two ``recovery fit`` commands
would. By default PyTensor's own compile cache is a fresh folder, so the first
fit is a cold start; ``--warm-pytensor`` keeps the user's ``~/.pytensor``.

Run: ``python benchmarks/fit_compile.py --process default --batches 1000``
Prints JSON: the first and second fit's compile and sampling seconds, their
whole fit seconds, the compile ratio (second / first), the load average, and
per fit where the sampling time goes: the log-density and gradient cost
(``grad_ms``, through the entry point nutpie calls, one thread), leapfrog
steps per tuning step and per draw, tree depth, R-hat max, ESS min and ESS
per second. The second fit is warm-started (``FitConfig.warm_tune``) when the
first was healthy; ``--fresh-second`` fits its data once more from a cold
tuning and compares the two posteriors (``warm_vs_fresh``: the largest
difference of a parameter's mean in Monte Carlo standard errors).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

_ONE_FIT = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from recovery.causal import compiled as cc, sampling
from recovery.causal.model import CausalModel, FitConfig
from simulators.campaign import simulate_chunk
from simulators.definition import load_process
proc, n, seed, draws, tune, chains, warm_tune = sys.argv[1], *map(int, sys.argv[2:8])
process = load_process(proc)
obs = simulate_chunk(process, n, 0, seed).observations
seen = []
_compile = cc.compile_nutpie
def spy(*a, **k):
    c = _compile(*a, **k)
    seen.append(c)
    return c
cc.compile_nutpie = spy
import pymc, nutpie  # noqa: E401 (imports are not fit time)
t0 = time.perf_counter()
cfg = FitConfig(draws=draws, tune=tune, chains=chains, seed=seed, warm_tune=warm_tune if warm_tune >= 0 else None)
m = CausalModel(process, config=cfg).fit(obs, progress=False)
fit_s = time.perf_counter() - t0
r = m.report_
idata = m.idata_
def steps(group):
    return np.asarray(idata[group]["n_steps"].values, dtype=float) if group in idata.groups() else np.zeros((1, 0))
tune_steps, draw_steps = steps("warmup_sample_stats"), steps("sample_stats")
# the log-density and its gradient through the entry point nutpie calls, at the posterior mean
c = seen[-1]
theta = np.asarray(idata.posterior["theta"].mean(("chain", "draw")).values)
c.logp_dlogp(theta)
t1 = time.perf_counter()
for _ in range(200):
    c.logp_dlogp(theta)
grad_ms = (time.perf_counter() - t1) / 200 * 1e3
import arviz as az
mcse = np.asarray(az.mcse(idata.posterior, var_names=["theta"])["theta"].values)
print(json.dumps({"seed": seed, "fit_seconds": fit_s, "compile_seconds": r.compile_seconds,
                  "sample_seconds": r.sample_seconds, "rhat_max": r.rhat_max, "ess_bulk_min": r.ess_bulk_min,
                  "ess_tail_min": r.ess_tail_min, "divergences": r.divergences,
                  "ess_bulk_min_per_s": r.ess_bulk_min / r.sample_seconds,
                  "tune_steps_per_chain": int(tune_steps.shape[1]), "draws_per_chain": int(draw_steps.shape[1]),
                  "leapfrog_per_tune_step": float(tune_steps.mean()) if tune_steps.size else 0.0,
                  "leapfrog_per_draw": float(draw_steps.mean()),
                  "leapfrog_total_per_chain": float((tune_steps.sum() + draw_steps.sum()) / chains),
                  "tree_depth_mean": float(np.asarray(idata.sample_stats["depth"].values).mean()),
                  "step_size": float(np.median(idata.sample_stats["step_size"].isel(draw=-1).values)),
                  "grad_ms": grad_ms, "machine_code_cached": c.machine_code_cached,
                  "theta_mean": theta.tolist(), "theta_mcse": mcse.tolist(),
                  "notes": [n for n in r.notes if n.startswith(("compiled log-density", "warm start"))]}))
"""


def one_fit(args, seed: int, env: dict, warm_tune: int | None) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", _ONE_FIT, args.process, str(args.batches), str(seed),
                          str(args.draws), str(args.tune), str(args.chains),
                          str(-1 if warm_tune is None else warm_tune)],
                         env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["load_before"] = load
    res["load_after"] = os.getloadavg()[0]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="default")
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs=2, default=(1, 2), help="data seeds of the two fits")
    ap.add_argument("--warm-tune", type=int, default=200,
                    help="tuning steps of a warm-started fit (FitConfig.warm_tune); -1: no warm start")
    ap.add_argument("--fresh-second", action="store_true",
                    help="also fit the second data set without a warm start, and compare the posteriors")
    ap.add_argument("--warm-pytensor", action="store_true", help="keep PyTensor's own compile cache")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fit-compile-")
    env = dict(os.environ, RECOVERY_FIT_CACHE=os.path.join(work, "fit-cache"))
    if not args.warm_pytensor:
        env["PYTENSOR_FLAGS"] = f"base_compiledir={os.path.join(work, 'pytensor')}"
    t0 = time.perf_counter()
    warm_tune = None if args.warm_tune < 0 else args.warm_tune
    first = one_fit(args, args.seeds[0], env, warm_tune)
    second = one_fit(args, args.seeds[1], env, warm_tune)
    out = {
        "benchmark": "fit_compile", "process": args.process, "batches": args.batches,
        "draws": args.draws, "tune": args.tune, "warm_tune": warm_tune, "chains": args.chains,
        "cold_pytensor": not args.warm_pytensor, "cores": os.cpu_count(),
        "first_fit_compile_s": first["compile_seconds"], "second_fit_compile_s": second["compile_seconds"],
        "first_fit_sample_s": first["sample_seconds"], "second_fit_sample_s": second["sample_seconds"],
        "second_fit_whole_s": second["fit_seconds"],
        "compile_ratio": second["compile_seconds"] / first["compile_seconds"],
    }
    if args.fresh_second:
        # The same data as the second fit, tuned from the prior means as a first fit is
        # (the compiled log-density still from the cache): the posterior the warm start
        # must reproduce, and the sampling time it saves.
        fresh = one_fit(args, args.seeds[1], env, None)
        m2, m3 = np.array(second["theta_mean"]), np.array(fresh["theta_mean"])
        se = np.hypot(second["theta_mcse"], fresh["theta_mcse"])
        z = np.abs(m2 - m3) / se
        out["fresh_second"] = fresh
        out["warm_vs_fresh"] = {"max_z": float(z.max()), "share_z_over_3": float((z > 3).mean()),
                                "params": int(len(z)),
                                "sample_ratio": second["sample_seconds"] / fresh["sample_seconds"]}
    for f in (first, second, *([out["fresh_second"]] if args.fresh_second else [])):
        f.pop("theta_mean"), f.pop("theta_mcse")
    out.update(first=first, second=second, wall_seconds=time.perf_counter() - t0)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
