"""Load test of the engineers' HTTP service on localhost.

Prints JSON. Usage::

    python benchmarks/service_load.py [--model MODEL_DIR] [--process small] [--batches 20]
        [--clients 50] [--requests 2000] [--max-seconds 120] [--seed 3]

1. A throwaway DuckDB store holds ``--batches`` flagged batches of fresh seeds
   (each cut at the inspection that flagged it) and one engineer token.
   Without ``--model`` a model of the process is fitted first (small process:
   400 batches, NUTS with one short chain, about a minute; not timed).
2. ``recovery serve`` runs as its own process, as in production.
3. **Cold**: each batch's first recommendation, one at a time (the planner runs).
4. **Load**: ``--clients`` threads, each with its own HTTP connection, send
   ``--requests`` requests in all (stopped after ``--max-seconds``): 40% GET
   recommendation, 30% GET batch view, 20% GET batch list, 10% POST decision.
   Warm recommendations come from the cache keyed by the input hash, so this
   measures the service, not the planner.
5. After the server stops, the store is checked: every 201 decision is there,
   once, with its audit entry. A batch takes one final decision per step, so
   later decisions on it answer 409 (counted apart, not as errors).

During the load, this process (as a CLI command would) opens the store every
second, counts its rows and closes it: ``store_access_during_load`` says how
long that took with the service busy, and how often it failed (DuckDB allows
one process at a time; the service lets go of the file for a waiting command).

Reported: throughput (requests/s), latency P50/P95/P99 overall and per
endpoint (ms), error counts, the decision check, and the store access.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import concurrent.futures
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recovery.data.ingest import ingest
from recovery.data.store import open_store
from recovery.evaluate import flagged_cases
from recovery.service.auth import create_token
from simulators.process import Simulator
from simulators.schema import observations_frame

MIX = (("recommendation", 0.4), ("view", 0.3), ("list", 0.2), ("decision", 0.1))


def _fit_model(process: str, out: Path, seed: int) -> Path:
    from recovery.causal.model import CausalModel, FitConfig

    data = Simulator(process).simulate(400, seed + 100, explore=0.3).observations
    cfg = FitConfig(method="nuts", sampler="auto", draws=150, tune=150, chains=1, keep_draws=150, seed=seed)
    CausalModel(process, config=cfg).fit(data, progress=False).save(out)
    return out


def _world(sim: Simulator, n_batches: int, seed: int, folder: Path) -> tuple[str, list[str], str]:
    """Store URL, batch ids and an engineer token (admin, all partners)."""
    p = sim.process
    cases, _ = flagged_cases(sim, max(8 * n_batches, 50), seed)
    while len(cases) < n_batches:
        more, _ = flagged_cases(sim, 8 * n_batches, seed + len(cases) + 1, first_id=100_000 + len(cases))
        cases += more
    cases = cases[:n_batches]
    plan = p.nominal_plan()[None]
    hist = pd.concat([observations_frame(p, c.conditions, c.obs[None], plan, upto_step=c.detect_step)
                      for c in cases])
    src = folder / "history.parquet"
    hist.to_parquet(src, index=False)
    url = f"duckdb://{folder / 'store.duckdb'}"
    with open_store(url) as st:
        res = ingest(src, store=st, process=p, quarantine=folder / "rejected.csv")
        if res.rejected:
            raise SystemExit(f"{res.rejected} simulated rows rejected: {res.quarantine}")
        _, token = create_token(st, partner="*", role="admin", name="load-test")
    return url, [c.batch_id for c in cases], token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(url: str, model: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    exe = shutil.which("recovery")
    cmd = ([exe] if exe else [sys.executable, "-m", "recovery.cli"]) + [
        "serve", "--store", url, "--model", str(model), "--port", str(port), "--data-dir", str(folder / "data")]
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {folder / 'server.log'}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not answer /health within 120 s")


def _pct(x: list[float]) -> dict:
    if not x:
        return {"n": 0}
    a = np.asarray(x) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="fitted model folder (default: fit one of --process first)")
    ap.add_argument("--process", default="small", help="process of the fitted model when --model is not given")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    import httpx

    from recovery.causal.model import CausalModel

    folder = Path(tempfile.mkdtemp(prefix="recovery-load-"))
    try:
        t_fit = time.monotonic()
        model = Path(args.model) if args.model else _fit_model(args.process, folder / "model", args.seed)
        t_fit = time.monotonic() - t_fit
        process = CausalModel.load(model).graph_.process
        sim = Simulator(process)
        url, batches, token = _world(sim, args.batches, args.seed, folder)
        head = {"Authorization": f"Bearer {token}"}
        proc, base = _start_server(url, model, folder)
        try:
            # cold: the planner runs once per batch
            cold = []
            with httpx.Client(base_url=base, headers=head, timeout=300) as c:
                for b in batches:
                    t = time.perf_counter()
                    r = c.get(f"/api/batches/{b}/recommendation")
                    cold.append(time.perf_counter() - t)
                    r.raise_for_status()

            rng = np.random.default_rng(args.seed)
            kinds = rng.choice(len(MIX), size=args.requests, p=[w for _, w in MIX])
            which = rng.integers(0, len(batches), size=args.requests)
            deadline = time.monotonic() + args.max_seconds
            per_client = np.array_split(np.arange(args.requests), args.clients)

            def client(idx):
                out = []
                with httpx.Client(base_url=base, headers=head, timeout=120) as c:
                    for i in idx:
                        if time.monotonic() > deadline:
                            break
                        kind, b = MIX[kinds[i]][0], batches[which[i]]
                        t = time.perf_counter()
                        try:
                            if kind == "recommendation":
                                r = c.get(f"/api/batches/{b}/recommendation")
                            elif kind == "view":
                                r = c.get(f"/api/batches/{b}")
                            elif kind == "list":
                                r = c.get("/api/batches")
                            else:
                                r = c.post(f"/api/batches/{b}/decision",
                                           json={"decision": "reject", "comment": f"load {i}"})
                            status = r.status_code
                            did = r.json().get("decision_id") if kind == "decision" and status == 201 else None
                        except httpx.HTTPError as exc:
                            status, did = type(exc).__name__, None
                        out.append((kind, time.perf_counter() - t, status, did, i))
                return out

            import threading

            from recovery.data.store import StoreError

            access, access_errors, stop = [], [], threading.Event()

            def command():          # what `recovery tokens list` does, from another process
                while not stop.wait(1.0):
                    t = time.perf_counter()
                    try:
                        with open_store(url) as st:
                            st.counts()
                        access.append(time.perf_counter() - t)
                    except StoreError as exc:
                        access_errors.append(str(exc)[:120])

            cmd = threading.Thread(target=command)
            cmd.start()
            t0 = time.perf_counter()
            try:
                with concurrent.futures.ThreadPoolExecutor(args.clients) as ex:
                    results = [x for chunk in ex.map(client, per_client) for x in chunk]
            finally:
                stop.set()
                cmd.join()
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)

        ok = {"recommendation": {200}, "view": {200}, "list": {200}, "decision": {201, 409}}
        errors: dict[str, int] = {}
        for kind, _, status, _, _ in results:
            if status not in ok[kind]:
                key = f"{kind}:{status}"
                errors[key] = errors.get(key, 0) + 1
        posted = {i: did for kind, _, status, did, i in results if kind == "decision" and status == 201}
        with open_store(url) as st:
            dec = st.decisions()
            trail = st.audit()
        comments = dec["comment"].tolist()
        lost = [i for i in posted if comments.count(f"load {i}") != 1]
        audited = {int(x["decision_id"]) for x in trail.loc[trail["action"] == "decision", "payload"]}
        n_audit = sum(1 for d in posted.values() if int(d) in audited)
        out = {
            "machine": f"{platform.node()} ({os.cpu_count()} cores), python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"),
            "process": process.name, "batches": len(batches), "clients": args.clients,
            "requests_sent": len(results), "requests_planned": args.requests,
            "model_fit_s": round(t_fit, 1) if not args.model else None,
            "cold_recommendation": _pct(cold),
            "throughput_rps": round(len(results) / wall, 1), "wall_s": round(wall, 2),
            "latency_all": _pct([t for _, t, _, _, _ in results]),
            "latency": {k: _pct([t for kind, t, _, _, _ in results if kind == k]) for k, _ in MIX},
            "errors": errors,
            "decisions_posted": len(posted), "decisions_stored_once": len(posted) - len(lost),
            "decisions_409": sum(1 for kind, _, status, _, _ in results if kind == "decision" and status == 409),
            "decisions_audited": n_audit,
            "store_access_during_load": {**_pct(access), "failed": len(access_errors),
                                         "first_error": access_errors[0] if access_errors else None},
        }
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
