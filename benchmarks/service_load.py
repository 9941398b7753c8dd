"""Load test of the engineers' HTTP service on localhost, against an anchor in the same run.

Prints JSON. Usage::

    python benchmarks/service_load.py [--model MODEL_DIR] [--process small] [--batches 20]
        [--clients 50] [--requests 2000] [--max-seconds 120] [--seed 3]
        [--store duckdb|postgresql] [--workers 1]

1. A throwaway store holds ``--batches`` flagged batches of fresh seeds (each
   cut at the inspection that flagged it) and one engineer token: a DuckDB
   file, or (``--store postgresql``) a database on a throwaway PostgreSQL
   server this script starts and stops (Debian's ``postgresql`` binaries).
   Without ``--model`` a model of the process is fitted first (small process:
   400 batches, NUTS with one short chain, about a minute; not timed).
2. ``recovery serve --workers N`` runs as its own process, as in production
   (several workers need PostgreSQL).
3. **Cold**: each batch's first recommendation, one at a time (the planner runs).
4. **Mixed load**: ``--clients`` threads, each with its own HTTP connection, send
   ``--requests`` requests in all (stopped after ``--max-seconds``): 40% GET
   recommendation, 30% GET batch view, 20% GET batch list, 10% POST decision.
   Warm recommendations come from the cache keyed by the batch's data, so this
   measures the service, not the planner.
5. **Cached view and list** (issue 21's figure): the same clients send the same
   number of requests, half GET batch view and half GET batch list, first to the
   service and then to the **anchor**: a FastAPI app on uvicorn with the same
   worker count that returns the JSON the service gave for each URL from
   memory. ``ratio`` = service req/s / anchor req/s.
6. After the server stops, the store is checked: every 201 decision is there,
   once, with its audit entry. A batch takes one final decision per step, so
   later decisions on it answer 409 (counted apart, not as errors).

With DuckDB, during the mixed load this process (as a CLI command would) opens
the store every second, counts its rows and closes it:
``store_access_during_load`` says how long that took with the service busy, and
how often it failed (DuckDB allows one process at a time; the service lets go
of the file for a waiting command).

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
import threading
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
#: The cached phase, measured against the anchor.
CACHED = (("view", 0.5), ("list", 0.5))


def _fit_model(process: str, out: Path, seed: int) -> Path:
    from recovery.causal.model import CausalModel, FitConfig

    data = Simulator(process).simulate(400, seed + 100, explore=0.3).observations
    cfg = FitConfig(method="nuts", sampler="auto", draws=150, tune=150, chains=1, keep_draws=150, seed=seed)
    CausalModel(process, config=cfg).fit(data, progress=False).save(out)
    return out


def _world(sim: Simulator, n_batches: int, seed: int, folder: Path, url: str) -> tuple[list[str], str]:
    """Batch ids and an engineer token (admin, all partners) in the store at ``url``."""
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
    with open_store(url) as st:
        res = ingest(src, store=st, process=p, quarantine=folder / "rejected.csv")
        if res.rejected:
            raise SystemExit(f"{res.rejected} simulated rows rejected: {res.quarantine}")
        _, token = create_token(st, partner="*", role="admin", name="load-test")
    return [c.batch_id for c in cases], token


class _Postgres:
    """A throwaway PostgreSQL server in ``folder`` (as ``tests/conftest.py`` starts one)."""

    def __init__(self, folder: Path):
        import glob
        import pwd

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
        if not bins:
            raise SystemExit("--store postgresql: no PostgreSQL binaries under /usr/lib/postgresql "
                             "(run scripts/test-deps.sh)")
        self.bin, self.data = bins[-1], folder / "pg"
        self.data.mkdir()
        # PostgreSQL refuses to run as root: run it as the 'postgres' system user then
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(folder, pw.pw_uid, pw.pw_gid)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        port = _free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C")
        # durable commits (fsync, synchronous_commit on): the audit write costs what it would in production
        self._run("pg_ctl", "-D", str(self.data), "-l", str(folder / "pg.log"), "-w", "-t", "60",
                  "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, exe, *args):
        subprocess.run(self.as_user + [f"{self.bin}/{exe}", *args], check=True, capture_output=True, text=True)

    def stop(self):
        subprocess.run(self.as_user + [f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, base: str, log: Path) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the server did not answer /health within 180 s; see {log}")


def _start_server(url: str, model: Path, folder: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    exe = shutil.which("recovery")
    cmd = ([exe] if exe else [sys.executable, "-m", "recovery.cli"]) + [
        "serve", "--store", url, "--model", str(model), "--port", str(port), "--data-dir", str(folder / "data")]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = folder / "server.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait_healthy(proc, base, log)
    return proc, base


ANCHOR = """
import json
from fastapi import FastAPI

