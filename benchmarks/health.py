"""Timing of the plant reports: ``plant_health`` on a fitted model and
``track_record`` on a store of many decisions.

Prints JSON. Usage: ``python benchmarks/health.py [--decisions 10000] [--repeat 3]``.

``health``: the small process, a model fitted with ADVI (a tiny budget: the
report's cost does not depend on how the posterior was reached, only on its
draws, kept at ``--draws``) on 150 batches, and the change test over 300 more;
the time of one :func:`recovery.health.plant_health` call (the posterior read,
innovations of every batch, the tests and the gate projections), median of
``--repeat``. ``health.cli``: the same model saved, and ``recovery health --model M
--json`` run in a fresh interpreter (imports, the light load of
:func:`recovery.health.load_health_model` and the report), median of ``--repeat``;
beside it the light load alone and the full ``CausalModel.load`` (through ArviZ).

``track_record``: a DuckDB store holding ``--decisions`` batches of the small
process (their final inspections included), one recommendation (logged twice,
as the service does when an answer is recomputed) and one final decision each,
60% following the agent; the time of one :func:`recovery.track_record.track_record`
call plus its ``to_dict``, median of ``--repeat``. Building the store is not timed.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def time_health(repeat: int, draws: int, seed: int) -> dict:
    from recovery.causal.model import CausalModel, FitConfig
    from recovery.health import plant_health
    from simulators.process import Simulator

    sim = Simulator("small")
    first = sim.simulate(150, seed, explore=0.3).observations
    model = CausalModel("small", config=FitConfig(method="advi", advi_steps=1500, draws=draws,
                                                  keep_draws=draws, seed=seed)).fit(first, progress=False)
    cond = sim.sample_conditions(300, seed + 1, time=np.linspace(100.0, 150.0, 300, endpoint=False),
                                 first_id=151)
    later = sim.simulate(300, seed + 1, conditions=cond, explore=0.3).observations
    history = pd.concat([first, later], ignore_index=True)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        rep = plant_health(model, history, since=100.0)
        times.append(time.perf_counter() - t)
    out = {"seconds_median": float(np.median(times)), "seconds": times, "batches": 450, "draws": draws,
           "factories": len(rep.factories), "faults": len(rep.faults), "alarms": len(rep.changed_factories)
           + len(rep.changed_faults)}
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "model")
        out["cli"] = time_cli(Path(d) / "model", repeat)
    return out


def _timed_run(code: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system) of ``repeat`` fresh interpreters
    running ``code`` (imports included). On a shared machine the CPU time is the
    closer figure for an idle one: the job is single-threaded (threads pinned to 1)."""
    import resource

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    wall, cpu = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return wall, cpu


def time_cli(model_dir: Path, repeat: int) -> dict:
    """``recovery health --model M --json`` end to end in a fresh interpreter (what a
    user waits for), and apart: the light load it uses and the full
    ``CausalModel.load`` (ArviZ) it replaced, each in a fresh interpreter."""
    m = str(model_dir)
    runs = {"end_to_end": f"from recovery.cli import main; main(['health', '--model', {m!r}, '--json'])",
            "light_load": f"from recovery.health import load_health_model; load_health_model({m!r})",
            "full_load": f"from recovery.causal.model import CausalModel; CausalModel.load({m!r})",
            "interpreter_start": "pass"}
    out = {}
    for name, code in runs.items():
        wall, cpu = _timed_run(code, repeat)
        out[name] = {"wall_seconds_median": float(np.median(wall)), "cpu_seconds_median": float(np.median(cpu)),
                     "wall_seconds": wall, "cpu_seconds": cpu}
    return out


def time_track_record(n: int, repeat: int, seed: int) -> dict:
    from recovery.data.ingest import ingest
    from recovery.data.store import open_store
    from recovery.track_record import track_record
    from simulators.process import Simulator

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sim = Simulator("small")
        src = d / "steps.parquet"
        sim.simulate(n, seed, explore=0.3).observations.to_parquet(src, index=False)
        url = f"duckdb://{d / 'store.duckdb'}"
        t = time.perf_counter()
        with open_store(url) as st:
            ingest(src, store=st, process="small", quarantine=d / "q.csv")
            name = st.process_names()[0]
            with st.transaction():
                for i in range(1, n + 1):
                    b = f"B-{i}"
                    plan = {"grinding_allowance": float(rng.uniform(0, 60))}
                    for _ in range(2):
                        st.add_recommendation(process=name, batch_id=b, after_step=6, agent="planner", plan=plan,
                                              expected={"p_accept": {"mean": float(rng.uniform())},
                                                        "p_accept_do_nothing": {"mean": float(rng.uniform())},
                                                        "decision": "intervene"})
                    follow = rng.uniform() < 0.6
                    did = st.add_decision(batch_id=b, engineer="sim", decision="accept" if follow else "modify",
                                          plan=plan if follow else {"grinding_allowance": 20.0}, partner="A")
                    st.claim_decision(process=name, batch_id=b, after_step=6, decision_id=did)
        build = time.perf_counter() - t
        times = []
        with open_store(url) as st:
            for _ in range(repeat):
                t = time.perf_counter()
                out = track_record(st).to_dict()
                times.append(time.perf_counter() - t)
    return {"seconds_median": float(np.median(times)), "seconds": times, "decisions": out["n_decisions"],
            "outcomes": out["n_outcomes"], "agreement": out["agreement"], "store_build_seconds": build}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("health", "track_record"), default=None, help="time one report only")
    args = ap.parse_args()
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "load_average_1_5_15": list(os.getloadavg())},
           "command": " ".join(sys.argv)}
    if args.only in (None, "health"):
        out["health"] = time_health(args.repeat, args.draws, args.seed)
    if args.only in (None, "track_record"):
        out["track_record"] = time_track_record(args.decisions, args.repeat, args.seed)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
