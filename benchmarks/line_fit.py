"""Fit time on a partner's own line (issue 22): ``recovery fit`` with the learned
edges at 20 and 100 characteristics and 500 parts.

Prints JSON. Usage::

    python benchmarks/line_fit.py [--chars 20 100] [--parts 500] [--advi-steps 20000]
        [--likelihood auto|dense] [--seed 0]

For each width: a line from ``simulators.lines.make_line`` (20: 5 stations x 4
characteristics, the default edge densities; 100: 5 x 20 with ``p_within=0.1,
p_across=0.02``), line seed ``--seed``, ``--parts`` parts drawn with data seed
``--seed + 3``; ``learn_graph`` proposes the edges, then ``recovery fit --method
advi --no-calibrate`` (ADVI, ``--advi-steps``, stopping early once the
parameters settle) fits them, run in this process. Reported per width: wall and
CPU seconds of the fit (CPU: this process, all threads; and apart, its child
processes, e.g. a C compiler PyTensor starts for a new graph), the load average
before and after, the likelihood's form, the ADVI steps actually run, and the
fit report's notes. Target (issue 22): fit <= 300 s at 100 characteristics and
500 parts on 2 cores.

``--likelihood dense`` times the dense multivariate-normal likelihood (the form
every fit used before the factorised one); it is slow at 100 characteristics.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import contextlib
import io
import json
import platform
import resource
import tempfile
import time
import warnings
from pathlib import Path

from recovery.causal.learn import learn_graph
from simulators.definition import parse_process
from simulators.lines import make_line


def one_width(chars: int, args, work: Path) -> dict:
    from recovery.causal.model import CausalModel
    from recovery.cli import main as cli

    if chars == 100:
        line = make_line(stations=5, chars_per_station=20, p_within=0.1, p_across=0.02, seed=args.seed)
    elif chars % 5 == 0:
        line = make_line(stations=5, chars_per_station=chars // 5, seed=args.seed)
    else:
        raise SystemExit(f"--chars: {chars} is not a multiple of the 5 stations")
    proc = parse_process(line.process_toml(), "line.toml")
    folder = work / f"c{chars}"
    paths = line.write(folder, args.parts, seed=args.seed + 3)
    hist = line.step_data(args.parts, seed=args.seed + 3, process=proc)
    data = folder / "hist.parquet"
    hist.to_parquet(data)
    t = time.perf_counter()
    g = learn_graph(hist, proc, seed=args.seed)
    learn_s = time.perf_counter() - t
    edits = folder / "learned.toml"
    edits.write_text(g.to_edits_toml(), "utf-8")
    load0 = os.getloadavg()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, t0 = time.process_time(), time.perf_counter()
    argv = ["fit", "--data", str(data), "--process", str(paths["process"]), "--edits", str(edits),
            "--out", str(folder / "m"), "--method", "advi", "--advi-steps", str(args.advi_steps),
            "--seed", str(args.seed), "--quiet", "--no-calibrate"]
    if args.likelihood != "auto":
        argv += ["--likelihood", args.likelihood]
    # the fit's own report (one line per learned edge) stays off the JSON
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        rc = cli(argv)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)     # a C compiler PyTensor may start
    cpu_children = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    out = {"characteristics": len(line.characteristics), "parts": args.parts, "true_edges": len(line.edges),
           "learned_edges": len(g.edges), "learn_graph_seconds": round(learn_s, 1), "fit_exit": rc,
           "fit_wall_seconds": round(wall, 1), "fit_cpu_seconds": round(cpu, 1),
           "fit_cpu_seconds_children": round(cpu_children, 1),
           "load_average_before": [round(x, 1) for x in load0],
           "load_average_after": [round(x, 1) for x in os.getloadavg()]}
    if rc == 0:
        m = CausalModel.load(folder / "m")
        out["parameters"] = m.layout_.size
        out["notes"] = [n for n in m.report_.notes if n.startswith(("ADVI", "likelihood", "posterior widened"))]
        out["sample_seconds"] = round(float(m.report_.sample_seconds), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chars", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--parts", type=int, default=500)
    ap.add_argument("--advi-steps", type=int, default=20_000)
    ap.add_argument("--likelihood", choices=["auto", "dense"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "likelihood": args.likelihood,
           "advi_steps": args.advi_steps, "fits": []}
    with tempfile.TemporaryDirectory() as tmp:
        for chars in args.chars:
            res = one_width(chars, args, Path(tmp))
            out["fits"].append(res)
            print(json.dumps(res), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
