"""``recovery track-record``: the agent's recommendations against decisions and outcomes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track-record", help="how often engineers followed the agent, and what happened",
        description="Join the store's recommendations, the engineers' final decisions and the "
                    "final-inspection step data (see recovery.track_record). --json prints "
                    '{"n_recommendations", "n_decisions", "n_outcomes", "agreement", "followed", '
                    '"not_followed" (each {"n", "recovered", "low", "high"}, 94%% intervals), '
                    '"calibration" (as in recovery evaluate), "by_month": [{"month", "net_value", '
                    '"baseline_net_value", "scrap_avoided"}], "batches", "notes"}. An empty store '
                    "gives zeros and empty lists.")
    p.add_argument("--store", default=None, metavar="URL",
                   help="store URL (default: $RECOVERY_STORE, else the DuckDB file in the user data directory)")
    p.add_argument("--since", default=None, metavar="DAY", help="only recommendations from this day (YYYY-MM-DD, UTC)")
    p.add_argument("--partner", default=None, help="only batches this partner owns")
    p.add_argument("--export", default=None, metavar="FILE", help="write one row per batch to a .csv or .parquet file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from recovery.cli import UserError
    from recovery.data.store import StoreError, open_store
    from recovery.track_record import track_record

    if args.since is not None:
        try:
            pd.Timestamp(args.since)
        except ValueError:
            raise UserError(f"--since: '{args.since}' is not a day (YYYY-MM-DD)") from None
    if args.export is not None:
        out = Path(args.export)
        if out.suffix not in (".csv", ".parquet"):
            raise UserError(f"--export {args.export}: expected a .csv or .parquet file name")
        if not out.parent.exists():
            raise UserError(f"--export {args.export}: directory {out.parent} does not exist")
    try:
        with open_store(args.store) as store:
            rep = track_record(store, since=args.since, partner=args.partner)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if args.export is not None:
        rep.export(args.export)
    d = rep.to_dict(with_batches=args.json)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
        return 0
    print(f"{d['n_recommendations']} recommendation(s), {d['n_decisions']} decision(s), "
          f"{d['n_outcomes']} outcome(s); agreement {_pct(d['agreement'])}")
    for key, label in (("followed", "followed"), ("not_followed", "not followed")):
        s = d[key]
        print(f"  recovered when {label:12}: {_pct(s['recovered'])} of {s['n']} "
              f"[{_pct(s['low'])}, {_pct(s['high'])}] (94%)")
    cal = d["calibration"]
    if cal:
        print(f"calibration on real outcomes (n {cal['n']}, Brier {cal['brier']:.3f}):")
        for b in cal["bins"]:
            print(f"  P(accept) {b['low']:.1f}-{b['high']:.1f}: predicted {b['predicted']:.2f}, observed "
                  f"{b['observed']:.2f} [{b['observed_low']:.2f}, {b['observed_high']:.2f}] (n {b['n']})")
    for m in d["by_month"]:
        base = "-" if m["baseline_net_value"] is None else f"{m['baseline_net_value']:.0f}"
        print(f"  {m['month']}: net value {m['net_value']:.0f}, doing nothing {base}, scrap avoided "
              f"{'-' if m['scrap_avoided'] is None else format(m['scrap_avoided'], '.1f')}")
    for n in d["notes"]:
        print(f"note: {n}")
    if args.export is not None:
        print(f"wrote {len(rep.batches)} row(s) to {args.export}")
    return 0
