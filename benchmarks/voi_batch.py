"""Value of information for one batch (issue 19): does measuring first pay, as predicted?

Prints JSON. Usage::

    python benchmarks/voi_batch.py --model MODEL_DIR [--process default] [--batches 200]
        [--seed 19] [--max-cases 30] [--budget default] [--replays 1000] [--readings 64]
        [--latency-cases 30] [--full-loops] [--out ROWS.jsonl]

On the flagged batches of fresh seeds (``simulators.cases.flagged_cases``; the
model must be fitted on the same process), for each case at its detection
inspection:

1. latency (the first ``--latency-cases`` cases): ``recovery measure``'s analysis
   (``recovery.voi.batch.measure`` on the batch's step data, the command's
   default budget), wall and CPU time (one thread: on a machine shared with
   other jobs the CPU time is what the wall time would be on a core of its own);
2. the first decision of ``planner`` and of ``planner+measure`` on the same
   situation with the same seed (paired: the two differ only where the second
   measured and the reading pointed elsewhere), and the gain of the second,
   the measurement's cost paid, by three estimators of the same comparison:

   - ``realised``: one closed loop each (``recovery.evaluate.closed_loop``, the
     case's one future). Where the two first decisions are identical the two
     loops are identical too (same agent code after it, same seeds, same noise),
     so the gain is exactly minus the cost paid and the loops are not run
     (``--full-loops`` runs them anyway);
   - ``rb``: each first decision held to the end and scored on the batch's
     true state over ``--replays`` futures of the process noise, common to both
     (``recovery.evaluate.decision_value``): the closed loop's value averaged
     over the future noise, less the later re-planning;
   - ``rb_readings``: the same, also averaged over ``--readings`` gauge readings
     of the true batch (bars picked and gauge noise), each followed by the
     agent's own re-choice: the expected gain of the agent's policy on that
     batch, the quantity the analysis predicts (its ``evsi - cost``) on average;
3. the predicted gain: ``evsi - cost`` of the candidate ``planner+measure``
   took (0 where it took none), with its 94% interval: the value the agent
   decided on (its best candidate valued on a sample independent of the one
   that chose it, ``MeasureConfig.confirm``); with ``--forecast`` also an
   independent forecast (``recovery.voi.batch.value_candidate`` on a fourth
   sample), since the gate's value is biased up on the cases it lets through.

Targets: the realised gain is positive, and the mean realised gain lies inside
the mean predicted interval; latency P95 <= 5 s on 2 cores.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import sys
import time

import numpy as np


def main() -> None:
    import recovery.voi  # noqa: F401  (registers planner+measure)
    from recovery.agents import make_agent
    from recovery.evaluate import closed_loop, decision_value, situation_for
    from recovery.pipeline import load_model
    from recovery.voi.agent import gauge_reading
    from recovery.voi.batch import TINY, MeasureConfig, measure, value_candidate
    from recovery.voi.preposterior import decide, posterior_weights, reading_loglik
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
    ap.add_argument("--replays", type=int, default=1000, help="futures per decision (rb estimators)")
    ap.add_argument("--readings", type=int, default=64, help="gauge readings per measured case (rb_readings)")
    ap.add_argument("--latency-cases", type=int, default=30, help="cases whose analysis is timed")
    ap.add_argument("--full-loops", action="store_true", help="run both closed loops on every case")
    ap.add_argument("--forecast", action="store_true",
                    help="value each candidate taken once more on an independent sample (unbiased forecast)")
    ap.add_argument("--out", help="also write the per-case rows here (JSON lines)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    process = load_process(None if args.process == "default" else args.process)
    model = load_model(args.model)
    if model.graph_.process.name != process.name:
        raise SystemExit(f"--model is fitted on '{model.graph_.process.name}', not '{process.name}'")
    sim = Simulator(process)
    eco = process.economics
    cases, n_faulty = flagged_cases(sim, args.batches, args.seed)
    cases = cases[: args.max_cases]
    config = TINY if args.budget == "tiny" else MeasureConfig()
    planner = make_agent("planner", sim, model=model, budget=args.budget)
    measurer = make_agent("planner+measure", sim, model=model, budget=args.budget)
    measurer.measure_config = config
    nominal = process.nominal_plan()
    out_file = open(args.out, "w") if args.out else None
    rows = []
    for i, c in enumerate(cases):
        row = {"batch_id": c.batch_id, "fault": c.fault, "step": c.detect_step}
        if i < args.latency_cases:
            hist = observations_frame(process, c.conditions, c.obs[None], nominal[None], upto_step=c.detect_step)
            t, cpu = time.perf_counter(), time.process_time()
            a = measure(hist, model, seed=args.seed + i, config=config)
            row["latency_s"], row["cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
            best = a.candidates[0] if a.candidates else None
            row.update(decision_now=a.decision_now, value_now=a.value_now,
                       best=best.to_dict() if best else None, best_pays=bool(best is not None and best.net > 0),
                       best_p_change=best.p_change if best else 0.0)
        seed = (args.seed * 7919 + i) % (2**31 - 1)
        # The first decisions, paired: the same situation and seed (closed_loop's first call).
        planner.reset()
        measurer.reset()
        prop_p = planner.propose(situation_for(sim, c, c.detect_step, c.obs, nominal, c.state, truth=False),
                                 seed=seed)
        prop_m = measurer.propose(situation_for(sim, c, c.detect_step, c.obs, nominal, c.state, truth=True),
                                  seed=seed)
        scrap_p, scrap_m = (prop.extra.get("decision") == "scrap" for prop in (prop_p, prop_m))
        cost = float(prop_m.extra.get("measurement_cost", 0.0))
        same = bool(scrap_p == scrap_m and np.allclose(prop_p.plan, prop_m.plan))
        voi = measurer.last_voi or {"measured": False, "best": None}
        took = voi["best"] if voi["measured"] else None
        v_p, v_m = decision_value(sim, c, [(prop_p.plan, scrap_p), (prop_m.plan, scrap_m)],
                                  replays=args.replays, seed=seed)
        row.update(decision_planner=prop_p.extra.get("decision"), decision_measure=prop_m.extra.get("decision"),
                   measured=bool(voi["measured"]), cost=cost,
                   first_decision_changed=not same,
                   predicted=took["evsi"] - took["cost"] if took else 0.0,
                   predicted_low=took["low"] - took["cost"] if took else 0.0,
                   predicted_high=took["high"] - took["cost"] if took else 0.0,
                   value_planner=float(v_p), value_measure=float(v_m), rb=float(v_m - v_p - cost))
        # The expected gain over the gauge's readings of the true batch, as the agent re-chooses.
        rb_r, p_change_true = (-cost, 0.0) if voi["measured"] else (0.0, 0.0)
        if voi["measured"]:
            prep = measurer.last_analysis.prepared
            ch = process.characteristic(took["characteristic"])
            ci = process.char_index[ch.name]
            binary = ch.role == "crack"
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB0B]))
            ys = np.stack([gauge_reading(c.state, ci, took["sample"], 0.0 if binary else ch.gauge_sigma, rng)
                           for _ in range(args.readings)])
            x = prep.bars.state.reshape(prep.bars.n, process.bars_per_batch, process.n_chars)[:, :, ci]
            w = posterior_weights(reading_loglik(ys, x, ch.gauge_sigma, binary=binary), leave_one_out=False)
            ks = decide(w @ prep.values.T, prep.kinds, min_gain=config.min_gain)
            opts = [(pl, False) for pl in prep.plans] + [(c_plan, True) for c_plan in [nominal]]
            v_opt = decision_value(sim, c, opts, replays=args.replays, seed=seed)
            gains = np.where(ks == prep.now, 0.0, v_opt[ks] - v_p) - cost
            rb_r, p_change_true = float(gains.mean()), float((ks != prep.now).mean())
            row.update(analysis_now=prep.kinds[prep.now], option_values=v_opt.tolist(),
                       # the analysis's own comparison: the option re-chosen against its own "now"
                       rb_readings_vs_analysis_now=float(np.mean(v_opt[ks] - v_opt[prep.now]) - cost))
        row.update(rb_readings=rb_r, p_change_true=p_change_true)
        if voi["measured"] and args.forecast:
            # The gate's value is biased up on the cases it lets through (taken because it
            # was high); a fourth, independent valuation of the same candidate is not.
            best_c = measurer.last_analysis.confirmed
            sit_m = situation_for(sim, c, c.detect_step, c.obs, nominal, c.state, truth=True)
            f = value_candidate(measurer.last_analysis, sit_m, model, best_c,
                                seed=int(np.random.SeedSequence([seed, 4]).generate_state(1)[0] % 2**31),
                                config=config)
            row.update(forecast=f.evsi - f.cost, forecast_low=f.low - f.cost, forecast_high=f.high - f.cost)
        elif args.forecast:
            row.update(forecast=0.0, forecast_low=0.0, forecast_high=0.0)
        a_m = measurer.last_analysis
        if a_m is not None and a_m.candidates:
            # Calibration of the posterior the analysis valued on: where the true batch mean of
            # the best candidate's characteristic falls among the draws' batch means (PIT), and
            # its distance from their mean in posterior sds. A posterior wider than the truth
            # (PIT bunched near 0.5, |z| small) makes readings look more informative than they are.
            ci = process.char_index[a_m.candidates[0].characteristic]
            bars = a_m.prepared.bars
            dm = bars.state.reshape(bars.n, process.bars_per_batch, process.n_chars)[:, :, ci].mean(axis=1)
            tm = float(c.state[:, ci].mean())
            row.update(best_revalued=a_m.candidates[0].to_dict(),
                       confirmed=a_m.confirmed.to_dict() if a_m.confirmed else None,
                       pit=float((dm < tm).mean() + 0.5 * (dm == tm).mean()),
                       z=float((tm - dm.mean()) / dm.std()) if dm.std() > 0 else 0.0)
        if same and not args.full_loops:
            row.update(realised=-cost, loops_run=False)
        else:
            o_p = closed_loop(sim, c, planner, seed=seed)
            o_m = closed_loop(sim, c, measurer, seed=seed)
            row.update(realised=o_m.net_value - o_p.net_value, loops_run=True,
                       net_planner=o_p.net_value, net_measure=o_m.net_value)
        rows.append(row)
        if out_file:
            out_file.write(json.dumps(row) + "\n")
            out_file.flush()
        print(json.dumps({"case": i, **{k: row.get(k) for k in ("fault", "latency_s", "measured", "predicted",
                                                                "realised", "rb", "rb_readings")}}),
              file=sys.stderr, flush=True)
    n = len(rows)

    def col(k, sub=None):
        return np.array([r[k] for r in (rows if sub is None else sub) if k in r], dtype=np.float64)

    def mean_ci(x):
        if len(x) < 2:
            return {"mean": float(x.mean()) if len(x) else 0.0, "low": None, "high": None}
        se = x.std(ddof=1) / np.sqrt(len(x))
        return {"mean": float(x.mean()), "low": float(x.mean() - 1.881 * se), "high": float(x.mean() + 1.881 * se)}

    lat, cpu = col("latency_s"), col("cpu_s")
    pred = col("predicted")
    measured = [r for r in rows if r["measured"]]
    pred_lo, pred_hi = (float(col("predicted_low").mean()), float(col("predicted_high").mean())) if n else (0.0, 0.0)
    gains = {k: mean_ci(col(k)) for k in ("realised", "rb", "rb_readings")}
    out = {
        "process": process.name, "batches": args.batches, "seed": args.seed, "n_faulty": n_faulty,
        "n_cases": n, "budget": args.budget, "n_states": config.n_states, "replays": args.replays,
        "readings": args.readings, "currency": eco.currency,
        "share_best_candidate_pays": float(col("best_pays").mean()) if len(lat) else None,
        "mean_p_change_best_candidate": float(col("best_p_change").mean()) if len(lat) else None,
        "share_measured_closed_loop": len(measured) / n if n else 0.0,
        "share_first_decision_changed": float(col("first_decision_changed").mean()) if n else 0.0,
        "mean_p_change_true_batch": float(col("p_change_true").mean()) if n else 0.0,
        # posterior calibration at the best candidate's characteristic: a calibrated posterior
        # gives PIT uniform (mean |PIT - 0.5| = 0.25) and z of sd 1
        "pit_mean_abs_dev": float(np.mean(np.abs(col("pit") - 0.5))) if len(col("pit")) else None,
        "z_sd": float(col("z").std()) if len(col("z")) > 1 else None,
        "predicted_revalued_measured_cases": float(np.mean([r["best_revalued"]["evsi"] - r["best_revalued"]["cost"]
                                                            for r in measured if r.get("best_revalued")]))
        if measured else None,
        "share_analysis_now_differs_from_planner": float(np.mean([r["analysis_now"] != r["decision_planner"]
                                                                  for r in measured])) if measured else None,
        "value_first_decision": {"planner": float(col("value_planner").mean()) if n else 0.0,
                                 "planner+measure": float(col("value_measure").mean()) if n else 0.0},
        "gain_per_case": gains,
        "gain_measured_cases": {k: mean_ci(col(k, measured)) for k in ("realised", "rb", "rb_readings",
                                                                       "rb_readings_vs_analysis_now")},
        "predicted_gain_per_case": {"mean": float(pred.mean()) if n else 0.0, "low": pred_lo, "high": pred_hi},
        "forecast_gain_per_case": ({"mean": float(col("forecast").mean()), "low": float(col("forecast_low").mean()),
                                    "high": float(col("forecast_high").mean())} if args.forecast and n else None),
        "predicted_gain_measured_cases": float(col("predicted", measured).mean()) if measured else None,
        "within_predicted": {k: bool(n and pred_lo <= g["mean"] <= pred_hi) for k, g in gains.items()},
        "latency_cases": len(lat),
        "latency_p50_s": float(np.median(lat)) if len(lat) else None,
        "latency_p95_s": float(np.quantile(lat, 0.95)) if len(lat) else None,
        # one thread: on a core of its own the wall time is the CPU time
        "cpu_p50_s": float(np.median(cpu)) if len(cpu) else None,
        "cpu_p95_s": float(np.quantile(cpu, 0.95)) if len(cpu) else None,
        "load_average": os.getloadavg(),
        "wall_seconds": time.perf_counter() - t0,
        "by_fault": {f: {"n": sum(r["fault"] == f for r in rows),
                         "measured": sum(r["measured"] for r in rows if r["fault"] == f),
                         "rb": float(np.mean([r["rb"] for r in rows if r["fault"] == f]))}
                     for f in sorted({r["fault"] for r in rows})},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
