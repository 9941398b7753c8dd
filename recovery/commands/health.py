"""``recovery health``: drift, offsets and fault rates per factory, with a change test."""

from __future__ import annotations

import argparse
import json

from recovery.commands._common import share


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "health", help="drift and offset per factory and characteristic, fault rates, change alarms",
        description="From a fitted model: for each factory (and its partner) and each characteristic "
                    "its drift reaches, the offset at the gauge and the drift per 100 production "
                    "days with 94%% intervals, and the projected day on which the flagged share at "
                    "the gate exceeds --gate-level; the rate of each fault type with its 94%% "
                    "interval. With step data (the model's training data, or --store), a change "
                    "test on the batches produced since --since: a posterior predictive check of "
                    "the readings' innovations against the model, and of the fault responsibilities "
                    "against the batches before the window (see recovery.health). --json prints {\"factories\": [{\"factory\", "
                    "\"partner\", \"characteristic\", \"offset\", \"offset_low\", \"offset_high\", "
                    "\"drift_per_100d\", \"drift_low\", \"drift_high\", \"changed\", ...}], "
                    "\"faults\": [{\"fault\", \"step\", \"rate\", \"low\", \"high\", \"changed\", ...}], "
                    "\"window\", \"notes\"}; units are the characteristic's.")
    p.add_argument("--model", required=True, help="model directory written by 'recovery fit'")
    p.add_argument("--store", default=None, metavar="URL",
                   help="test the store's step data of the model's process for change (default: the "
                        "model's training data)")
    p.add_argument("--since", type=float, default=None, metavar="DAY",
                   help="first production day of the change window (default: the last 30 days)")
    p.add_argument("--gate-level", type=share, default=0.5, metavar="X",
                   help="flagged share (0-1) whose projected crossing is reported (default 0.5)")
    p.add_argument("--partner", default=None, help="only this partner's factories and faults")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _num(v, fmt=".4g") -> str:
    return "-" if v is None else format(v, fmt)


def run(args: argparse.Namespace) -> int:
    from recovery.causal.errors import ModelLoadError
    from recovery.cli import UserError
    from recovery.health import load_health_model, plant_health

    if not 0.0 < args.gate_level < 1.0:
        raise UserError(f"--gate-level must lie strictly between 0 and 1, got {args.gate_level}")
    try:
        model = load_health_model(args.model)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    history, notes = None, []
    if args.store is not None:
        from recovery.data.store import StoreError, open_store

        name = model.graph_.process.name
        try:
            with open_store(args.store) as store:
                history = store.read_steps(process=name, partner=args.partner)
                others = [n for n in store.process_names() if n != name]
        except StoreError as exc:
            raise UserError(str(exc)) from None
        if not len(history):
            held = f" (it holds: {', '.join(others)})" if others else ""
            notes.append(f"the store holds no step data of the model's process '{name}'{held}")
    rep = plant_health(model, history, since=args.since, gate_level=args.gate_level, partner=args.partner)
    out = rep.to_dict()
    out["notes"] = notes + out["notes"]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    w = out["window"]
    print(f"process {rep.process}; change window: days {_num(w['since'])} to {_num(w['until'])} "
          f"({w['n_batches']} batches, {w['n_baseline']} before); intervals 94%")
    print(f"\n{'factory':8} {'partner':7} {'characteristic':18} {'offset':>10} {'[94%]':>23} "
          f"{'drift/100d':>11} {'[94%]':>23} {'unit':5} {'changed':7} gate day (> {args.gate_level:g})")
    for f in rep.factories:
        print(f"{f.factory:8} {f.partner:7} {f.characteristic:18} {f.offset:>10.4g} "
              f"[{f.offset_low:>10.4g}, {f.offset_high:>10.4g}] {f.drift_per_100d:>11.4g} "
              f"[{f.drift_low:>10.4g}, {f.drift_high:>10.4g}] {f.unit:5} "
              f"{'-' if f.changed is None else ('YES' if f.changed else 'no'):7} {_num(f.gate_day, '.0f')}")
    print(f"\n{'fault':28} {'step':>4} {'rate':>7} {'[94%]':>17} {'window':>7} {'changed':7}")
    for f in rep.faults:
        print(f"{f.fault:28} {f.step:>4} {f.rate:>7.3f} [{f.low:>7.3f}, {f.high:>7.3f}] "
              f"{_num(f.window_share, '.3f'):>7} {'-' if f.changed is None else ('YES' if f.changed else 'no')}")
    for n in out["notes"]:
        print(f"note: {n}")
    return 0
