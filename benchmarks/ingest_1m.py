"""Ingest a 1,000,000-row CSV of step data: throughput and peak memory.

    python benchmarks/ingest_1m.py [--rows 1000000] [--chunk-rows 100000] [--store URL]
                                   [--workdir DIR] [--code DIR]

The file is simulated step data of the built-in process (``Simulator("default")``,
seed 1), cut to exactly ``--rows`` rows and written as CSV in the step-data
schema, so it needs no mapping. The ingest runs in a fresh subprocess into an
empty DuckDB file (or ``--store``), so its peak resident memory
(``VmHWM``) is the ingest's alone.

The anchor, measured in the same run on the same file: DuckDB's own
``read_csv`` of the file into a table of a fresh DuckDB file, also in a
fresh subprocess (``anchor_rows_per_s``, ``anchor_peak_rss_mib``);
``ratio_to_anchor`` is the ingest's rows/s over the anchor's. ``--code DIR``
runs the ingest from another checkout (``PYTHONPATH=DIR``), to measure the
code before a change under the same conditions.

``rows_per_s`` is the first ingest of the child, as a ``recovery ingest`` run
pays it (pint's registry, pandera and the process loaded on the way);
``warm_rows_per_s`` the same file into a second fresh store in the same
process, as a long-running service pays it. ``*_cpu_*`` figures divide by the
process's CPU seconds (all its threads) instead of wall seconds: on a shared
machine they move much less with the other jobs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


@dataclass(frozen=True)
class Args:
    rows: int = 1_000_000
    chunk_rows: int = 100_000
    seed: int = 1
    store: str | None = None
    workdir: str | None = None
    code: str | None = None


def make_csv(path: Path, rows: int, seed: int) -> None:
    """Simulated step data of the default process, exactly ``rows`` rows, as CSV."""
    import pandas as pd

    from simulators.process import Simulator

    sim = Simulator("default")
    frames, n, k = [], 0, 0
    while n < rows:
        df = sim.simulate(500, seed=seed + k).observations
        # batch ids restart per call: keep them unique across calls
        df["batch_id"] = df["batch_id"].str.replace("B-", f"S{k}-", regex=False)
        frames.append(df)
        n += len(df)
        k += 1
    pd.concat(frames, ignore_index=True).head(rows).to_csv(path, index=False)


CHILD = """
import json, sys, time

def peak_mib():
    # VmHWM is this process's own peak; ru_maxrss can carry the forking parent's peak over exec
    with open("/proc/self/status") as f:
        return round(int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024)

from recovery.data.ingest import ingest
from recovery.data.store import open_store
path, url, chunk, q = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rss0 = peak_mib()
with open_store(url) as st:
    t, c = time.perf_counter(), time.process_time()
    r = ingest(path, store=st, process="default", chunk_rows=chunk, quarantine=q)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    peak1 = peak_mib()
    # the same file again: every row is looked up and found, nothing is added
    t = time.perf_counter()
    r2 = ingest(path, store=st, process="default", chunk_rows=chunk, quarantine=q)
    dt2 = time.perf_counter() - t
    stored = st.counts()["observations"]
# warm: the same file into a second fresh store, libraries and the process loaded
# (what a long-running service pays; the first ingest above is what a CLI run pays)
import os
warm_db = sys.argv[5]
with open_store(f"duckdb://{warm_db}") as st:
    t, c = time.perf_counter(), time.process_time()
    r3 = ingest(path, store=st, process="default", chunk_rows=chunk, quarantine=q)
    dt3, cpu3 = time.perf_counter() - t, time.process_time() - c
for f in (warm_db, warm_db + ".wal"):
    if os.path.exists(f):
        os.unlink(f)
import recovery
print(json.dumps({"code": recovery.__file__, "rows": r.rows, "accepted": r.accepted, "rejected": r.rejected,
                  "duplicates": r.duplicates, "stored": stored, "seconds": round(dt, 2),
                  "peak_rss_first_ingest_mib": peak1, "reingest_duplicates": r2.duplicates,
                  "reingest_seconds": round(dt2, 2), "warm_seconds": round(dt3, 2),
                  "warm_rows_per_s": round(r3.rows / dt3), "cpu_seconds": round(cpu, 2),
                  "rows_per_cpu_s": round(r.rows / cpu), "warm_cpu_seconds": round(cpu3, 2),
                  "warm_rows_per_cpu_s": round(r3.rows / cpu3),
                  "rows_per_s": round(r.rows / dt), "rss_after_imports_mib": rss0,
                  "peak_rss_mib": peak_mib()}))
