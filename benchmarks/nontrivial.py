"""Is the process a real recovery problem? Do-nothing versus the oracle, on fresh seeds.

Prints JSON. Usage: ``python benchmarks/nontrivial.py [--process small] [--batches 1000] [--seed 2026]``.

Cases are batches flagged at the first inspection after their first fault.
Both agents continue each case with the same future noise; the oracle knows
the true simulator and every bar's true state and searches plans
(``recovery.agents.oracle.OracleSearch``). Targets on the default process:
do-nothing recovers at most a quarter, the oracle at least half.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import time

from recovery.evaluate import nontriviality
from simulators.process import Simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--process", default=None)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--rollouts", type=int, default=16)
    args = ap.parse_args()
    t = time.perf_counter()
    out = nontriviality(Simulator(args.process), args.batches, args.seed,
                        oracle_kwargs={"n_rollouts": args.rollouts}, progress=False)
    out["process"] = args.process or "default"
    out["wall_seconds"] = time.perf_counter() - t
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
