"""Value of information for one batch (issue 19): does measuring first pay, as predicted?

Prints JSON. Usage::

    python benchmarks/voi_batch.py --model MODEL_DIR [--process default] [--batches 200]
        [--seed 19] [--max-cases 30] [--budget default]

On the flagged batches of fresh seeds (``simulators.cases.flagged_cases``; the
model must be fitted on the same process), for each case at its detection
inspection:

1. ``recovery measure``'s analysis (``recovery.voi.batch.measure`` on the
   batch's step data, the command's default budget): its wall time (the
   latency: the command minus loading the model, which the service does once)
   and its CPU time (the analysis runs on one thread, so on a machine shared
   with other jobs the CPU time is what the wall time would be on a core of its own),
   the best candidate, whether it pays (``evsi > cost``) and the share of
   simulated readings that change the decision (``p_change``);
2. the closed loop of ``planner`` and of ``planner+measure`` on the same case
   with the same future noise (``recovery.evaluate.closed_loop``), the
   measurement's cost paid by the second. The realised gain is the difference
   of their net values; the predicted gain is what ``planner+measure`` expected
   at its first decision (``evsi - cost`` of the candidate it took, 0 where it
   took none) with its 94% interval, from the analysis's revaluation of its best
   candidates on an independent Monte-Carlo sample.

Targets: the realised gain is positive, and the mean realised gain lies inside
the mean predicted interval; latency P95 <= 5 s on 2 cores.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import time

import numpy as np


def main() -> None:
    import recovery.voi  # noqa: F401  (registers planner+measure)
    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop
    from recovery.pipeline import load_model
    from recovery.voi.batch import TINY, MeasureConfig, measure
    from simulators.cases import flagged_cases
    from simulators.definition import load_process
    from simulators.process import Simulator
    from simulators.schema import observations_frame

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="causal model fitted on --process")
    ap.add_argument("--process", default="default")
    ap.add_argument("--batches", type=int, default=200, help="fresh batches simulated")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--max-cases", type=int, default=30, help="flagged cases played (the first ones)")
    ap.add_argument("--budget", choices=["default", "tiny"], default="default")
    ap.add_argument("--out", help="also write the per-case rows here (JSON lines)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    process = load_process(None if args.process == "default" else args.process)
    model = load_model(args.model)
    if model.graph_.process.name != process.name:
        raise SystemExit(f"--model is fitted on '{model.graph_.process.name}', not '{process.name}'")
    sim = Simulator(process)
    cases, n_faulty = flagged_cases(sim, args.batches, args.seed)
    cases = cases[: args.max_cases]
    config = TINY if args.budget == "tiny" else MeasureConfig()
    planner = make_agent("planner", sim, model=model, budget=args.budget)
    measurer = make_agent("planner+measure", sim, model=model, budget=args.budget)
    measurer.measure_config = config
    rows = []
    for i, c in enumerate(cases):
        hist = observations_frame(process, c.conditions, c.obs[None], process.nominal_plan()[None],
                                  upto_step=c.detect_step)
        t, cpu = time.perf_counter(), time.process_time()
        a = measure(hist, model, seed=args.seed + i, config=config)
        latency, cpu = time.perf_counter() - t, time.process_time() - cpu
        best = a.candidates[0] if a.candidates else None
        seed = (args.seed * 7919 + i) % (2**31 - 1)
        o_p = closed_loop(sim, c, planner, seed=seed)
        o_m = closed_loop(sim, c, measurer, seed=seed)
        voi = measurer.last_voi or {"measured": False, "best": None}
        took = voi["best"] if voi["measured"] else None
        rows.append({
            "batch_id": c.batch_id, "fault": c.fault, "step": c.detect_step, "latency_s": latency,
            "cpu_s": cpu,
            "decision_now": a.decision_now, "value_now": a.value_now,
            "best": best.to_dict() if best else None,
            "best_pays": bool(best is not None and best.net > 0),
            "best_p_change": best.p_change if best else 0.0,
            "measured": bool(voi["measured"]),
            # the reading pointed to another option than the one decided without it
            "first_decision_changed": bool(voi["measured"] and voi.get("changed")),
            "predicted": took["evsi"] - took["cost"] if took else 0.0,
            "predicted_low": took["low"] - took["cost"] if took else 0.0,
            "predicted_high": took["high"] - took["cost"] if took else 0.0,
            "net_planner": o_p.net_value, "net_measure": o_m.net_value,
            "realised": o_m.net_value - o_p.net_value,
            "plans_differ": bool(not np.allclose(o_p.plan, o_m.plan) or o_p.scrapped != o_m.scrapped),
        })
        print(json.dumps({"case": i, **{k: rows[-1][k] for k in ("fault", "latency_s", "measured",
                                                                    "predicted", "realised")}}),
              file=__import__("sys").stderr, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    n = len(rows)
    lat = np.array([r["latency_s"] for r in rows])
    cpu = np.array([r["cpu_s"] for r in rows])
    real = np.array([r["realised"] for r in rows])
    pred = np.array([r["predicted"] for r in rows])
    measured = np.array([r["measured"] for r in rows])

    def mean_ci(x):
        if len(x) < 2:
            return {"mean": float(x.mean()) if len(x) else 0.0, "low": None, "high": None}
        se = x.std(ddof=1) / np.sqrt(len(x))
        return {"mean": float(x.mean()), "low": float(x.mean() - 1.881 * se), "high": float(x.mean() + 1.881 * se)}

    pred_lo = float(np.mean([r["predicted_low"] for r in rows])) if n else 0.0
    pred_hi = float(np.mean([r["predicted_high"] for r in rows])) if n else 0.0
    out = {
        "process": process.name, "batches": args.batches, "seed": args.seed, "n_faulty": n_faulty,
        "n_cases": n, "budget": args.budget, "n_states": config.n_states,
        "currency": process.economics.currency,
        "share_best_candidate_pays": float(np.mean([r["best_pays"] for r in rows])) if n else 0.0,
        "mean_p_change_best_candidate": float(np.mean([r["best_p_change"] for r in rows])) if n else 0.0,
        "share_measured_closed_loop": float(measured.mean()) if n else 0.0,
        "share_first_decision_changed": float(np.mean([r["first_decision_changed"] for r in rows])) if n else 0.0,
        "share_plans_differ": float(np.mean([r["plans_differ"] for r in rows])) if n else 0.0,
        "net_value": {"planner": float(np.mean([r["net_planner"] for r in rows])) if n else 0.0,
                      "planner+measure": float(np.mean([r["net_measure"] for r in rows])) if n else 0.0},
        "realised_gain_per_case": mean_ci(real),
        "realised_gain_measured_cases": mean_ci(real[measured]),
        "predicted_gain_per_case": {"mean": float(pred.mean()) if n else 0.0, "low": pred_lo, "high": pred_hi},
        "realised_within_predicted": bool(n and pred_lo <= real.mean() <= pred_hi),
        "latency_p50_s": float(np.median(lat)) if n else 0.0,
        "latency_p95_s": float(np.quantile(lat, 0.95)) if n else 0.0,
        "latency_max_s": float(lat.max()) if n else 0.0,
        # one thread: on a core of its own the wall time is the CPU time
        "cpu_p50_s": float(np.median(cpu)) if n else 0.0,
        "cpu_p95_s": float(np.quantile(cpu, 0.95)) if n else 0.0,
        "load_average": os.getloadavg(),
        "wall_seconds": time.perf_counter() - t0,
        "by_fault": {f: {"n": sum(r["fault"] == f for r in rows),
                         "measured": sum(r["measured"] for r in rows if r["fault"] == f),
                         "realised_gain": float(np.mean([r["realised"] for r in rows if r["fault"] == f]))}
                     for f in sorted({r["fault"] for r in rows})},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