ANSWERS = json.load(open({path!r}))
app = FastAPI()


@app.get("/health")
def health():
    return {{"status": "ok"}}


@app.get("/api/batches")
def batches():
    return ANSWERS["/api/batches"]


@app.get("/api/batches/{{batch_id}}")
def batch(batch_id: str):
    return ANSWERS["/api/batches/" + batch_id]
"""


def _start_anchor(answers: dict, folder: Path, workers: int) -> tuple[subprocess.Popen, str]:
    """The anchor: the service's answers from memory, FastAPI on uvicorn, same worker count."""
    (folder / "answers.json").write_text(json.dumps(answers))
    (folder / "anchor_app.py").write_text(ANCHOR.format(path=str(folder / "answers.json")))
    port = _free_port()
    log = folder / "anchor.log"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "anchor_app:app", "--app-dir", str(folder),
                             "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait_healthy(proc, base, log)
    return proc, base


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _pct(x: list[float]) -> dict:
    if not x:
        return {"n": 0}
    a = np.asarray(x) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def _load(base: str, head: dict, batches: list[str], mix, args, seed: int) -> tuple[list, float]:
    """``args.requests`` requests of ``mix`` from ``args.clients`` threads: (results, wall seconds)."""
    import httpx

    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(mix), size=args.requests, p=[w for _, w in mix])
    which = rng.integers(0, len(batches), size=args.requests)
    deadline = time.monotonic() + args.max_seconds
    per_client = np.array_split(np.arange(args.requests), args.clients)

    def client(idx):
        out = []
        with httpx.Client(base_url=base, headers=head, timeout=120) as c:
            for i in idx:
                if time.monotonic() > deadline:
                    break
                kind, b = mix[kinds[i]][0], batches[which[i]]
                t = time.perf_counter()
                try:
                    if kind == "recommendation":
                        r = c.get(f"/api/batches/{b}/recommendation")
                    elif kind == "view":
                        r = c.get(f"/api/batches/{b}")
                    elif kind == "list":
                        r = c.get("/api/batches")
                    else:
                        r = c.post(f"/api/batches/{b}/decision", json={"decision": "reject", "comment": f"load {i}"})
                    status = r.status_code
                    did = r.json().get("decision_id") if kind == "decision" and status == 201 else None
                except httpx.HTTPError as exc:
                    status, did = type(exc).__name__, None
                out.append((kind, time.perf_counter() - t, status, did, i))
        return out

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as ex:
        results = [x for chunk in ex.map(client, per_client) for x in chunk]
    return results, time.perf_counter() - t0


def _errors(results) -> dict[str, int]:
    ok = {"recommendation": {200}, "view": {200}, "list": {200}, "decision": {201, 409}}
    errors: dict[str, int] = {}
    for kind, _, status, _, _ in results:
        if status not in ok[kind]:
            key = f"{kind}:{status}"
            errors[key] = errors.get(key, 0) + 1
    return errors


def _summary(results, wall: float, mix) -> dict:
    return {"requests": len(results), "throughput_rps": round(len(results) / wall, 1), "wall_s": round(wall, 2),
            "latency_all": _pct([t for _, t, _, _, _ in results]),
            "latency": {k: _pct([t for kind, t, _, _, _ in results if kind == k]) for k, _ in mix},
            "errors": _errors(results)}


