"""A shadow-mode season: the service recommends, simulated engineers decide, the
outcomes arrive as step data, and :func:`recovery.track_record.track_record`
is held against the simulator's truth.

Prints JSON. Usage: ``python benchmarks/track_record_shadow.py [--batches 120] [--follow 0.6]``.

1. A model of the small process is fitted (mean-field ADVI, ``--advi-steps``,
   on ``--fit`` batches with past interventions on 30% of them) and served by
   the service (:func:`recovery.service.app.create_app`, through FastAPI's
   TestClient, an admin token).
2. ``--batches`` batches that an inspection before the last flags are run up
   to that inspection; their step data go into the store.
3. For each: ``GET /api/batches/{id}/recommendation`` (the service logs the
   recommendation); the engineer follows it with probability ``--follow``
   (``POST .../decision`` ``accept``), else takes the heuristic's plan
   (:class:`recovery.agents.baselines.EngineerRule` on the same readings;
   ``modify`` with that plan). A followed ``scrap`` scraps the batch: it gets
   no final inspection (the report counts it as pending).
4. The simulator plays the chosen plan from the batch's true state to the
   final inspection; those step data are ingested. With the same random
   numbers it also plays the plan not chosen (the counterfactual outcome),
   and ``--replays`` more times each plan with fresh random numbers (future
   faults included) for the true P(accept) of both.

Outcome rule everywhere: the report's (a final-inspection sample mean outside
its final band rejects the batch).

Measured: the report's recovered share when followed and when not, with its
94% interval, against the truth (the mean true P(accept) of the plans carried
out in each group); the counterfactual P(accept) by bin (the report's bins)
against the counterfactual outcomes and their true P(accept), checked on bins
of at least 30 decisions; the report's own calibration table.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

BINS = ((0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0 + 1e-9))   # recovery.track_record's


def flagged_batches(sim, n: int, seed: int):
    """``n`` batches flagged at an inspection before the last: (conditions, cut step) each."""
    p = sim.process
    rng = np.random.default_rng(seed)
    out, first = [], 1
    while len(out) < n:
        cond = sim.sample_conditions(400, rng, first_id=first)
        res = sim.simulate(400, rng, conditions=cond)
        first += 400
        for b in range(400):
            f = res.flags[b, :-1]
            if f.any() and len(out) < n:
                out.append((cond.take([b]), p.inspections[int(f.argmax())].step))
    return out


def final_rejected(sim, obs: np.ndarray) -> np.ndarray:
    """The report's rule on simulated readings: rejected at the final inspection."""
    return sim.flags(obs)[:, -1]


def play(sim, state, obs, upto, plan, cond, seed):
    """Copies of ``state, obs`` advanced from ``upto`` to the end with ``plan``."""
    st, ob = state.copy(), obs.copy()
    sim.run(st, upto, sim.process.n_steps, plan, cond, np.random.default_rng(seed), obs=ob)
    return st, ob


