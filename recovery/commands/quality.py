"""``recovery quality``: capability per stage, parts out of spec, genealogy relations."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quality", help="capability (Cp, Cpk), parts out of spec and genealogy of stored data",
        description="Per stage: Cp and Cpk of every characteristic with specification limits, "
                    "the measurements out of spec, and how linked stages relate (correlation "
                    "of parent-step values with the linked child-step measurements).")
    p.add_argument("--store", default=None, help="store URL (default: $RECOVERY_STORE, else the "
                                                 "DuckDB file in the user data directory)")
    p.add_argument("--process", default=None, help="process name (needed when the store holds several)")
    p.add_argument("--partner", default=None, help="only this partner's rows")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _f(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def run(args: argparse.Namespace) -> int:
    from recovery.cli import UserError
    from recovery.data.capability import quality_report
    from recovery.data.store import StoreError, open_store

    try:
        with open_store(args.store) as store:
            rep = quality_report(store, process=args.process, partner=args.partner)
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(rep.to_json(), indent=1, default=str))
        return 0
    print(f"process {rep.process}")
    print("\ncapability against the spec limits (Cp, Cpk: s_w = moving range / 1.128, short term;"
          "\n  Pp, Ppk: s = overall sample std, long term):")
    print(f"  {'step':>4}  {'characteristic':18} {'unit':4} {'n':>5} {'mean':>10} {'s_w':>9} {'s':>9} "
          f"{'LSL':>9} {'USL':>9} {'Cp':>6} {'Cpk':>6} {'Pp':>6} {'Ppk':>6} {'out':>5}")
    for c in rep.capability:
        print(f"  {c.step:>4}  {c.variable:18} {c.unit:4} {c.n:>5} {c.mean:>10.5g} {c.std_within:>9.3g} "
              f"{c.std:>9.3g} {_f(c.lower, '.6g'):>9} {_f(c.upper, '.6g'):>9} {_f(c.cp, '.2f'):>6} "
              f"{_f(c.cpk, '.2f'):>6} {_f(c.pp, '.2f'):>6} {_f(c.ppk, '.2f'):>6} {_f(c.out_of_spec, 'd'):>5}")
    if any(not c.specified for c in rep.capability):
        print("  (-: the source gives no specification limits)")
    oos = rep.out_of_spec
    parts = oos[["batch_id", "bar_id"]].drop_duplicates()
    print(f"\nout of spec: {len(oos)} measurement(s) on {len(parts)} part(s)")
    for (step, var, side), g in oos.groupby(["step", "variable", "side"]):
        ids = ", ".join(f"{b}/{'' if r is None or r != r else r}" for b, r in
                        zip(g["batch_id"].head(6), g["bar_id"].head(6)))
        more = f", ... ({len(g)} in all)" if len(g) > 6 else ""
        print(f"  step {step} {var} {side}: {ids}{more}")
    if len(rep.links):
        print("\ngenealogy:")
        for r in rep.links.itertuples(index=False):
            print(f"  step {r.parent_step} -> step {r.child_step}: {r.linked} linked part(s); "
                  f"{r.unlinked_parents} of {r.parents} parent part(s) have no later record")
        print("  relations (Pearson r, p, Spearman rho over linked parts):")
        for r in rep.relations:
            print(f"    {r.parent_variable:>14} (step {r.parent_step}) ~ {r.child_variable:<18} "
                  f"(step {r.child_step})  n={r.n:<4} r={r.pearson_r:+.2f}  p={r.p_value:.2g}  "
                  f"rho={r.spearman_rho:+.2f}")
    return 0
