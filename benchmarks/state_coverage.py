"""Is the causal model's posterior of a batch's hidden state calibrated at the decision step?

Prints JSON. Usage::

    python benchmarks/state_coverage.py --plant examples/plants/plant_b_hot_bath.toml \
        --workdir /tmp/plant3/work [--batches 300] [--seed 7] [--eval-seed S] [--draws 256]
        [--decompose [--pairs-only]] [--faults F1,F2] [--rows]

On the flagged batches of ``--batches`` fresh batches of the plant (the cases
``recovery evaluate`` plays, so the truth is known), at the detection inspection:

1. the state draws (``CausalModel.state_draws``, the draws the planner's rollouts
   start from) against the true batch means, per characteristic: coverage of the
   central 50% and 94% intervals, the z-score of the truth
   ``(truth - mean) / sd`` (calibrated: mean 0, sd 1) and the same for the
   batch's own sample mean (``x̄ ± s / sqrt(k)``), the yardstick of "what the
   sample alone says";
2. with ``--decompose``, the planner's (calibrated) first plan scored five ways
   (256 rollouts each): its own P(accept); the same rollouts without the
   bar-spread draws (``rollouts._spread_factors``); from the true batch means
   with the model's bars; from the true bars with the planner's physics draws;
   and the plant simulator from the true bars (the benchmark's yardstick);
   with ``--pairs-only`` only the first and the last, binned as
   ``plant_recovery.py`` bins them (no closed loop: a fraction of its cost).

The fitted model and calibration come from ``--workdir`` as
``benchmarks/plant_recovery.py`` keeps them (history of seed ``seed + 1``).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from plant_recovery import reliability_bins  # benchmarks/ is this script's sys.path[0]
from recovery.evaluate import EVAL_CHUNK, chunk_seed, flagged_cases, situation_for
from simulators.definition import load_process
from simulators.process import Simulator


def load(workdir: str, process, plant, history: int, seed: int, fit: str = "nuts"):
    """The model and calibration that ``plant_recovery.py --workdir`` saved."""
    from recovery.calibration.posterior import PhysicsPosterior
    from recovery.causal.model import CausalModel

    w = Path(workdir)
    m = w / f"model-{plant.digest}-{history}-{seed}-{fit}"
    c = w / f"calibration-{plant.digest}-{process.digest}-{history}-{seed}"
    if not (m / "model.json").exists():
        raise SystemExit(f"no fitted model in {m}: run benchmarks/plant_recovery.py with --workdir first")
    post = PhysicsPosterior.load(c) if PhysicsPosterior.exists(c) else None
    return CausalModel.load(m), post


def healthy_means(world, step: int, day: float, n: int, seed: int) -> np.ndarray:
    """Batch means of ``n`` healthy batches of the plant after ``step`` under nominal levers."""
    p = world.process
    rng = np.random.default_rng(seed)
    cond = world.sample_conditions(n, rng, time=np.full(n, day), faults=False)
    st = world.new_state(n)
    world.run(st, 0, step, p.nominal_plan(), cond, rng)
    return st.reshape(n, p.bars_per_batch, p.n_chars).mean(axis=(0, 1))


def state_rows(model, world, process, case, hist, n: int, seed: int) -> list[dict]:
    """One row per modelled characteristic at the detection step: the batch mean where the
    model knows its level (``absolute``), else its deviation from a healthy batch of the
    plant under nominal levers (``relative``; the truth's reference from 64 simulated batches)."""
    d = model.state_draws(hist, n, seed=seed)
    out = []
    m = hist[(hist["kind"].astype(str) == "measurement") & (hist["step"] == d.step)]
    ref = None
    for c, name in enumerate(d.names):
        ci = process.char_index[name]
        if process.characteristics[ci].role == "crack":
            continue
        v = d.values[:, c]
        truth = float(case.state[:, ci].mean())
        if not d.absolute[c]:
            if ref is None:
                ref = healthy_means(world, d.step, d.day, 64, seed)
            truth -= float(ref[ci])
            if truth == 0.0 and not case.state[:, ci].any():
                continue    # not made yet (a bend before its bending): nothing to estimate
        lo50, hi50 = np.quantile(v, [0.25, 0.75])
        lo94, hi94 = np.quantile(v, [0.03, 0.97])
        sd = float(v.std())
        row = {"batch": case.batch_id, "fault": case.fault, "step": d.step, "char": name, "truth": truth,
               "absolute": bool(d.absolute[c]),
               "mean": float(v.mean()), "sd": sd, "z": (truth - float(v.mean())) / sd if sd > 0 else None,
               "in50": bool(lo50 <= truth <= hi50), "in94": bool(lo94 <= truth <= hi94)}
        x = m.loc[m["variable"].astype(str) == name, "value"].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if len(x) >= 3:
            se = max(float(x.std(ddof=1)), process.characteristics[ci].gauge_sigma) / np.sqrt(len(x))
            row["sample_z"] = (truth - float(x.mean())) / se
            row["sample_n"] = int(len(x))
        out.append(row)
    return out


def summarise(rows: list[dict]) -> dict:
    by = {}
    for r in rows:
        by.setdefault(r["char"] + ("" if r["absolute"] else " (relative)"), []).append(r)
    out = {}
    for name, rs in sorted(by.items()):
        z = np.array([r["z"] for r in rs if r["z"] is not None])
        sz = np.array([r["sample_z"] for r in rs if "sample_z" in r])
        out[name] = {"n": len(rs), "cover50": float(np.mean([r["in50"] for r in rs])),
                     "cover94": float(np.mean([r["in94"] for r in rs])),
                     "z_mean": float(z.mean()) if len(z) else None, "z_sd": float(z.std()) if len(z) else None,
                     "sample_z_mean": float(sz.mean()) if len(sz) else None,
                     "sample_z_sd": float(sz.std()) if len(sz) else None}
    z = np.array([r["z"] for r in rows if r["z"] is not None])
    out["all"] = {"n": len(rows), "cover50": float(np.mean([r["in50"] for r in rows])),
                  "cover94": float(np.mean([r["in94"] for r in rows])),
                  "z_mean": float(z.mean()), "z_sd": float(z.std())}
    return out


def decompose(world, process, model, post, case, sit, seed: int, n: int, truth_seed: int,
              pairs_only: bool = False) -> dict:
    """The planner's first plan on this case, scored five ways (see module doc).

    The first decision is the one ``closed_loop`` makes (same situation, same seed),
    so that ``own`` against ``plant_true_bars`` (rollouts of seed ``truth_seed``) are
    ``plant_recovery.py``'s reliability pairs.
    """
    from recovery.agents import rollouts
    from recovery.agents.planner_agent import PlannerAgent

    agent = PlannerAgent(model, posterior=post)
    prop = agent._propose(sit, seed)
    plan = prop.plan
    ins = world.rollout(case.state, case.detect_step, plan[None], n, truth_seed, case.conditions)
    plant = float(world.process.accepts(ins[0]).mean())
    out = {"batch": case.batch_id, "fault": case.fault, "step": case.detect_step, "plan": plan.tolist(),
           "own": prop.p_accept, "plant_true_bars": plant,
           "decision": prop.extra.get("decision"), "from_sample": list(prop.extra.get("state_from_sample", []))}
    if pairs_only:
        return out
    phys = agent.physics_draws(n, seed + 1)

    def own(**patch) -> float:
        saved = {k: getattr(rollouts, k) for k in patch}
        try:
            for k, v in patch.items():
                setattr(rollouts, k, v)
            bars = rollouts.posterior_bars(agent.sim, model, sit.history, n, seed=seed + 1, params=phys)
        finally:
            for k, v in saved.items():
                setattr(rollouts, k, v)
        return float(rollouts.rollout_objective(agent.sim, bars, seed=seed + 1)(plan[None])[1][0])

    base = own()
    no_spread = own(_spread_factors=lambda *a, **k: {})
    draws_of = model.state_draws

    def true_means(hist, k, seed=0, **kw):
        d = draws_of(hist, k, seed=seed, **kw)
        if d.step != case.detect_step:
            return d
        v = d.values.copy()
        for c, name in enumerate(d.names):
            if d.absolute[c]:
                v[:, c] = case.state[:, process.char_index[name]].mean()
        return replace(d, values=v)

    model.state_draws = true_means
    try:
        truth_means = own(_spread_factors=lambda *a, **k: {})
    finally:
        del model.state_draws
    sim = Simulator(process)
    ins = sim.rollout(case.state, case.detect_step, plan[None], n, seed + 1, case.conditions, params=phys)
    true_bars = float(process.accepts(ins[0]).mean())
    return {**out, "own_rescored": base, "no_spread_draws": no_spread, "true_means_model_bars": truth_means,
            "true_bars_planner_physics": true_bars}


def bins(pairs: list[dict]) -> list[dict]:
    """Own P(accept) against the plant's from the true state, in 0.1-wide bins (as
    ``plant_recovery.reliability``)."""
    if not pairs:
        return []
    return reliability_bins(np.array([x["own"] for x in pairs]), np.array([x["plant_true_bars"] for x in pairs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", required=True)
    ap.add_argument("--process", default=None)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7, help="the benchmark's seed: fitted model and calibration "
                                                          "of history seed + 1 (default 7)")
    ap.add_argument("--eval-seed", type=int, default=None,
                    help="seed of the fresh batches (default: --seed, the cases plant_recovery.py plays)")
    ap.add_argument("--draws", type=int, default=256)
    ap.add_argument("--decompose", action="store_true")
    ap.add_argument("--pairs-only", action="store_true",
                    help="with --decompose: only the planner's own P(accept) and the plant's (no state rows)")
    ap.add_argument("--common-truth-seed", action="store_true",
                    help="the plant's rollouts of every case with --seed, as plant_recovery.py did before "
                         "(default: each case its own seed)")
    ap.add_argument("--faults", default=None, help="only the cases of these faults (comma-separated)")
    ap.add_argument("--rows", action="store_true", help="print every row, not only the summaries")
    a = ap.parse_args()
    process, plant = load_process(a.process), load_process(a.plant)
    world = Simulator(plant)
    model, post = load(a.workdir, process, plant, a.history, a.seed)
    rows, parts = [], []
    t = time.perf_counter()
    for c in range((a.batches + EVAL_CHUNK - 1) // EVAL_CHUNK):
        n = min(EVAL_CHUNK, a.batches - c * EVAL_CHUNK)
        cs = chunk_seed(a.seed if a.eval_seed is None else a.eval_seed, c)
        cases, _ = flagged_cases(world, n, cs, first_id=c * EVAL_CHUNK + 1)
        for i, case in enumerate(cases):
            if a.faults and case.fault not in a.faults.split(","):
                continue
            sit = situation_for(world, case, case.detect_step, case.obs, plant.nominal_plan(), case.state,
                                truth=False, process=process)
            seed = (cs + 7919 * i) % (2**31 - 1)
            if not a.pairs_only:
                rows += state_rows(model, world, process, case, sit.history, a.draws, seed)
            if a.decompose:
                # the plant's rollouts get each case's own seed: one seed for all cases (as
                # plant_recovery.py had it) gives every case the same future faults, an error
                # of up to 0.02 that no number of cases averages away
                parts.append(decompose(world, process, model, post, case, sit, seed, a.draws,
                                       a.seed if a.common_truth_seed else seed + 1, a.pairs_only))
                print(f"{case.batch_id}: {parts[-1]}", file=sys.stderr, flush=True)
    out = {"plant": a.plant, "process": process.source, "batches": a.batches, "seed": a.seed,
           "eval_seed": a.seed if a.eval_seed is None else a.eval_seed,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load": os.getloadavg()},
           "state": summarise(rows) if rows else None, "seconds": time.perf_counter() - t}
    if a.rows:
        out["rows"] = rows
    if parts:
        keys = (["own", "plant_true_bars"] if a.pairs_only else
                ["own", "own_rescored", "no_spread_draws", "true_means_model_bars", "true_bars_planner_physics",
                 "plant_true_bars"])
        out["decomposition"] = {"n": len(parts), "mean": {k: float(np.mean([p[k] for p in parts])) for k in keys}}
        hi = [p for p in parts if 0.7 <= p["own"] < 0.9]
        out["decomposition"]["own_0.7_0.9"] = {"n": len(hi), **{k: float(np.mean([p[k] for p in hi]))
                                                                 for k in keys}} if hi else None
        out["decomposition"]["bins"] = bins(parts)
        out["decomposition"]["cases"] = parts
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
