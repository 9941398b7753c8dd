"""Bad input through ``recovery ingest``: rows lost and tracebacks per class of bad input.

    python benchmarks/ingest_reliability.py [--good 20] [--chunks 1,3,100000]

Each class is a small partner file of the ``small`` process (a wide mapping:
batch, bar, timestamp, diameter and ovality at step 3): ``--good`` good rows
with bad rows of one kind mixed in, ingested by the CLI (in-process, the same
``main`` the command runs) into an empty DuckDB store once per chunk size.
For each class it counts:

- ``lost``: rows neither accepted, rejected (and in the quarantine file) nor
  duplicates, plus stored source rows that are not accepted rows;
- ``tracebacks``: runs whose stderr holds a traceback or that exit 3;
- ``bad_accepted``: rows with a bad cell that were stored anyway;
- ``chunk_dependent``: whether counts or the stored table differ across chunk sizes.

Whole-file classes (empty file, wrong encoding, dangling symlink part) must exit 2
with one line naming the file and store nothing. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

MAPPING = """[mapping]
process = "small"
partner = "A"
[ids]
batch = "b"
bar = "bar"
[timestamp]
column = "t"
format = "%Y-%m-%d %H:%M:%S"
timezone = "Europe/Berlin"
[[columns]]
column = "d"
variable = "diameter"
step = 3
unit = "mm"
[[columns]]
column = "o"
variable = "ovality"
step = 3
unit = "mm"
"""
HEADER = "b,bar,t,d,o\n"


@dataclass(frozen=True)
class Args:
    good: int = 20
    chunks: tuple[int, ...] = (1, 3, 100_000)


def good_rows(n: int) -> list[str]:
    return [f"G-{i // 3},{i % 3},2026-01-{1 + i % 28:02d} 08:00:00,{16.0 + (i % 5) / 100:.2f},0.02"
            for i in range(n)]


def row_classes(n: int) -> dict[str, list[str]]:
    """Bad rows per class, mixed into the good ones."""
    g = good_rows(n)
    return {
        "NaN and inf values": ["B-1,0,2026-01-05 08:00:00,NaN,0.02", "B-1,1,2026-01-05 08:00:00,16.0,inf"],
        "text values": ["B-2,0,2026-01-05 08:00:00,abc,0.02", "B-2,1,2026-01-05 08:00:00,16.0,"],
        "out-of-range values": ["B-3,0,2026-01-05 08:00:00,17.5,0.02", "B-3,1,2026-01-05 08:00:00,1e308,0.02"],
        "timestamp 9999-12-31 / year 2300": ["B-4,0,9999-12-31 00:00:00,16.0,0.02",
                                             "B-4,1,2300-01-01 00:00:00,16.0,0.02"],
        "timestamp cut, invalid, DST gap, future": [
            "B-5,0,2026-03-05 08:45:0,16.0,0.02", "B-5,1,2026-02-30 08:00:00,16.0,0.02",
            "B-5,2,2026-03-29 02:30:00,16.0,0.02", "B-5,3,2099-01-01 00:00:00,16.0,0.02"],
        "ids: NUL, right-to-left, 65 chars, empty": [
            "B\x00-6,0,2026-01-05 08:00:00,16.0,0.02", "B\u202e-6,0,2026-01-05 08:00:00,16.0,0.02",
            "X" * 65 + ",0,2026-01-05 08:00:00,16.0,0.02", ",0,2026-01-05 08:00:00,16.0,0.02"],
        "bar ids not whole numbers": ["B-7,x,2026-01-05 08:00:00,16.0,0.02", "B-7,-1,2026-01-05 08:00:00,16.0,0.02"],
        "formula cells": ['"=HYPERLINK(""http://x"",""y"")",0,2026-01-05 08:00:00,abc,0.02',
                          "B-8,0,2026-01-05 08:00:00,=1+1,@SUM(A1)"],
        "duplicates": [g[0], g[1]],
        "conflicts": [g[0].replace(",0.02", ",0.03"), g[2].rsplit(",", 2)[0] + ",15.90,0.02"],
    }


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from recovery.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:       # argparse
            rc = int(exc.code or 0)
        except Exception:               # noqa: BLE001 - an escaped exception is what we count
            import traceback

            traceback.print_exc(file=err)
            rc = -1
    return rc, out.getvalue(), err.getvalue()


def one_file(path: Path, mapping: Path, work: Path, chunks, extra=()) -> dict:
    from recovery.data.store import open_store

    seen, lost, tracebacks, codes = [], 0, 0, []
    for k, chunk in enumerate(chunks):
        url = f"duckdb://{work / f'{path.stem}-{k}.duckdb'}"
        q = work / f"{path.stem}-{k}.quarantine.csv"
        rc, out, err = run_cli(["ingest", str(path), "--mapping", str(mapping), "--store", url,
                                "--quarantine", str(q), "--chunk-rows", str(chunk), "--json", *extra])
        codes.append(rc)
        tracebacks += int("Traceback" in err or rc in (3, -1))
        with open_store(url) as st:
            steps = st.read_steps(provenance=True)
        if rc in (0, 1):
            r = json.loads(out)
            rows = sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
                       if line.strip())
            qrows = 0
            if r["quarantine"]:
                with open(r["quarantine"], encoding="utf-8", newline="") as f:
                    qrows = sum(1 for _ in csv.DictReader(f))
            stored_rows = set(steps["source_row"]) if len(steps) else set()
            lost += rows - r["accepted"] - r["rejected"] - r["duplicates"]
            lost += abs(qrows - r["rejected"]) + abs(len(stored_rows) - r["accepted"])
            seen.append(((r["accepted"], r["rejected"], r["duplicates"]),
                         steps.drop(columns=["ingested_at"], errors="ignore").to_json(date_format="iso")))
        else:
            lost += len(steps)          # a refused file must leave nothing behind
            seen.append((rc, err.strip()))
    return {"exit": codes[0], "lost": lost, "tracebacks": tracebacks,
            "chunk_dependent": any(s != seen[0] for s in seen[1:]),
            "counts": seen[0][0] if codes[0] in (0, 1) else None}


def main(args: Args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ingest-reliability-"))
    mapping = work / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    good = good_rows(args.good)
    out = {}
    for name, bad in row_classes(args.good).items():
        rows = good[: len(good) // 2] + bad + good[len(good) // 2:]
        path = work / f"{len(out):02d}.csv"
        path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
        res = one_file(path, mapping, work, args.chunks)
        # rows with a bad cell that were stored anyway (duplicates and conflicts are good cells)
        accepted = res["counts"][0] if res["counts"] else 0
        out[name] = res | {"bad_rows": len(bad), "bad_accepted": max(0, accepted - len(good))}
    # whole-file classes
    files = {"empty file": b"", "header only": HEADER.encode(),
             "latin-1 bytes in a utf-8 file": (HEADER + "B-\xe4,0,2026-01-05 08:00:00,16.0,0.02\n").encode("latin-1"),
             "file cut inside its last row": (HEADER + "\n".join(good) + "\nB-9,0,2026-01-05 08:0").encode()}
    for name, data in files.items():
        path = work / f"{len(out):02d}.csv"
        path.write_bytes(data)
        out[name] = one_file(path, mapping, work, args.chunks) | {"bad_rows": 1}
    path = work / "missing-mapping.csv"
    path.write_text(HEADER + "\n".join(good) + "\n", encoding="utf-8")
    out["mapping file missing"] = one_file(path, work / "nope.toml", work, args.chunks) | {"bad_rows": 0}
    totals = {"classes": len(out), "lost": sum(v["lost"] for v in out.values()),
              "bad_accepted": sum(v.get("bad_accepted", 0) for v in out.values()),
              "tracebacks": sum(v["tracebacks"] for v in out.values()),
              "chunk_dependent": sum(v["chunk_dependent"] for v in out.values())}
    return {"chunks": list(args.chunks), "good_rows": args.good, "classes": out, "totals": totals}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--good", type=int, default=Args.good)
    ap.add_argument("--chunks", default=",".join(map(str, Args.chunks)))
    a = ap.parse_args()
    print(json.dumps(main(Args(good=a.good, chunks=tuple(int(c) for c in a.chunks.split(",")))), indent=1))