def _store_access(url: str, stop: threading.Event, access: list, access_errors: list) -> None:
    """What `recovery tokens list` does, from another process: open the store, count, close."""
    from recovery.data.store import StoreError

    while not stop.wait(1.0):
        t = time.perf_counter()
        try:
            with open_store(url) as st:
                st.counts()
            access.append(time.perf_counter() - t)
        except StoreError as exc:
            access_errors.append(str(exc)[:120])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="fitted model folder (default: fit one of --process first)")
    ap.add_argument("--process", default="small", help="process of the fitted model when --model is not given")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--store", choices=("duckdb", "postgresql"), default="duckdb")
    ap.add_argument("--workers", type=int, default=1, help="recovery serve --workers (and the anchor's)")
    args = ap.parse_args()

    import httpx

    from recovery.causal.model import CausalModel

    folder = Path(tempfile.mkdtemp(prefix="recovery-load-"))
    pg = None
    try:
        t_fit = time.monotonic()
        model = Path(args.model) if args.model else _fit_model(args.process, folder / "model", args.seed)
        t_fit = time.monotonic() - t_fit
        process = CausalModel.load(model).graph_.process
        if args.store == "postgresql":
            pg = _Postgres(folder)
            url = pg.url
        else:
            url = f"duckdb://{folder / 'store.duckdb'}"
        batches, token = _world(Simulator(process), args.batches, args.seed, folder, url)
        head = {"Authorization": f"Bearer {token}"}
        proc, base = _start_server(url, model, folder, args.workers)
        access, access_errors, stop = [], [], threading.Event()
        try:
            # cold: the planner runs once per batch
            cold = []
            with httpx.Client(base_url=base, headers=head, timeout=300) as c:
                for b in batches:
                    t = time.perf_counter()
                    r = c.get(f"/api/batches/{b}/recommendation")
                    cold.append(time.perf_counter() - t)
                    r.raise_for_status()
            cmd = threading.Thread(target=_store_access, args=(url, stop, access, access_errors))
            if args.store == "duckdb":
                cmd.start()
            try:
                mixed, wall = _load(base, head, batches, MIX, args, args.seed)
            finally:
                stop.set()
                if cmd.is_alive():
                    cmd.join()
            # the answers the anchor will give, as the service gives them now (decisions are in)
            with httpx.Client(base_url=base, headers=head, timeout=300) as c:
                answers = {u: c.get(u).json() for u in ["/api/batches"] + [f"/api/batches/{b}" for b in batches]}
            cached, wall_c = _load(base, head, batches, CACHED, args, args.seed + 1)
        finally:
            _stop(proc)
        anchor_proc, anchor_base = _start_anchor(answers, folder, args.workers)
        try:
            anchor, wall_a = _load(anchor_base, head, batches, CACHED, args, args.seed + 1)
        finally:
            _stop(anchor_proc)

        posted = {i: did for kind, _, status, did, i in mixed if kind == "decision" and status == 201}
        with open_store(url) as st:
            dec = st.decisions()
            trail = st.audit()
        comments = dec["comment"].tolist()
        lost = [i for i in posted if comments.count(f"load {i}") != 1]
        audited = {int(x["decision_id"]) for x in trail.loc[trail["action"] == "decision", "payload"]}
        n_audit = sum(1 for d in posted.values() if int(d) in audited)
        shown = int((trail["action"] == "recommendation_shown").sum())
        served = sum(1 for kind, _, status, _, _ in mixed + cached
                     if kind in ("recommendation", "view") and status == 200) + 2 * len(batches)  # cold, answers
        svc, anc = _summary(cached, wall_c, CACHED), _summary(anchor, wall_a, CACHED)
        out = {
            "machine": f"{platform.node()} ({os.cpu_count()} cores), python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "load_average": [round(x, 1) for x in os.getloadavg()],
            "process": process.name, "batches": len(batches), "clients": args.clients,
            "store": args.store, "workers": args.workers,
            "model_fit_s": round(t_fit, 1) if not args.model else None,
            "cold_recommendation": _pct(cold),
            "cached_view_and_list": {
                "service": svc, "anchor": anc,
                "ratio": round(svc["throughput_rps"] / anc["throughput_rps"], 3),
                "targets": {"ratio_min": 0.3, "p95_ms_max": 250, "errors": 0}},
            "mixed": {**_summary(mixed, wall, MIX), "requests_planned": args.requests},
            "decisions_posted": len(posted), "decisions_stored_once": len(posted) - len(lost),
            "decisions_409": sum(1 for kind, _, status, _, _ in mixed if kind == "decision" and status == 409),
            "decisions_audited": n_audit,
            "recommendations_shown": served, "recommendations_shown_audited": shown,
            "store_access_during_load": ({**_pct(access), "failed": len(access_errors),
                                          "first_error": access_errors[0] if access_errors else None}
                                         if args.store == "duckdb" else None),
        }
        print(json.dumps(out, indent=2))
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
