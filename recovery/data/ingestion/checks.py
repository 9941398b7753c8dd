"""Validation: a pandera schema per stage; each check has a priority, a source role and a message.

The row checks (:func:`row_checks`) judge a candidate alone; the store checks
(:func:`store_checks`) judge it against the store and the rows accepted
before it. Both run as pandera ``DataFrameSchema`` checks (:func:`contract`),
so pandera stays the contract of what a candidate must satisfy;
:func:`failures` turns pandera's failure cases into (row, column, reason),
one per failing candidate and check, in check order (the first is the reason
a row is quarantined with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from recovery.data.ingestion.candidates import CandidatePlan, SourceColumns
from recovery.data.ingestion.parsing import PLAUSIBLE_WIDTHS, TS_MAX, TS_MIN
from simulators.schema import KINDS_OF_ROW

__all__ = ["Check", "row_checks", "store_checks", "contract", "failures", "show", "NAN_WORDS"]

#: Value cells that are NaN on purpose (events and context may carry them).
NAN_WORDS = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}


@dataclass(frozen=True)
class Check:
    """One rule: ``ok`` is True where a candidate passes, ``message`` says why not.

    The order of a list of checks is their priority: a row is quarantined
    with the reason of its first failing check.
    """

    code: str
    role: str                                              # which SourceColumns field names the column
    ok: Callable[[pd.DataFrame], pd.Series]                # True where the row passes
    message: Callable[[pd.DataFrame], list[str]]           # for failing rows only


def _g(v: float) -> str:
    return f"{v:.10g}"


def row_checks(plan: CandidatePlan, now: pd.Timestamp) -> list[Check]:
    """The checks of a candidate alone, in priority order.

    Parameters
    ----------
    plan : CandidatePlan
    now : Timestamp
        Timestamps after it are in the future (UTC).
    """
    checks = _id_checks(plan) + _variable_checks(plan) + _site_checks(plan) + _value_checks()
    if plan.ts_format is not None:  # a schema file's plan has ISO 8601
        checks += _time_checks(plan, now)
    if plan.genealogy:
        checks.append(Check("parent_valid", "parent", lambda d: d["parent_problem"].isna(),
                            lambda d: [f"parent batch id '{show(v)}' {r}"
                                       for v, r in zip(d["parent_batch"], d["parent_problem"])]))
    checks.append(Check("range", "value",
                        lambda d: ~(_carries_value(d) & np.isfinite(d["value"]))
                        | ((d["value"] >= d["lo"]) & (d["value"] <= d["hi"])), _range_msg))
    return checks


def _carries_value(d: pd.DataFrame) -> pd.Series:
    """Measurements and levers must carry a finite value (events and context need not)."""
    return d["is_meas"] | d["is_lever"]


def _range_msg(d: pd.DataFrame) -> list[str]:
    out = []
    for v, u, lo, hi, k, var, s in zip(d["value"], d["unit"], d["lo"], d["hi"], d["kind"],
                                       d["variable"], d["step"]):
        if k == "lever":
            out.append(f"lever value {_g(v)} {u} is outside its hard bounds [{_g(lo)}, {_g(hi)}] {u}")
        else:
            out.append(f"value {_g(v)} {u} is outside the plausible range [{_g(lo)}, {_g(hi)}] {u} "
                       f"of {var} at step {s} ({PLAUSIBLE_WIDTHS:g} band widths around its band)")
    return out


def _id_checks(plan: CandidatePlan) -> list[Check]:
    pat = plan.pattern.pattern if plan.pattern is not None else None
    idname = "part id" if pat else "batch id"

    def id_msg(d):
        return [f"{idname} is missing" if pd.isna(r) else
                f"part id '{show(r)}' does not match the pattern {pat}" for r in d["id_raw"]]

    return [
        Check("id", "id", lambda d: d["batch_id"].notna() & (d["batch_id"].str.len() > 0).fillna(False),
              id_msg),
        Check("id_valid", "id", lambda d: d["id_problem"].isna(),
              lambda d: [f"batch id '{show(v)}' {r}" for v, r in zip(d["batch_id"], d["id_problem"])]),
        Check("bar", "bar", lambda d: (d["bar_raw"].isna() | d["bar_id"].notna())
              & (d["bar_id"].fillna(0) >= 0),
              lambda d: [f"bar id '{show(r)}' is not a whole number >= 0" for r in d["bar_raw"]]),
        Check("ids_agree", "id", lambda d: d["ids_agree"].astype(bool),
              lambda d: [f"part ids disagree across the row's id columns: {a}" for a in d["ids_all"]]),
    ]


def _variable_checks(plan: CandidatePlan) -> list[Check]:
    """Kind, variable and step: the step table's rules (:class:`simulators.schema.StepRules`)
    with the messages of a partner file."""
    p = plan.process

    def var_msg(d):
        out = []
        for v, k, kn in zip(d["variable_raw"], d["kind"], d["var_known"]):
            if not kn:
                out.append(f"variable '{show(v)}' is not in the mapping")
            elif pd.isna(v):
                out.append("variable is missing")
            elif k == "lever":
                out.append(f"unknown lever '{show(v)}' for process '{p.name}'")
            else:
                out.append(f"unknown characteristic '{show(v)}' for process '{p.name}'")
        return out

    return [
        Check("kind", "kind", lambda d: d["kind"].isin(list(KINDS_OF_ROW)).fillna(False)
              | ~d["var_known"],
              lambda d: [f"kind '{show(k)}' is not one of {', '.join(KINDS_OF_ROW)}"
                         for k in d["kind_raw"]]),
        Check("variable_valid", "variable", lambda d: d["variable_problem"].isna(),
              lambda d: [f"variable '{show(v)}' {r}"
                         for v, r in zip(d["variable"], d["variable_problem"])]),
        Check("variable", "variable",
              lambda d: d["var_known"] & d["variable"].notna()
              & (~d["is_meas"] | d["char_known"]) & (~d["is_lever"] | d["lever_known"]), var_msg),
        Check("step", "step", lambda d: d["step"].between(1, p.n_steps).fillna(False),
              lambda d: ["step is missing" if pd.isna(r) else
                         f"step '{show(r)}' is not a whole number" if pd.isna(s) else
                         f"unknown step {s}: process '{p.name}' has steps 1..{p.n_steps}"
                         for r, s in zip(d["step_raw"], d["step"])]),
        Check("lever_step", "step",
              lambda d: ~(d["is_lever"] & d["lever_known"]) | (d["lever_step"] == d["step"].fillna(-1)),
              lambda d: [f"lever '{show(v)}' acts at step {ls}, not {s}"
                         for v, ls, s in zip(d["variable"], d["lever_step"], d["step"])]),
    ]


def _site_checks(plan: CandidatePlan) -> list[Check]:
    """Factory and partner: a schema file names them; a mapping's partner
    delivers only the steps it runs, in the factories it lists."""
    p = plan.process
    if plan.mapping is None:
        return [
            Check("factory", "factory", lambda d: (d["factory"] == d["exp_factory"]).fillna(False),
                  lambda d: [f"factory '{show(f)}' does not run step {s} ({e} does)"
                             for f, s, e in zip(d["factory"], d["step"], d["exp_factory"])]),
            Check("partner", "partner", lambda d: (d["partner"] == d["exp_partner"]).fillna(False),
                  lambda d: [f"partner '{show(f)}' does not own step {s} ({e} does)"
                             for f, s, e in zip(d["partner"], d["step"], d["exp_partner"])]),
        ]
    mp, facs = plan.mapping.partner, list(plan.mapping.factories)
    # a missing or unknown step is the "step" check's to report
    no_step = (lambda d: ~d["step"].between(1, p.n_steps).fillna(False))
    return [
        Check("partner", "step", lambda d: no_step(d) | (d["exp_partner"] == mp).fillna(False),
              lambda d: [f"step {s} ({p.step(int(s)).name}) is run by partner '{show(e)}', not '{mp}'"
                         for s, e in zip(d["step"], d["exp_partner"])]),
        Check("factory", "step",
              lambda d: no_step(d)
              | (d["exp_factory"].isin(facs) if facs else d["exp_factory"].notna()).fillna(False),
              lambda d: [f"step {s} ({p.step(int(s)).name}) runs in factory '{show(e)}', which the "
                         f"mapping's factories {facs} do not list"
                         for s, e in zip(d["step"], d["exp_factory"])]),
    ]


def _value_checks() -> list[Check]:
    """Units (pint: known, convertible to the target) and values (present, a finite number)."""

    def value_text(d):
        return [t if not pd.isna(t) else _g(n) for t, n in zip(d["value_text"], d["value_num"])]

    return [
        Check("unit_missing", "unit", lambda d: d["unit_raw"].notna(), lambda d: ["unit is missing"] * len(d)),
        Check("unit_known", "unit", lambda d: d["unit_known"] | d["unit_raw"].isna(),
              lambda d: [f"unknown unit '{show(u)}'" for u in d["unit_raw"]]),
        Check("unit_convertible", "unit",
              lambda d: d["unit_convertible"] | ~d["unit_known"] | d["unit"].isna(),
              lambda d: [f"unit '{show(u)}' cannot be converted to '{show(t)}', the process's unit of {v}"
                         for u, t, v in zip(d["unit_raw"], d["unit"], d["variable"])]),
        Check("value_missing", "value", lambda d: ~_carries_value(d) | d["value_present"],
              lambda d: ["value is missing"] * len(d)),
        # events and context may carry NaN on purpose; measurements and levers may not
        Check("value_number", "value",
              lambda d: ~d["value_present"] | np.isfinite(d["value_num"])
              | (~_carries_value(d) & d["value_text"].str.lower().isin(list(NAN_WORDS)).fillna(False)),
              lambda d: [f"value '{show(t)}' is not a finite number" for t in value_text(d)]),
    ]


def _time_checks(plan: CandidatePlan, now: pd.Timestamp) -> list[Check]:
    fmt, zone = plan.ts_format, plan.ts_zone
    checks = []
    if plan.ts_required:
        checks.append(Check("timestamp_missing", "timestamp", lambda d: d["ts_raw"].notna(),
                            lambda d: ["timestamp is missing"] * len(d)))
    return checks + [
        Check("timestamp_range", "timestamp", lambda d: ~d["ts_out"].astype(bool),
              lambda d: [f"timestamp '{show(t)}' is outside the supported range {TS_MIN:%Y-%m-%d} to "
                         f"{TS_MAX:%Y-%m-%d} (an export placeholder?)" for t in d["ts_raw"]]),
        Check("timestamp_format", "timestamp", lambda d: d["ts_raw"].isna() | d["ts_local"].notna(),
              lambda d: [f"timestamp '{show(t)}' does not match the format '{fmt}'"
                         for t in d["ts_raw"]]),
        Check("timestamp_cut", "timestamp", lambda d: d["ts_local"].isna() | ~d["ts_cut"].astype(bool),
              lambda d: [f"timestamp '{show(t)}' is cut short: its last field has too few digits for "
                         f"the format '{fmt}'" for t in d["ts_raw"]]),
        Check("timestamp_local", "timestamp", lambda d: d["ts_local"].isna() | d["timestamp"].notna(),
              lambda d: [f"timestamp '{show(t)}' does not exist or is ambiguous in {zone} "
                         f"(daylight-saving change)" for t in d["ts_raw"]]),
        Check("timestamp_future", "timestamp", lambda d: ~(d["timestamp"] > now).fillna(False),
              lambda d: [f"timestamp {t.isoformat()} is in the future" for t in d["timestamp"]]),
    ]


def store_checks(plan: CandidatePlan) -> list[Check]:
    """The checks against the store and the rows accepted before (genealogy, conflicts)."""
    p = plan.process
    checks = []
    if plan.genealogy_step is not None and plan.genealogy_required:
        ps = plan.genealogy_step
        sname = p.step(ps).name
        checks.append(Check(
            "genealogy", "parent", lambda d: d["parent_found"].astype(bool),
            lambda d: [f"genealogy: part {r} has no record at step {ps} ({sname}); "
                       f"ingest that step's data first" for r in d["parent_raw"]]))
    checks.append(Check(
        "conflict", "value", lambda d: ~d["stored"] | d["same"],
        lambda d: [(f"conflicts with value {_g(v)} {u} on line {n} of this file" if own else
                    f"conflicts with stored value {_g(v)} {u} from {src}")
                   for v, u, src, n, own in zip(d["stored_value"], d["unit"], d["stored_source"],
                                                d["stored_row"], d["stored_here"])]))
    return checks


def contract(checks: list[Check]):
    """The pandera schema of a candidate frame: its typed columns and ``checks``."""
    import pandera.pandas as pa

    # The typed columns are the schema's; the rest are what the checks read.
    cols = {
        "batch_id": pa.Column("string", nullable=True),
        "bar_id": pa.Column("Int64", nullable=True),
        "step": pa.Column("Int64", nullable=True),
        "variable": pa.Column("string", nullable=True),
        "kind": pa.Column("string", nullable=True),
        "value": pa.Column("float64", nullable=True),
        "unit": pa.Column("string", nullable=True),
        "timestamp": pa.Column("datetime64[ns, UTC]", nullable=True),
    }
    # ignore_na=False: a candidate always has its row number, so pandera's "every cell
    # missing" exemption never applies, and skipping it saves a pass over the frame per check
    return pa.DataFrameSchema(
        cols, checks=[pa.Check(lambda d, ch=ch: ch.ok(d).astype(bool), error=ch.code, name=ch.code,
                               ignore_na=False)
                      for ch in checks],
        strict=False, coerce=False)


def failures(c: pd.DataFrame, checks: list[Check], schema, sources: list[SourceColumns]) -> pd.DataFrame:
    """Validate with pandera; one row per failing (candidate, check): pos, row, prio, column, reason."""
    import pandera.errors as pe

    empty = pd.DataFrame({"pos": pd.Series([], dtype="int64"), "row": pd.Series([], dtype="int64"),
                          "prio": pd.Series([], dtype="int64"), "src": pd.Series([], dtype="int64"),
                          "column": pd.Series([], dtype="str"), "reason": pd.Series([], dtype="str")})
    try:
        schema.validate(c, lazy=True, inplace=True)  # no coercion: nothing to copy for
        return empty
    except pe.SchemaErrors as exc:
        fc = exc.failure_cases
    prio = {ch.code: i for i, ch in enumerate(checks)}
    bad = fc[fc["check"].isin(list(prio))]
    other = fc[~fc["check"].isin(list(prio))]
    if len(other):  # a dtype failure is a bug in the mapping code, not in the partner's data
        raise RuntimeError(f"candidate frame does not match its schema:\n{other.head().to_string()}")
    bad = bad[["index", "check"]].dropna().drop_duplicates()
    out = []
    for ch in checks:
        pos = bad.loc[bad["check"] == ch.code, "index"].astype("int64").to_numpy()
        if not len(pos):
            continue
        d = c.iloc[pos]
        out.append(pd.DataFrame({
            "pos": pos, "row": d["_row"].to_numpy(), "prio": prio[ch.code],
            "src": d["_src"].to_numpy().astype("int64"),
            "column": [getattr(sources[k], ch.role) for k in d["_src"]],
            "reason": ch.message(d)}))
    return pd.concat(out, ignore_index=True) if out else empty


def show(v: object, limit: int = 40) -> str:
    """A cell for a message: escapes (NUL, right-to-left marks) visible, long text shortened."""
    import unicodedata

    t = str(v)
    if len(t) > limit:
        t = t[:limit] + "..."
    return "".join(ch if ch.isprintable() and unicodedata.bidirectional(ch) not in ("R", "AL")
                   and not unicodedata.category(ch).startswith("C") else f"\\u{ord(ch):04x}"
                   for ch in t)
