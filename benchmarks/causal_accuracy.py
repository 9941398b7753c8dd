"""Accuracy of the causal model against the simulator's ground truth.

Prints JSON. Usage::

    python benchmarks/causal_accuracy.py [--process default|small] [--batches 1000]
        [--seed 1] [--cases 3000] [--calibration 800] [--draws 500] [--tune 500]
        [--save DIR | --model DIR]

1. Fit the model to ``--batches`` simulated historical batches (faults at their
   catalogue rates, 20% of batches with explored levers), or with ``--model``
   load one saved by ``--save`` (same process and seed) and skip the fit.
2. **Parameters**: the share of mechanism parameters whose true value lies in
   the 94% HDI (:func:`recovery.causal.validation.parameter_coverage`).
3. **Root cause**: top-1 / top-3 accuracy over the fault catalogue on flagged
   batches of fresh seeds (:func:`~recovery.causal.validation.root_cause_accuracy`).
4. **Calibration**: predicted P(accept) against the simulated outcome, with a
   naive baseline (:func:`~recovery.causal.validation.calibration`).

The definitions of the true counterparts and of the held-out decisions are in
``recovery/causal/validation.py``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import time
import warnings

import numpy as np

from recovery.causal.model import CausalModel, FitConfig
from recovery.causal.validation import calibration, parameter_coverage, root_cause_accuracy
from recovery.evaluate import flagged_cases
from simulators.campaign import simulate_chunk
from simulators.definition import load_process
from simulators.process import Simulator
from simulators.schema import observations_frame


# ---------------------------------------------------------------------------
# Query latency
# ---------------------------------------------------------------------------

def query_latency(model: CausalModel, sim: Simulator, n_batches: int, seed: int) -> dict:
    """Median and P95 wall time of state, predict and root_cause for one flagged
    batch (warm: one untimed call first compiles the numba filter)."""
    p = sim.process
    cases, _ = flagged_cases(sim, n_batches, seed)
    hists = [observations_frame(p, c.conditions, c.obs[None], p.nominal_plan()[None], upto_step=c.detect_step)
             for c in cases]
    if not hists:
        return {"n": 0}
    model.state(hists[0]), model.predict(hists[0]), model.root_cause(hists[0])
    out = {"n": len(hists), "seed": seed}
    for name in ("state", "predict", "root_cause"):
        fn = getattr(model, name)
        lat = []
        for h in hists:
            t = time.perf_counter()
            fn(h)
            lat.append(time.perf_counter() - t)
        out[name] = {"median_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)),
                     "max_s": float(np.max(lat))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="default")
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=3000, help="fresh batches for root cause")
    ap.add_argument("--calibration", type=int, default=800, help="fresh batches for calibration")
    ap.add_argument("--truth", type=int, default=20000, help="batches per truth simulation")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--latency", type=int, default=600, help="fresh batches for query latency")
    ap.add_argument("--save", help="also save the fitted model to this directory")
    ap.add_argument("--model", help="load this saved model instead of fitting (fit figures are then null)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    process = load_process(args.process)
    sim = Simulator(process)
    res = simulate_chunk(process, args.batches, 0, args.seed)
    if args.model:
        model, fit_s = CausalModel.load(args.model), None
        if model.graph_.process.digest != process.digest:
            ap.error(f"{args.model} is a model of '{model.graph_.process.name}', not of '{process.name}'")
    else:
        t0 = time.perf_counter()
        model = CausalModel(process, config=FitConfig(draws=args.draws, tune=args.tune, chains=args.chains,
                                                      seed=args.seed)).fit(res.observations, progress=False)
        fit_s = time.perf_counter() - t0
    if args.save:
        model.save(args.save)
    rep = model.report_
    out = {
        "benchmark": "causal_accuracy", "process": process.name, "train_batches": args.batches,
        "seed": args.seed, "fit_seconds": fit_s, "model": args.model,
        "fit": {"rhat_max": rep.rhat_max, "ess_bulk_min": rep.ess_bulk_min, "divergences": rep.divergences,
                "parameters": rep.n_parameters},
        "parameters": {k: v for k, v in parameter_coverage(model, sim, args.truth, args.seed + 100).items()
                       if k != "items"},
        "root_cause": root_cause_accuracy(model, sim, args.cases, args.seed + 200),
        "latency": query_latency(model, sim, args.latency, args.seed + 400),
        "calibration": calibration(model, sim, args.calibration, args.seed + 300,
                                   base_rate=float(res.accepted.mean())),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