def true_p_accept(sim, state, obs, upto, plan, cond, replays: int, seed: int) -> float:
    """Share of ``replays`` runs from ``state`` with ``plan`` that the final inspection
    accepts; future faults redrawn in each (fresh conditions after ``upto``)."""
    p = sim.process
    bars = p.bars_per_batch
    st = np.tile(state, (replays, 1))
    ob = np.repeat(obs, replays, axis=0)
    rng = np.random.default_rng(seed)
    fresh = sim.sample_conditions(replays, rng, time=np.full(replays, cond.time[0]), after_step=upto)
    c = cond.take(np.zeros(replays, dtype=int))
    fault = c.fault.copy()
    fault[:, upto:] = fresh.fault[:, upto:]
    from simulators.process import Conditions

    c = Conditions(c.batch_ids, c.time, fault, c.occurred, c.drift)
    sim.run(st, upto, p.n_steps, plan, c, rng, obs=ob)
    assert st.shape[0] == replays * bars
    return float(1.0 - final_rejected(sim, ob).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=120)
    ap.add_argument("--follow", type=float, default=0.6)
    ap.add_argument("--fit", type=int, default=300)
    ap.add_argument("--advi-steps", type=int, default=3000)
    ap.add_argument("--replays", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from recovery.agents.baselines import EngineerRule, readings_from_history
    from recovery.causal.model import CausalModel, FitConfig
    from recovery.data.ingest import ingest
    from recovery.data.store import open_store
    from recovery.service.app import create_app
    from recovery.service.auth import create_token
    from recovery.track_record import track_record
    from simulators.process import Simulator
    from simulators.schema import observations_frame

    t0 = time.perf_counter()
    sim = Simulator("small")
    p = sim.process
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        train = sim.simulate(args.fit, args.seed + 1, explore=0.3).observations
        model = CausalModel("small", config=FitConfig(method="advi", advi_steps=args.advi_steps, draws=300,
                                                      keep_draws=300, seed=args.seed)).fit(train, progress=False)
        model.save(d / "model")
        fit_s = time.perf_counter() - t0

        # the flagged batches up to their flagging inspection, with their true state there
        batches = []
        for i, (cond, upto) in enumerate(flagged_batches(sim, args.batches, args.seed + 2)):
            state, obs = sim.new_state(1), sim.new_obs(1)
            nominal = p.nominal_plan()[None]
            sim.run(state, 0, upto, nominal, cond, np.random.default_rng(10_000 + i), obs=obs)
            hist = observations_frame(p, cond, obs, nominal, upto_step=upto)
            batches.append({"id": str(cond.batch_ids[0]), "cond": cond, "upto": upto, "state": state,
                            "obs": obs, "hist": hist})
        src = d / "partial.parquet"
        pd.concat([b["hist"] for b in batches], ignore_index=True).to_parquet(src, index=False)
        url = f"duckdb://{d / 'store.duckdb'}"
        with open_store(url) as st:
            assert ingest(src, store=st, process=p, quarantine=d / "q.csv").rejected == 0
            token = create_token(st, partner="*", role="admin", name="shadow")[1]
        head = {"Authorization": f"Bearer {token}"}
        rule = EngineerRule(p)
        lever_index = {lv.name: j for j, lv in enumerate(p.levers)}
        rows, finals = [], []
        t_rec = 0.0
        with TestClient(create_app(url, d / "model", data_dir=d / "data")) as client:
            for i, b in enumerate(batches):
                t = time.perf_counter()
                r = client.get(f"/api/batches/{b['id']}/recommendation", headers=head)
                t_rec += time.perf_counter() - t
                r.raise_for_status()
                rec = r.json()["recommendation"]
                if rec is None:
                    continue
                agent_plan = p.nominal_plan()
                for x in rec["plan"]:
                    agent_plan[lever_index[x["lever"]]] = x["value"]
                heur = rule(readings_from_history(p, b["hist"]), b["upto"], p.nominal_plan())
                follow = bool(rng.random() < args.follow)
                free = [x["lever"] for x in rec["plan"]] or [lv.name for lv in p.levers if lv.step > b["upto"]]
                if follow:
                    body = {"decision": "accept", "comment": "shadow: followed"}
                else:
                    body = {"decision": "modify", "comment": "shadow: heuristic",
                            "plan": {k: float(heur[lever_index[k]]) for k in free}}
                client.post(f"/api/batches/{b['id']}/decision", headers=head, json=body).raise_for_status()
                scrapped = follow and rec["decision"] == "scrap"
                # the report's counterfactual: doing nothing when the agent was followed,
                # the agent's plan when it was not
                chosen, other = (agent_plan, p.nominal_plan()) if follow else (heur, agent_plan)
                seed = 20_000 + i
                # the plan carried out, played to the end; its final inspection is ingested
                if not scrapped:
                    _, ob = play(sim, b["state"], b["obs"], b["upto"], chosen[None], b["cond"], seed)
                    full = observations_frame(p, b["cond"], ob, chosen[None])
                    finals.append(full[full["step"] > b["upto"]])
                # the plan not carried out, with the same random numbers: the counterfactual outcome
                _, ob_cf = play(sim, b["state"], b["obs"], b["upto"], other[None], b["cond"], seed)
                rows.append({
                    "batch_id": b["id"], "sim_followed": follow, "scrapped": scrapped,
                    "agent_decision": rec["decision"],
                    "p_true_chosen": None if scrapped else true_p_accept(
                        sim, b["state"], b["obs"], b["upto"], chosen[None], b["cond"], args.replays, seed + 1),
                    "p_true_other": true_p_accept(sim, b["state"], b["obs"], b["upto"], other[None], b["cond"],
                                                  args.replays, seed + 1),
                    "cf_accepted": bool(not final_rejected(sim, ob_cf)[0]),
                })
        src = d / "final.parquet"
        pd.concat(finals, ignore_index=True).to_parquet(src, index=False)
        with open_store(url) as st:
            res = ingest(src, store=st, process=p, quarantine=d / "q2.csv")
            t = time.perf_counter()
            rep = track_record(st)
            out = rep.to_dict()
            report_s = time.perf_counter() - t
        truth = pd.DataFrame(rows).set_index("batch_id")
        bt = rep.batches.set_index("batch_id").join(truth, how="inner")

    done = bt[bt["outcome"].notna()]
    groups = {}
    fol = done["followed"].astype(bool)
    for key, m in (("followed", fol), ("not_followed", ~fol)):
        rep_g = out[key]
        tr = float(done.loc[m, "p_true_chosen"].mean()) if m.any() else None
        groups[key] = dict(rep_g, truth=tr, truth_in_interval=None if tr is None else
                           bool(rep_g["low"] <= tr <= rep_g["high"]))
    cf = bt[bt["counterfactual_p_accept"].notna()]
    cf_bins = []
    for lo, hi in BINS:
        m = (cf["counterfactual_p_accept"] >= lo) & (cf["counterfactual_p_accept"] < hi)
        if not m.any():
            continue
        pred = float(cf.loc[m, "counterfactual_p_accept"].mean())
        obs_ = float(cf.loc[m, "cf_accepted"].mean())
        true_ = float(cf.loc[m, "p_true_other"].mean())
        n = int(m.sum())
        cf_bins.append({"low": lo, "high": min(hi, 1.0), "n": n, "predicted": pred, "observed": obs_,
                        "true_p_accept": true_, "abs_error_vs_true": abs(pred - true_),
                        "checked": n >= 30, "within_0.05": abs(pred - true_) <= 0.05})
    checked = [b for b in cf_bins if b["checked"]]
    print(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1_5_15": list(os.getloadavg())},
        "config": vars(args),
        "n_recommendations": out["n_recommendations"], "n_decisions": out["n_decisions"],
        "n_outcomes": out["n_outcomes"], "agreement": out["agreement"],
        "scrapped_when_followed": int(bt["scrapped"].sum()),
        "agent_decisions": bt["agent_decision"].value_counts().to_dict(),
        "recovery": groups,
        "counterfactual_calibration": {"bins": cf_bins, "n": int(len(cf)),
                                       "bins_checked": len(checked),
                                       "all_checked_within_0.05": bool(checked) and all(b["within_0.05"] for b in checked)},
        "report_calibration": out["calibration"],
        "ingest_rejected": int(res.rejected),
        "seconds": {"fit": fit_s, "recommendations": t_rec, "report": report_s,
                    "total": time.perf_counter() - t0},
    }, indent=1, default=float))


if __name__ == "__main__":
    main()