"""


ANCHOR = """
import json, sys, time
import duckdb

def peak_mib():
    with open("/proc/self/status") as f:
        return round(int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024)

path, db = sys.argv[1], sys.argv[2]
con = duckdb.connect(db)
t, c = time.perf_counter(), time.process_time()
con.execute("CREATE TABLE steps AS SELECT * FROM read_csv(?)", [path])
n = con.execute("SELECT count(*) FROM steps").fetchone()[0]
dt, cpu = time.perf_counter() - t, time.process_time() - c
con.close()
print(json.dumps({"anchor_rows": n, "anchor_seconds": round(dt, 3),
                  "anchor_rows_per_s": round(n / dt), "anchor_cpu_seconds": round(cpu, 3),
                  "anchor_rows_per_cpu_s": round(n / cpu), "anchor_peak_rss_mib": peak_mib(),
                  "duckdb": duckdb.__version__}))
"""


def _fresh(db: Path) -> None:
    for f in (db, db.with_name(db.name + ".wal")):
        if f.exists():
            f.unlink()


def main(args: Args) -> dict:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ingest-1m-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"steps_{args.rows}.csv"
    t = time.perf_counter()
    if not csv.exists():
        # in a subprocess, so the ingest's process is not forked from a big parent
        subprocess.run([sys.executable, __file__, "--make-csv", str(csv), "--rows", str(args.rows),
                        "--seed", str(args.seed)], check=True)
    gen = time.perf_counter() - t
    url = args.store or f"duckdb://{work / 'bench.duckdb'}"
    if url.startswith("duckdb://") and Path(url[len("duckdb://"):]).exists():
        Path(url[len("duckdb://"):]).unlink()
    # The child imports the code of --code, else of this checkout, and nothing else:
    # it runs in the work folder, since "python -c" puts its working folder first
    # on sys.path (an ingest from the shell's folder would win over PYTHONPATH).
    code = Path(args.code).resolve() if args.code else Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, "-c", CHILD, str(csv), url, str(args.chunk_rows),
                          str(work / "quarantine.csv"), str(work / "warm.duckdb")],
                         capture_output=True, text=True, check=True, env=env, cwd=work)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    anchor_db = work / "anchor.duckdb"
    _fresh(anchor_db)
    out = subprocess.run([sys.executable, "-c", ANCHOR, str(csv), str(anchor_db)],
                         capture_output=True, text=True, check=True, cwd=work)
    _fresh(anchor_db)
    res |= json.loads(out.stdout.strip().splitlines()[-1])
    res["ratio_to_anchor"] = round(res["rows_per_s"] / res["anchor_rows_per_s"], 3)
    res["warm_ratio_to_anchor"] = round(res["warm_rows_per_s"] / res["anchor_rows_per_s"], 3)
    # CPU seconds (all threads) move less with other jobs on the machine than wall time does
    res["cpu_ratio_to_anchor"] = round(res["rows_per_cpu_s"] / res["anchor_rows_per_cpu_s"], 3)
    res["warm_cpu_ratio_to_anchor"] = round(res["warm_rows_per_cpu_s"] / res["anchor_rows_per_cpu_s"], 3)
    res |= {"file_mib": round(csv.stat().st_size / 2 ** 20, 1), "chunk_rows": args.chunk_rows,
            "store": url.split("://")[0], "generate_seconds": round(gen, 1),
            "python": sys.version.split()[0], "load_average": [round(x, 2) for x in os.getloadavg()]}
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=Args.rows)
    p.add_argument("--chunk-rows", type=int, default=Args.chunk_rows)
    p.add_argument("--seed", type=int, default=Args.seed)
    p.add_argument("--store", default=None, help="store URL (default: a fresh DuckDB file)")
    p.add_argument("--workdir", default=None, help="keep the CSV here and reuse it")
    p.add_argument("--code", default=None, help="run the ingest from this checkout (PYTHONPATH)")
    p.add_argument("--make-csv", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.make_csv:
        make_csv(Path(a.make_csv), a.rows, a.seed)
        sys.exit(0)
    print(json.dumps(main(Args(a.rows, a.chunk_rows, a.seed, a.store, a.workdir, a.code)), indent=1))
