"""Calibration on the example plants: coverage of the plant's truth, informed parameters, time.

Prints JSON. Usage::

    python benchmarks/calibration.py [--batches 1000] [--explore 0.2] [--seed 0]
        [--plants examples/plants/plant_a_soft_rolls.toml ...] [--process default]

For each plant: simulate ``--batches`` historical batches of the plant (faults at
their catalogue rates, ``--explore`` share of batches with past engineers' lever
moves), calibrate the process file on them with the default
:class:`~recovery.calibration.CalibrationConfig`, and report

- ``coverage``: share of informed parameters whose 94% interval holds the plant's
  true value (target >= 0.9), with the misses;
- ``informed`` / ``uninformed``: counts, and the reasons for the uninformed;
- ``seconds``: wall time of ``calibrate`` (target <= 600 on 2 cores);
- ``failed_checks``: the (step, characteristic) the calibrated simulator cannot
  reproduce (plant A has one planted: the final cut's length).

``--method smc`` runs the alternative the method was chosen against instead:
PyMC's likelihood-free ``pm.Simulator`` with ``pm.sample_smc`` on the same
summaries (standardised by the same bootstrap, a Gaussian ABC kernel of width 1,
the numba simulator called once per particle and stage). Only coverage,
informed and seconds are reported for it; use it on the small plant
(``--process small --plants examples/plants/small_plant.toml``): on the default
process one call costs about 0.2 s and SMC needs tens of thousands.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from recovery.calibration import calibrate
from simulators.definition import load_process
from simulators.process import Simulator

ROOT = Path(__file__).resolve().parents[1]
PLANTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "plants").glob("plant_*.toml"))


def history_seed(seed: int, i: int) -> int:
    """Each plant's history gets its own noise: with one seed for all, every plant would
    share the same chance deviations and the coverage figures would not be independent."""
    return 1000 * seed + i + 1


def run_plant(plant_file: str, process_name: str, batches: int, explore: float, seed: int,
              i: int = 0) -> dict:
    process = load_process(process_name)
    plant = load_process(ROOT / plant_file)
    hist = Simulator(plant).simulate(batches, history_seed(seed, i), explore=explore).observations
    t0 = time.perf_counter()
    post = calibrate(hist, process, seed=seed)
    seconds = time.perf_counter() - t0
    rows, misses = [], []
    for p in post.parameters:
        true = plant.step(p.step).params[p.param]
        inside = p.low <= true <= p.high
        rows.append({"step": p.step, "param": p.param, "file": p.file_value, "true": true,
                     "mean": p.mean, "low": p.low, "high": p.high, "informed": p.informed,
                     "inside": inside})
        if p.informed and not inside:
            misses.append(f"step {p.step} {p.param}: true {true:.4g}, "
                          f"interval [{p.low:.4g}, {p.high:.4g}]")
    informed = [r for r in rows if r["informed"]]
    return {
        "plant": plant_file,
        "history_seed": history_seed(seed, i),
        "converged": post.converged,
        "seconds": round(seconds, 1),
        "coverage": round(float(np.mean([r["inside"] for r in informed])), 3) if informed else None,
        "informed": len(informed),
        "uninformed": len(rows) - len(informed),
        "misses": misses,
        "uninformed_reasons": post.diagnostics.get("uninformed", {}),
        "failed_checks": [list(c) for c in post.failed_checks()],
        "diagnostics": {k: post.diagnostics.get(k) for k in
                        ("rhat_max", "ess_bulk_min", "divergences", "outside_design_box", "summaries")}
                       | {"design_rounds": len(post.diagnostics.get("rounds", [])),
                          "overdispersion": [round(r.get("overdispersion", 1.0), 2)
                                             for r in post.diagnostics.get("rounds", [])],
                          "simulator_calls": post.diagnostics.get("simulator_calls")},
        "parameters": rows,
    }


def smc_plant(plant_file: str, process_name: str, batches: int, explore: float, seed: int,
              draws: int, i: int = 0) -> dict:
    """ABC-SMC with ``pm.Simulator`` on the calibration's summaries (the rejected method)."""
    import pymc as pm

    from recovery.calibration.summaries import SummaryLayout, summarise_history
    from recovery.calibration.surrogate import _Setup, _simulate

    process = load_process(process_name)
    plant = load_process(ROOT / plant_file)
    df = Simulator(plant).simulate(batches, history_seed(seed, i), explore=explore).observations
    t0 = time.perf_counter()
    hist = summarise_history(df, process)
    lay = SummaryLayout.build(process, hist.levers)
    feats, design = lay.features(hist.mean), lay.design(hist.levers)
    observed = lay.summaries(feats, design)
    sd = lay.bootstrap(feats, design, 400, np.random.default_rng(seed)).std(axis=0) * np.sqrt(1.5)
    keep = np.flatnonzero(sd > 1e-12)
    keys = tuple(u.key for u in process.uncertain)
    fv = np.array([process.step(s).params[p] for s, p in keys])
    setup = _Setup(process, keys, fv, np.tile(hist.day, 2), np.tile(hist.levers, (2, 1)), lay, seed)
    calls = [0]

    def fn(rng, *args, size=None):
        # PyMC passes the parameters, then the size (the observed summaries' shape).
        calls[0] += 1
        z = np.array([float(np.squeeze(v)) for v in args[:len(keys)]])
        return ((_simulate(setup, z) - observed) / sd)[keep]

    with pm.Model():
        zs = [pm.Normal(f"z{i}", u.prior.a, u.prior.b) for i, u in enumerate(process.uncertain)]
        pm.Simulator("s", fn, *zs, distance="gaussian", sum_stat="identity", epsilon=1.0,
                     observed=np.zeros(len(keep)))
        idata = pm.sample_smc(draws=draws, chains=2, cores=1, random_seed=seed, progressbar=False)
    seconds = time.perf_counter() - t0
    rows = []
    for i, u in enumerate(process.uncertain):
        z = idata.posterior[f"z{i}"].values.ravel()
        v = fv[i] * np.exp(z)
        lo, hi = np.quantile(v, [0.03, 0.97])
        true = plant.step(u.step).params[u.param]
        rows.append({"step": u.step, "param": u.param, "true": true, "mean": float(v.mean()),
                     "low": float(lo), "high": float(hi), "informed": bool(z.std() < 0.5 * u.prior.b),
                     "inside": bool(lo <= true <= hi)})
    informed = [r for r in rows if r["informed"]]
    return {"plant": plant_file, "method": "abc-smc (pm.Simulator)", "seconds": round(seconds, 1),
            "simulator_calls": calls[0],
            "coverage": round(float(np.mean([r["inside"] for r in informed])), 3) if informed else None,
            "informed": len(informed), "parameters": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", nargs="+", default=PLANTS)
    ap.add_argument("--process", default="default")
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--explore", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", choices=["surrogate-nuts", "smc"], default="surrogate-nuts")
    ap.add_argument("--smc-draws", type=int, default=500, help="SMC particles per chain")
    args = ap.parse_args()
    if args.method == "smc":
        results = [smc_plant(p, args.process, args.batches, args.explore, args.seed, args.smc_draws, i)
                   for i, p in enumerate(args.plants)]
    else:
        results = [run_plant(p, args.process, args.batches, args.explore, args.seed, i)
                   for i, p in enumerate(args.plants)]
    informed = sum(r["informed"] for r in results)
    covered = sum(r["coverage"] * r["informed"] for r in results if r["coverage"] is not None)
    print(json.dumps({
        "benchmark": "calibration",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "method": args.method, "batches": args.batches, "explore": args.explore, "seed": args.seed,
        "coverage_all": round(covered / informed, 3) if informed else None,
        "plants": results,
    }, indent=1))


if __name__ == "__main__":
    main()
