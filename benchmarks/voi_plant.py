"""Value of information for the plant, checked against the simulator (issue 19 part 2).

Prints JSON. Usage::

    python benchmarks/voi_plant.py --model MODEL_DIR --data HISTORY [--predict-batches 600]
        [--eval-batches 1000] [--seed 0] [--eval-seed 2026] [--top 3] [--measure all|top] [--out-dir DIR]

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
   targets: every measured gain inside its predicted interval, and the top 3's order the
   same in the measurement. The changes that alter no decision (``alters_decisions``
   false: gain exactly 0, placed by their cost alone) would make the order a tie, so the
   top 3 are taken among the changes that can alter a decision, by predicted net gain and
   again by predicted gain. For each pair of neighbours in an order the measured
   difference gets a 94% interval; where it holds 0 the measurement cannot separate the
   two, and ``batches_to_separate`` says how many batches a check would need to tell the
   predicted difference from 0 at 94% (with the measured batch-to-batch spread).
   With ``--measure all`` (default) every candidate is measured, so the prediction is
   checked on all of them, the ones that alter no decision included.
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


def neighbours(rows: list[dict], key_pred: str, res, plan_of: dict, costs: dict) -> list[dict]:
    """Measured difference between each pair of neighbours in a predicted order, with a 94% interval.

    ``rows`` in predicted order; the difference is of net value per batch (gain minus the
    inspection cost) when ``key_pred`` is a net figure, else of gain, paired over the
    same batches; per 1,000 batches.
    """
    from recovery.voi.plant import Z94

    out = []
    net = key_pred.startswith("predicted_net")
    for a, b in zip(rows, rows[1:]):
        ka, kb = plan_of[a["index"]], plan_of[b["index"]]
        d = res.net[ka] - res.net[kb]
        if net:
            d = d - (costs[a["index"]] - costs[b["index"]]) / 1000
        mean = 1000 * float(d.mean())
        sd = 1000 * float(d.std(ddof=1))
        se = sd / np.sqrt(len(d))
        pred = a[key_pred] - b[key_pred]
        need = None if pred == 0 or sd == 0 else int(np.ceil((Z94 * sd / abs(pred)) ** 2))
        out.append({"pair": [a["label"], b["label"]], "predicted_difference_per_1000": pred,
                    "measured_difference_per_1000": mean, "low": mean - Z94 * se, "high": mean + Z94 * se,
                    "separated": bool(mean - Z94 * se > 0 or mean + Z94 * se < 0),
                    "same_sign_as_predicted": bool(np.sign(mean) == np.sign(pred)),
                    "batches_to_separate": need})
    return out


def check_shortlist(args, pred: dict, base, base_text: str, cands, world) -> dict:
    """The planner's shortlist, measured with the planner on fresh batches of the true simulator."""
    from recovery.agents.planner_agent import PlannerAgent
    from recovery.pipeline import load_model, load_posterior
    from recovery.voi.plant import AgentPolicy, HeuristicPolicy, Z94, changed_process, play_season

    sl = pred["shortlist"]
    byidx = {r["index"]: r for r in pred["candidates"]}
    picked = [byidx[r["index"]] for r in sl["rows"]]
    plans = [base] + [changed_process(base_text, base, cands[r["index"]], gates=r["gates"])[1] for r in picked]
    model = load_model(args.model)
    policy = AgentPolicy(PlannerAgent(model, posterior=load_posterior(args.model), budget="tiny"),
                         seed=args.eval_seed)
    t0 = time.perf_counter()
    res = play_season(world, plans, policy, args.shortlist_batches, args.eval_seed)
    seconds = time.perf_counter() - t0
    ref = play_season(world, plans, HeuristicPolicy(base), args.shortlist_batches, args.eval_seed)
    rows, plan_of, costs = [], {}, {}
    for k, (r, s_row) in enumerate(zip(picked, sl["rows"]), start=1):
        d = res.net[k] - res.net[0]
        g = 1000 * float(d.mean())
        se = 1000 * float(d.std(ddof=1) / np.sqrt(len(d)))
        plan_of[r["index"]], costs[r["index"]] = k, r["cost_per_1000"]
        rows.append({"index": r["index"], "label": r["label"],
                     "predicted_gain_per_1000": s_row["gain_per_1000"], "low": s_row["low"], "high": s_row["high"],
                     "predicted_net_per_1000": s_row["net_per_1000"],
                     "measured_gain_per_1000": g, "measured_low": g - Z94 * se, "measured_high": g + Z94 * se,
                     "measured_net_per_1000": g - r["cost_per_1000"],
                     "inside_interval": bool(s_row["low"] <= g <= s_row["high"]),
                     "rule_predicted_gain_per_1000": s_row["rule_gain_per_1000"],
                     "rule_measured_gain_per_1000": 1000 * float((ref.net[k] - ref.net[0]).mean())})
    meas = [x["index"] for x in sorted(rows, key=lambda x: -x["measured_net_per_1000"])]
    return {"policy": sl["policy_description"], "budget": sl.get("budget"), "predict_batches": sl["n_batches"],
            "predict_asked": sl["asked"], "skipped": sl["skipped"], "eval_batches": args.shortlist_batches,
            "eval_seconds": seconds, "eval_asked": policy.asked, "rows": rows,
            "predicted_order": [x["index"] for x in rows], "measured_order": meas,
            "order_holds": meas == [x["index"] for x in rows],
            "all_inside": all(x["inside_interval"] for x in rows),
            "neighbours": neighbours(rows, "predicted_net_per_1000", res, plan_of, costs),
            "baseline_net_value_per_batch": {"planner": float(res.net[0].mean()), "rule": float(ref.net[0].mean())}}


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
    ap.add_argument("--measure", choices=["all", "top"], default="all",
                    help="measure every candidate (default) or only the top ones")
    ap.add_argument("--shortlist-batches", type=int, default=0,
                    help="if > 0: value the top --top changes again with the planner (tiny budget) on this many "
                         "batches (recovery sensors --shortlist-policy planner) and measure them with the "
                         "planner on as many fresh batches of the true simulator")
    ap.add_argument("--out-dir", default=None, help="where the changed files go (default: a temp folder)")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the reference 'recovery evaluate' runs")
    args = ap.parse_args()

    from recovery.voi.candidates import default_candidates
    from recovery.voi.plant import (HeuristicPolicy, changed_process, decisions_changed, inspection_cost,
                                    play_season, world_from_file)
    from simulators.definition import load_process

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="voi-plant-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["sensors", "--model", args.model, "--data", args.data, "--batches", str(args.predict_batches),
              "--season", str(args.eval_batches), "--world-draws", str(args.world_draws),
              "--seed", str(args.seed), "--json", "--quiet"]
    if args.shortlist_batches > 0:
        common += ["--shortlist-policy", "planner", "--shortlist", str(args.top),
                   "--shortlist-batches", str(args.shortlist_batches), "--planner-budget", "tiny"]
    t0 = time.perf_counter()
    pred = run_cli(common)
    t_pred = time.perf_counter() - t0
    ranked = pred["candidates"]
    alters = [r for r in ranked if r["alters_decisions"]]
    top_net = alters[:args.top]
    top_gain = sorted(alters, key=lambda r: -r["gain_per_1000"])[:args.top]
    wanted = ranked if args.measure == "all" else list({r["index"]: r for r in top_net + top_gain}.values())

    # the changes as `recovery sensors --apply N --out FILE` writes them: the ranking's own gates
    base_text = (Path(args.model) / "process.toml").read_text("utf-8")
    base = load_process(str(Path(args.model) / "process.toml"))
    cands = default_candidates(base)
    plans, plan_of, files, costs = [base], {}, {}, {}
    for r in wanted:
        f = out_dir / f"changed_{r['index']:02d}.toml"
        text, _ = changed_process(base_text, base, cands[r["index"]], gates=r["gates"])
        f.write_text(text, "utf-8")
        plan_of[r["index"]] = len(plans)
        files[r["index"]] = f
        plans.append(load_process(str(f)))
        costs[r["index"]] = 1000 * float(inspection_cost(plans[-1]) - inspection_cost(base))

    # the truth: the process file's own world, fresh seeds
    t0 = time.perf_counter()
    world = world_from_file(base)
    res = play_season(world, plans, HeuristicPolicy(base), args.eval_batches, args.eval_seed)
    t_eval = time.perf_counter() - t0
    rows = {}
    for r in wanted:
        j = plan_of[r["index"]]
        d = res.net[j] - res.net[0]
        g = 1000 * float(d.mean())
        se = 1000 * float(d.std(ddof=1) / np.sqrt(len(d)))
        cost = costs[r["index"]]
        rows[r["index"]] = {
            "index": r["index"], "label": r["label"], "change": r["change"], "step": r["step"],
            "characteristic": r["characteristic"], "sample": r["sample"],
            "alters_decisions": r["alters_decisions"], "no_decision_basis": r["no_decision_basis"],
            "predicted_gain_per_1000": r["gain_per_1000"], "low": r["low"], "high": r["high"],
            "measured_gain_per_1000": g, "measured_low": g - 1.8808 * se, "measured_high": g + 1.8808 * se,
            "inside_interval": bool(r["low"] <= g <= r["high"]),
            "cost_per_1000": cost, "predicted_net_per_1000": r["gain_per_1000"] - cost,
            "measured_net_per_1000": g - cost,
            "measured_decided_otherwise_per_1000": 1000 * float(decisions_changed(res, j).mean()),
            "measured_recovered_per_1000": 1000 * float(res.accepted[j].mean() - res.accepted[0].mean()),
            "file": str(files[r["index"]])}

    def order_check(sel: list[dict], pred_key: str, meas_key: str) -> dict:
        got = [rows[r["index"]] for r in sel]
        meas = [x["index"] for x in sorted(got, key=lambda x: -x[meas_key])]
        return {"rows": got, "predicted_order": [x["index"] for x in got], "measured_order": meas,
                "order_holds": meas == [x["index"] for x in got],
                "all_inside": all(x["inside_interval"] for x in got),
                "neighbours": neighbours(got, pred_key, res, plan_of, costs)}

    by_net = order_check(top_net, "predicted_net_per_1000", "measured_net_per_1000")
    by_gain = order_check(top_gain, "predicted_gain_per_1000", "measured_gain_per_1000")
    inert = [x for x in rows.values() if not x["alters_decisions"]]
    measured_all = list(rows.values())

    shortlist = None
    if args.shortlist_batches > 0:
        shortlist = check_shortlist(args, pred, base, base_text, cands, world)

    evaluate = None
    if not args.no_evaluate:
        evaluate = []
        for name, f in [("original", str(Path(args.model) / "process.toml"))] + \
                       [(files[r["index"]].stem, str(files[r["index"]])) for r in top_net]:
            e = run_cli(["evaluate", "--process", f, "--agents", "heuristic,none", "--batches",
                         str(args.eval_batches), "--seed", str(args.eval_seed), "--json", "--quiet"])
            evaluate.append({"file": name, "n_flagged": e["n_flagged"],
                             "heuristic_net_value_flagged": e["agents"]["heuristic"]["net_value"],
                             "none_net_value_flagged": e["agents"]["none"]["net_value"]})

    print(json.dumps({
        "benchmark": "voi_plant",
        "model": args.model, "data": args.data,
        "predict": {"batches": args.predict_batches, "seed": args.seed, "world": pred["world"],
                    "policy": pred["policy"], "policy_description": pred["policy_description"],
                    "season": pred["season"], "seconds": t_pred,
                    "n_candidates": len(ranked), "n_alter_decisions": len(alters),
                    "baseline": pred["baseline"], "flag_check": pred["flag_check"],
                    "all_candidates": [{k: c[k] for k in ("index", "label", "gain_per_1000", "low", "high",
                                                          "cost_per_1000", "net_per_1000", "alters_decisions",
                                                          "decided_otherwise_per_1000", "no_decision_basis",
                                                          "no_decision_reason", "gates")}
                                       for c in ranked]},
        "measure": {"batches": args.eval_batches, "seed": args.eval_seed, "world": world.source,
                    "policy": "heuristic", "seconds": t_eval, "n_plans": len(plans),
                    "baseline_net_value_per_batch": float(res.net[0].mean()),
                    "baseline_accepted": float(res.accepted[0].mean())},
        "top_by_net": by_net,
        "shortlist": shortlist,
        "top_by_gain": by_gain,
        "all_inside": {"measured": len(measured_all), "inside": sum(x["inside_interval"] for x in measured_all),
                       "alter_decisions": [len([x for x in measured_all if x["alters_decisions"]]),
                                           sum(x["inside_interval"] for x in measured_all if x["alters_decisions"])],
                       "no_decision": [len(inert), sum(x["inside_interval"] for x in inert)],
                       "no_decision_measured_nonzero": [x["label"] for x in inert
                                                        if x["measured_gain_per_1000"] != 0.0]},
        "measured": measured_all,
        "evaluate_reference": evaluate,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_1min": os.getloadavg()[0]},
    }, indent=2))


if __name__ == "__main__":
    main()
