"""A partner's own line (issue 22): learn-graph against PC, GES and DirectLiNGAM,
root cause on planted deviations, and time at 100 characteristics.

Prints JSON. Usage::

    python benchmarks/learn_graph.py [--parts 500 2000] [--lines 3] [--stations 5] [--chars 4]
        [--rc-trials 30] [--timing] [--skip-anchors] [--seed 0]
        [--noise gaussian|laplace] [--within-order listing|data]

``structure``: for each of ``--lines`` generated lines (``simulators.lines``,
default 5 stations x 4 characteristics, edges within and across stations, 20%
nonlinear) and each part count, the precision, recall, F1 and structural
Hamming distance (SHD: missing + extra + reversed edges) of ``learn-graph``
and of the anchors, run in the same process on the same part table (each
characteristic standardised):

- PC (``causallearn``, Fisher-z, alpha 0.05) and GES (``causallearn``, BIC):
  they return a CPDAG; an undirected edge is oriented along the step order (in
  their favour: learn-graph gets the same order), a directed edge back in time
  counts as reversed;
- DirectLiNGAM (``lingam``), an edge where ``|B| > 0.05`` (standardised).

Targets: precision >= 0.7 at 500 parts; F1 above the best anchor's.
``--noise laplace`` draws each characteristic's own noise from a Laplace law
(the non-Gaussian case DirectLiNGAM needs), and ``--within-order data`` lets
learn-graph order each station's characteristics from the data (the same
pairwise LiNGAM measure) instead of the listing.

``root_cause``: on one line of 500 parts, fit (ADVI) with the graph learn-graph
proposed, then ``--rc-trials`` parts each with a planted 4-sd deviation of one
characteristic's own noise; top-1 is the share whose most probable step
(``RootCause.steps``) is the station that produces it (target >= 0.8).

``timing`` (``--timing``): a line of 5 stations x 20 characteristics and 500
parts: seconds of learn-graph (target <= 120) and of ``recovery fit`` with its
edges, ADVI (target <= 300), on this machine.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from recovery.causal.learn import learn_graph, part_table
from simulators.definition import parse_process
from simulators.lines import make_line


def scores(est: set, truth: set) -> dict:
    """Precision, recall, F1 and SHD of a directed edge set against the truth."""
    tp = len(est & truth)
    rev = len({(a, b) for a, b in est if (b, a) in truth})
    extra = len(est - truth) - rev
    missing = len(truth - est) - rev
    prec = tp / len(est) if est else 1.0
    rec = tp / len(truth) if truth else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": round(prec, 3), "recall": round(rec, 3), "f1": round(f1, 3),
            "shd": int(extra + missing + rev), "edges": len(est)}


def _orient(i: int, j: int, names: list[str], rank: dict) -> tuple[str, str]:
    a, b = names[i], names[j]
    return (a, b) if rank[a] < rank[b] else (b, a)


def anchor_pc(Z: np.ndarray, names: list[str], rank: dict) -> set:
    from causallearn.search.ConstraintBased.PC import pc

    G = pc(Z, 0.05, "fisherz", show_progress=False).G.graph
    return _cpdag_edges(G, names, rank)


def anchor_ges(Z: np.ndarray, names: list[str], rank: dict) -> set:
    from causallearn.search.ScoreBased.GES import ges

    G = ges(Z, score_func="local_score_BIC")["G"].graph
    return _cpdag_edges(G, names, rank)


def _cpdag_edges(G: np.ndarray, names: list[str], rank: dict) -> set:
    """causal-learn's endpoint matrix: G[j, i] = 1 and G[i, j] = -1 is i -> j;
    -1 both ways is undirected (oriented along the step order)."""
    out = set()
    d = len(names)
    for i in range(d):
        for j in range(i + 1, d):
            if G[i, j] == 0 and G[j, i] == 0:
                continue
            if G[j, i] == 1 and G[i, j] == -1:
                out.add((names[i], names[j]))
            elif G[i, j] == 1 and G[j, i] == -1:
                out.add((names[j], names[i]))
            else:
                out.add(_orient(i, j, names, rank))
    return out


def anchor_lingam(Z: np.ndarray, names: list[str], seed: int) -> set:
    import lingam

    m = lingam.DirectLiNGAM(random_state=seed)
    m.fit(Z)
    B = m.adjacency_matrix_        # B[i, j]: j -> i
    return {(names[j], names[i]) for i, j in zip(*np.nonzero(np.abs(B) > 0.05))}


def structure(args) -> list[dict]:
    rows = []
    for k in range(args.lines):
        line = make_line(stations=args.stations, chars_per_station=args.chars, seed=args.seed + k,
                         noise=args.noise)
        proc = parse_process(line.process_toml(), "line.toml")
        truth = {(e.source, e.target) for e in line.edges}
        rank = {c: i for i, c in enumerate(line.characteristics)}
        for n in args.parts:
            hist = line.step_data(n, seed=1000 + args.seed + k, process=proc)
            res = {"line": k, "seed": args.seed + k, "parts": n, "true_edges": len(truth)}
            t = time.perf_counter()
            g = learn_graph(hist, proc, seed=args.seed, within_order=args.within_order)
            res["learn_graph"] = scores({(e.source, e.target) for e in g.edges}, truth) | {
                "seconds": round(time.perf_counter() - t, 2),
                "expected_false_edges_bound": round(g.error_bound, 2)}
            if not args.skip_anchors:
                table, _ = part_table(hist, proc)
                names = list(table.columns)
                X = table.to_numpy(float)
                Z = (X - X.mean(0)) / X.std(0)
                for name, fn in (("pc", lambda: anchor_pc(Z, names, rank)),
                                 ("ges", lambda: anchor_ges(Z, names, rank)),
                                 ("direct_lingam", lambda: anchor_lingam(Z, names, args.seed))):
                    t = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est = fn()
                    res[name] = scores(est, truth) | {"seconds": round(time.perf_counter() - t, 2)}
            rows.append(res)
            print(json.dumps(res), flush=True)
    return rows


def root_cause_trials(args, work: Path) -> dict:
    from recovery.causal.model import CausalModel
    from recovery.cli import main as cli

    line = make_line(stations=args.stations, chars_per_station=args.chars, seed=args.seed)
    proc = parse_process(line.process_toml(), "line.toml")
    paths = line.write(work / "rc", 500, seed=args.seed + 11)
    hist = line.step_data(500, seed=args.seed + 11, process=proc)
    data = work / "rc" / "hist.parquet"
    hist.to_parquet(data)
    edits = work / "rc" / "learned.toml"
    assert cli(["learn-graph", "--data", str(data), "--process", str(paths["process"]), "--out", str(edits)]) == 0
    t = time.perf_counter()
    assert cli(["fit", "--data", str(data), "--process", str(paths["process"]), "--edits", str(edits),
                "--out", str(work / "rc" / "m"), "--method", "advi", "--seed", str(args.seed), "--quiet",
                "--no-calibrate"]) == 0
    fit_s = time.perf_counter() - t
    model = CausalModel.load(work / "rc" / "m")
    rng = np.random.default_rng(args.seed)
    hits, top_prob = 0, []
    for i in range(args.rc_trials):
        c = str(rng.choice(line.characteristics))
        part = line.step_data(1, seed=10_000 + i, shift={c: 4.0}, process=model.graph_.process, first_id=90_000 + i)
        rc = model.root_cause(part, n_draws=200, seed=i)
        hits += rc.steps[0].step == line.step_of(c)
        top_prob.append(rc.steps[0].probability)
    return {"parts": 500, "trials": args.rc_trials, "shift_sd": 4.0, "top1": round(hits / args.rc_trials, 3),
            "median_top_probability": round(float(np.median(top_prob)), 3), "fit_seconds": round(fit_s, 1)}


def timing(args, work: Path) -> dict:
    from recovery.cli import main as cli

    line = make_line(stations=5, chars_per_station=20, p_within=0.1, p_across=0.02, seed=args.seed)
    proc = parse_process(line.process_toml(), "line.toml")
    paths = line.write(work / "t", 500, seed=args.seed + 3)
    data = work / "t" / "hist.parquet"
    line.step_data(500, seed=args.seed + 3, process=proc).to_parquet(data)
    edits = work / "t" / "learned.toml"
    t = time.perf_counter()
    g = learn_graph(line.step_data(500, seed=args.seed + 3, process=proc), proc, seed=args.seed)
    learn_s = time.perf_counter() - t
    edits.write_text(g.to_edits_toml(), "utf-8")
    truth = {(e.source, e.target) for e in line.edges}
    t = time.perf_counter()
    rc = cli(["fit", "--data", str(data), "--process", str(paths["process"]), "--edits", str(edits),
              "--out", str(work / "t" / "m"), "--method", "advi", "--seed", str(args.seed), "--quiet",
              "--no-calibrate"])
    fit_s = time.perf_counter() - t
    return {"characteristics": len(line.characteristics), "parts": 500, "learn_graph_seconds": round(learn_s, 1),
            "learn_graph": scores({(e.source, e.target) for e in g.edges}, truth),
            "fit_seconds": round(fit_s, 1), "fit_method": "advi", "fit_exit": rc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--lines", type=int, default=3)
    ap.add_argument("--stations", type=int, default=5)
    ap.add_argument("--chars", type=int, default=4)
    ap.add_argument("--rc-trials", type=int, default=30, help="0 skips the root-cause part")
    ap.add_argument("--timing", action="store_true", help="also time 100 characteristics x 500 parts")
    ap.add_argument("--skip-anchors", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", choices=["gaussian", "laplace"], default="gaussian")
    ap.add_argument("--within-order", choices=["listing", "data"], default="listing")
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "noise": args.noise, "within_order": args.within_order}
    out["structure"] = structure(args)
    summary = {}
    for n in args.parts:
        rows = [r for r in out["structure"] if r["parts"] == n]
        summary[str(n)] = {m: {k: round(float(np.mean([r[m][k] for r in rows])), 3)
                               for k in ("precision", "recall", "f1", "shd")}
                           for m in ("learn_graph", "pc", "ges", "direct_lingam") if m in rows[0]}
    out["summary"] = summary
    with tempfile.TemporaryDirectory() as tmp:
        if args.rc_trials:
            out["root_cause"] = root_cause_trials(args, Path(tmp))
            print(json.dumps({"root_cause": out["root_cause"]}), flush=True)
        if args.timing:
            out["timing"] = timing(args, Path(tmp))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
