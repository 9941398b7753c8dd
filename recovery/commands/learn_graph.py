"""``recovery learn-graph``: propose causal edges from a line's history (issue 22).

Writes them in the expert-edits format, for an engineer to read, prune and give
to ``recovery fit --edits``. The method and its error control are in
:mod:`recovery.causal.learn`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import load_process_arg, positive_int, read_history, read_store_history, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learn-graph", help="propose causal edges between characteristics from history",
        description="Propose edges between a process's characteristics from its history: lasso "
                    "regression on the characteristics that came into being earlier (no edge points "
                    "back in time) or earlier in the same step's order, with stability selection "
                    "over half-samples; the bound on the expected number of false edges "
                    "(Meinshausen-Buehlmann) is printed. Writes the expert-edits format that "
                    "'recovery fit --edits' loads. --json prints "
                    '{"method", "n_parts", "seconds", "edges": [{"from", "to", "weight", "low", '
                    '"high", "selected_frequency", "step", "within"}], "expected_false_edges_bound", '
                    '"threshold", "subsamples", "within_order", "out"}.')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="step data: a .parquet file, a folder of .parquet parts or a .csv "
                                     "in the step-data schema")
    src.add_argument("--store", metavar="URL", help="read the process's step data from a store")
    p.add_argument("--process", required=True, help="the process file the data belong to")
    p.add_argument("--out", required=True, help="edits file to write (.toml)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="selection frequency an edge needs, in (0.5, 1] (default 0.8)")
    p.add_argument("--subsamples", type=positive_int, default=50,
                   help="half-samples for stability selection (default 50)")
    p.add_argument("--within-order", choices=["listing", "data"], default="listing",
                   help="order inside a step: the step's 'produces' listing (an expert's order, "
                        "default) or from the data (needs non-Gaussian noise)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--json", action="store_true", help="print the JSON contract")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recovery.causal.graph import CausalGraph, ExpertEditError, load_edits
    from recovery.causal.learn import LearnGraphError, learn_graph

    process = load_process_arg(args.process)
    out = Path(args.out)
    if out.suffix != ".toml":
        raise UserError(f"--out {out}: expected a .toml file name")
    if not out.parent.exists():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    if args.data:
        history = read_history(args.data, check=True, process=process, csv=True)
    else:
        history = read_store_history(args.store, process)
    try:
        learned = learn_graph(history, process, subsamples=args.subsamples, threshold=args.threshold,
                              within_order=args.within_order, seed=args.seed)
    except LearnGraphError as exc:
        raise UserError(str(exc)) from None
    out.write_text(learned.to_edits_toml(), "utf-8")
    try:   # what fit --edits will do with it: refuse it here, not there
        CausalGraph.from_process(process, load_edits(out))
    except ExpertEditError as exc:
        raise UserError(f"the learned edges do not form a valid graph: {exc}") from None
    if args.json:
        print(json.dumps(learned.to_dict() | {"out": str(out)}, indent=1))
        return 0
    print(f"learned      {len(learned.edges)} edges from {learned.n_parts} parts in {learned.seconds:.1f} s")
    print(f"method       {learned.method}")
    print(f"error bound  expected false edges <= {learned.error_bound:.2f} "
          f"(Meinshausen-Buehlmann, per family; a worst case: on generated lines the false edges "
          f"found were 0-3 against bounds of 8.6-14.9, BENCHMARKS.md)")
    for e in learned.edges:
        where = "within" if e.within else "before"
        print(f"  step {e.step:3d}  {e.source:>16s} -> {e.target:16s} ({where})  weight {e.weight:9.4g} "
              f"[{e.low:.4g}, {e.high:.4g}]  selected {100 * e.selected_frequency:3.0f}%")
    print(f"edits        {out} (give to: recovery fit --edits {out})")
    return 0
