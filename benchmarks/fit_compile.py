"""Fit compile cache: a first fit of a process, then a second fit of the same
process on new data, which should take nutpie's compiled log-density from the
cache (``recovery.causal.compiled``) instead of compiling it again.

Each fit runs in its own Python process, as two ``recovery fit`` commands
would. By default PyTensor's own compile cache is a fresh folder, so the first
fit is a cold start; ``--warm-pytensor`` keeps the user's ``~/.pytensor``.

Run: ``python benchmarks/fit_compile.py --process default --batches 1000``
Prints JSON: the first and second fit's compile and sampling seconds, their
whole fit seconds, the compile ratio (second / first) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_ONE_FIT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from recovery.causal.model import CausalModel, FitConfig
from simulators.campaign import simulate_chunk
from simulators.definition import load_process
proc, n, seed, draws, tune, chains = sys.argv[1], *map(int, sys.argv[2:7])
process = load_process(proc)
obs = simulate_chunk(process, n, 0, seed).observations
t0 = time.perf_counter()
m = CausalModel(process, config=FitConfig(draws=draws, tune=tune, chains=chains, seed=seed)).fit(obs, progress=False)
r = m.report_
print(json.dumps({"seed": seed, "fit_seconds": time.perf_counter() - t0, "compile_seconds": r.compile_seconds,
                  "sample_seconds": r.sample_seconds, "rhat_max": r.rhat_max,
                  "cache": [n for n in r.notes if n.startswith("compiled log-density")]}))
"""


def one_fit(args, seed: int, env: dict) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", _ONE_FIT, args.process, str(args.batches), str(seed),
                          str(args.draws), str(args.tune), str(args.chains)],
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
    ap.add_argument("--warm-pytensor", action="store_true", help="keep PyTensor's own compile cache")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fit-compile-")
    env = dict(os.environ, RECOVERY_FIT_CACHE=os.path.join(work, "fit-cache"))
    if not args.warm_pytensor:
        env["PYTENSOR_FLAGS"] = f"base_compiledir={os.path.join(work, 'pytensor')}"
    t0 = time.perf_counter()
    first = one_fit(args, args.seeds[0], env)
    second = one_fit(args, args.seeds[1], env)
    print(json.dumps({
        "benchmark": "fit_compile", "process": args.process, "batches": args.batches,
        "draws": args.draws, "tune": args.tune, "chains": args.chains, "cold_pytensor": not args.warm_pytensor,
        "cores": os.cpu_count(), "first": first, "second": second,
        "first_fit_compile_s": first["compile_seconds"], "second_fit_compile_s": second["compile_seconds"],
        "second_fit_whole_s": second["fit_seconds"],
        "compile_ratio": second["compile_seconds"] / first["compile_seconds"],
        "wall_seconds": time.perf_counter() - t0,
    }, indent=1))


if __name__ == "__main__":
    main()
