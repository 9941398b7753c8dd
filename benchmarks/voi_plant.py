"""Value of information for the plant, checked against the simulator (issue 19 part 2).

Prints JSON. Usage::

    python benchmarks/voi_plant.py --model MODEL_DIR --data HISTORY [--predict-batches 600]
        [--eval-batches 1000] [--seed 0] [--eval-seed 2026] [--top 3] [--out-dir DIR]

1. **Predict.** ``recovery sensors --model MODEL_DIR --data HISTORY --json`` on the default
   candidate set: a season of ``--predict-batches`` batches of the model's world
   (calibrated physics, fault rates from the causal model), the heuristic policy on
   flagged batches, the 94% interval for a season of ``--eval-batches`` batches (the
   size of the check below, so that the interval is for the figure it will measure).
2. **Write** the top ``--top`` changes into copies of the process file
   (``recovery.voi.plant.changed_process``, what ``recovery sensors --apply N --out FILE`` writes).
3. **Measure.** Play ``--eval-batches`` fresh batches (seed ``--eval-seed``, never used
   by the prediction) of the *true* simulator (the process file's own physics and
   fault rates: the world the history was simulated from) under the original file
   and under each changed file, with the same policy, the same batches and the same
   noise (``recovery.voi.plant.play_season``: ``recovery evaluate``'s closed loop over
   every batch of the season, see docs/value-of-information.md for why the flagged
   cases of ``recovery evaluate`` alone cannot measure a change of inspection plan).
   For reference, ``recovery evaluate --process FILE --agents heuristic,none`` is also
   run on every file (its net value over its own flagged cases).
4. **Report** predicted gain and interval against the measured gain, per 1,000 batches;
   targets: every measured gain inside its predicted interval, and the top 3's order by
   net gain the same in the measurement. When costs dominate, the top 3 by net may be
   changes that alter no decision (gain 0, interval 0..0: a weak check), so the
   ``--by-gain`` changes with the largest predicted |gain| are checked the same way.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def run_cli(argv: list[str]) -> dict:
    """``recovery ARGV --json`` in this process; its JSON output."""
    from recovery.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"recovery {' '.join(argv)} exited with {rc}")
    return json.loads(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--predict-batches", type=int, default=600)
    ap.add_argument("--eval-batches", type=int, default=1000)
    ap.add_argument("--world-draws", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=2026)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--by-gain", type=int, default=3,
                    help="also check this many further changes with the largest predicted |gain|")
    ap.add_argument("--out-dir", default=None, help="where the changed files go (default: a temp folder)")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the reference 'recovery evaluate' runs")
    args = ap.parse_args()

    from recovery.voi.plant import HeuristicPolicy, inspection_cost, play_season, world_from_file
    from simulators.definition import load_process

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="voi-plant-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["sensors", "--model", args.model, "--data", args.data, "--batches", str(args.predict_batches),
              "--season", str(args.eval_batches), "--world-draws", str(args.world_draws),
              "--seed", str(args.seed), "--json", "--quiet"]
    t0 = time.perf_counter()
    pred = run_cli(common)
    t_pred = time.perf_counter() - t0
    ranked = pred["candidates"]
    top = ranked[:args.top]
    # Costs dominate the net ranking when most changes cannot alter a decision (gain exactly 0):
    # the top by net may all be such ties. So the changes with the largest predicted |gain| are
    # checked as well: they test the prediction where it says something.
    by_gain = sorted(ranked[args.top:], key=lambda r: -abs(r["gain_per_1000"]))[:args.by_gain]
    checked = [("net", k, r) for k, r in enumerate(top, start=1)] + \
              [("gain", k, r) for k, r in enumerate(by_gain, start=1)]
    # the changes as `recovery sensors --apply N --out FILE` writes them (the same function), from
    # the ranking made above rather than re-simulating the season once per file
    from recovery.voi.candidates import default_candidates
    from recovery.voi.plant import changed_process

    base_text = (Path(args.model) / "process.toml").read_text("utf-8")
    base = load_process(str(Path(args.model) / "process.toml"))
    cands = default_candidates(base)
    plans, files = [base], []
    for what, k, r in checked:
        f = out_dir / f"changed_{what}_{k}.toml"
        text, _ = changed_process(base_text, base, cands[r["index"]], gate_seed=args.seed)
        f.write_text(text, "utf-8")
        files.append(f)
        plans.append(load_process(str(f)))

    # the truth: the process file's own world, fresh seeds
    t0 = time.perf_counter()
    world = world_from_file(base)
    res = play_season(world, plans, HeuristicPolicy(base), args.eval_batches, args.eval_seed)
    t_eval = time.perf_counter() - t0
    rows = []
    for j, (what, k, r) in enumerate(checked, start=1):
        d = res.net[j] - res.net[0]
        g = 1000 * float(d.mean())
        se = 1000 * float(d.std(ddof=1) / np.sqrt(len(d)))
        cost = 1000 * float(inspection_cost(plans[j]) - inspection_cost(base))
        rows.append({"set": what, "rank": k, "label": r["label"], "change": r["change"], "step": r["step"],
                     "characteristic": r["characteristic"], "sample": r["sample"],
                     "predicted_gain_per_1000": r["gain_per_1000"], "low": r["low"], "high": r["high"],
                     "measured_gain_per_1000": g, "measured_se_per_1000": se,
                     "inside_interval": bool(r["low"] <= g <= r["high"]),
                     "cost_per_1000": cost, "predicted_net_per_1000": r["gain_per_1000"] - cost,
                     "measured_net_per_1000": g - cost,
                     "measured_recovered_per_1000": 1000 * float(res.accepted[j].mean() - res.accepted[0].mean()),
                     "file": str(files[j - 1])})
    top_rows = [r for r in rows if r["set"] == "net"]
    gain_rows = [r for r in rows if r["set"] == "gain"]
    order_pred = [r["rank"] for r in top_rows]
    order_meas = [r["rank"] for r in sorted(top_rows, key=lambda r: -r["measured_net_per_1000"])]
    # the same order both sides: by signed gain, best first
    gain_pred = [r["rank"] for r in sorted(gain_rows, key=lambda r: -r["predicted_gain_per_1000"])]
    gain_meas = [r["rank"] for r in sorted(gain_rows, key=lambda r: -r["measured_gain_per_1000"])]

    evaluate = None
    if not args.no_evaluate:
        evaluate = []
        for name, f in [("original", str(Path(args.model) / "process.toml"))] + \
                       [(f.stem, str(f)) for f in files]:
            e = run_cli(["evaluate", "--process", f, "--agents", "heuristic,none", "--batches",
                         str(args.eval_batches), "--seed", str(args.eval_seed), "--json", "--quiet"])
            evaluate.append({"file": name, "n_flagged": e["n_flagged"],
                             "heuristic_net_value_flagged": e["agents"]["heuristic"]["net_value"],
                             "none_net_value_flagged": e["agents"]["none"]["net_value"]})

    print(json.dumps({
        "benchmark": "voi_plant",
        "model": args.model, "data": args.data,
        "predict": {"batches": args.predict_batches, "seed": args.seed, "world": pred["world"],
                    "policy": pred["policy"], "season": pred["season"], "seconds": t_pred,
                    "n_candidates": len(pred["candidates"]), "baseline": pred["baseline"],
                    "flag_check": pred["flag_check"],
                    "all_candidates": [{k: c[k] for k in ("label", "gain_per_1000", "low", "high",
                                                          "cost_per_1000", "net_per_1000")}
                                       for c in pred["candidates"]]},
        "measure": {"batches": args.eval_batches, "seed": args.eval_seed, "world": world.source,
                    "seconds": t_eval,
                    "baseline_net_value_per_batch": float(res.net[0].mean()),
                    "baseline_accepted": float(res.accepted[0].mean())},
        "top": top_rows,
        "all_inside": all(r["inside_interval"] for r in top_rows),
        "ranking_holds": order_pred == order_meas,
        "measured_order": order_meas,
        "by_gain": gain_rows,
        "by_gain_all_inside": all(r["inside_interval"] for r in gain_rows),
        "by_gain_ranking_holds": gain_pred == gain_meas,
        "by_gain_predicted_order": gain_pred,
        "by_gain_measured_order": gain_meas,
        "evaluate_reference": evaluate,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_1min": os.getloadavg()[0]},
    }, indent=2))


if __name__ == "__main__":
    main()
