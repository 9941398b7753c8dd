"""Parsing candidates into schema dtypes, with what the checks and messages need.

No verdicts here: :mod:`.checks` decides. :func:`parse_candidates` adds the
columns :data:`~recovery.data.ingestion.columns.PARSED` declares: typed ids,
steps and values (units converted to the process's with pint), timestamps in
UTC, and the process's expectations per row (factory, partner, unit, range),
taken from :class:`simulators.schema.StepRules`, the rules the simulator's
own check uses.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from recovery.data.ingestion.candidates import CandidatePlan, text_cells
from recovery.data.ingestion.columns import CANDIDATES, PARSED
from recovery.data.ingestion.distinct import by_distinct, by_distinct_rows
from recovery.data.store import NO_BAR
from simulators.definition import Process

__all__ = ["parse_candidates", "PLAUSIBLE_WIDTHS", "TS_MIN", "TS_MAX", "split_ids"]

#: Band widths beyond a characteristic's band at which a measurement is implausible.
PLAUSIBLE_WIDTHS = 10.0


def _numbers(s: pd.Series, decimal: str, thousands: str) -> pd.Series:
    """Parse numbers; <NA> stays missing, text that is not a number becomes NaN."""
    if s.dtype.kind in "fiu":
        return s.astype("float64")
    if s.dtype.kind == "b":
        return s.astype("float64")
    t = text_cells(s)
    if thousands:
        t = t.str.replace(thousands, "", regex=False)
    if decimal != ".":
        t = t.str.replace(".", "\x00", regex=False).str.replace(decimal, ".", regex=False)
    return _to_float(t)


# A plain decimal number: what Arrow's and pandas' parsers read alike.
_PLAIN = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _to_float(t: pd.Series) -> pd.Series:
    """``pd.to_numeric(t, errors="coerce")`` as float64, for stripped text.

    When every cell is a plain decimal number (or missing), Arrow parses the
    column, several times faster; both parsers round correctly, so the values
    are the same. Anything else (words, ``inf``, hex) goes to pandas as before.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(t.array, type=pa.string())
    if pc.all(pc.match_substring_regex(arr, _PLAIN), skip_nulls=True).as_py() is not False:
        try:
            out = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
            return pd.Series(out, index=t.index, dtype="float64")
        except pa.ArrowInvalid:  # a number Arrow will not read: pandas decides, as before
            pass
    return pd.to_numeric(t, errors="coerce").astype("float64")


def _whole(s: pd.Series) -> pd.Series:
    """Whole numbers as Int64; anything else (text, fractions) <NA>."""
    if s.dtype.kind in "iu" or str(s.dtype) in ("Int64", "Int32", "Int16", "Int8"):
        return s.astype("Int64")
    f = _numbers(s, ".", "")
    # from 2**53 on a float is no exact whole number (text 2**53 + 1 reads as 2**53) and
    # 1e20 would not fit Int64
    ok = np.isfinite(f) & (f == np.round(f)) & (f.abs() < 2.0 ** 53)
    return f.where(ok).astype("Int64")


def split_ids(raw: pd.Series, pattern: re.Pattern | None) -> tuple[pd.Series, pd.Series]:
    """(batch_id, bar_id) from a part-id column with the mapping's pattern."""
    if pattern is None:
        return raw, pd.Series(pd.NA, index=raw.index, dtype="Int64")
    parts = raw.astype("string").str.extract(pattern)
    batch = parts["batch"].astype("string")
    bar = _whole(parts["bar"]) if "bar" in parts else pd.Series(pd.NA, index=raw.index, dtype="Int64")
    return batch, bar


#: Timestamps are stored in nanoseconds; outside these (a day inside pandas' limits,
#: so a time-zone shift cannot cross them) they are refused, not a crash.
TS_MIN = pd.Timestamp("1677-09-23")
TS_MAX = pd.Timestamp("2262-04-10")
# width of the zero-padded strptime fields a text can end in
_FIELD_WIDTH = {"d": 2, "m": 2, "H": 2, "M": 2, "S": 2, "y": 2, "I": 2, "Y": 4, "j": 3}


def _in_range(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(times inside [TS_MIN, TS_MAX] as nanoseconds, NaT elsewhere; True where outside)."""
    lo, hi = (TS_MIN, TS_MAX) if s.dt.tz is None else (TS_MIN.tz_localize("UTC"), TS_MAX.tz_localize("UTC"))
    out = ((s < lo) | (s > hi)).fillna(False).astype(bool)
    return s.mask(out).dt.as_unit("ns"), out


def _cut_short(text: pd.Series, fmt: str) -> pd.Series:
    """True where a timestamp's text ends in a field with too few digits for the format,
    as a file cut inside its last timestamp leaves it ('2026-03-0', '08:00:0', '+00:0').

    The parsers accept those (strptime reads '0' for %S, pandas' ISO 8601 reader
    reads '08:0'), so without this the row would be stored at the wrong time.
    """
    codes, uniq = pd.factorize(text)    # timestamps repeat: look at each distinct text once
    if not len(uniq):  # every timestamp missing (the timestamp checks say so): nothing is cut
        return pd.Series(False, index=text.index)
    if len(uniq) < len(text):
        cut = _cut_short(pd.Series(uniq, dtype="string"), fmt).to_numpy()
        return pd.Series(np.where(codes >= 0, cut[np.maximum(codes, 0)], False), index=text.index)
    tail = text.str.extract(r"(?P<sep>[^0-9]?)(?P<digits>[0-9]+)$")
    n = tail["digits"].str.len()
    if fmt == "ISO8601":
        # ISO 8601 fields have 2 or 4 digits; only a fraction of a second has any number
        cut = (n % 2 == 1) & ~tail["sep"].isin([".", ","])
    else:
        last = re.search(r"%([a-zA-Z])$", fmt)
        width = _FIELD_WIDTH.get(last.group(1)) if last else None
        if width is None:
            return pd.Series(False, index=text.index)
        cut = n < width
    return cut.fillna(False).astype(bool)


def _times(raw: pd.Series, fmt: str, zone: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(parsed local time or NaT, UTC time or NaT, True where outside [TS_MIN, TS_MAX])."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        utc, out = _in_range(raw.dt.tz_convert("UTC"))
        utc = utc.astype("datetime64[ns, UTC]")
        return utc, utc, out
    if raw.dtype.kind == "M":
        local, out = _in_range(raw)
    else:
        text = text_cells(raw)
        local, out = _in_range(pd.to_datetime(text, format=fmt, errors="coerce", utc=fmt == "ISO8601"))
        if isinstance(local.dtype, pd.DatetimeTZDtype):
            # ISO 8601 with offsets: already an instant; without, read as the zone's clock
            has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).fillna(False)
            # utc=True and dropped again: pandas may read an offset the pattern above does
            # not ('+0', a cut text, refused by _cut_short); a mixed result would not localize
            naive, _ = _in_range(pd.to_datetime(text.where(~has_offset), format=fmt, errors="coerce",
                                                utc=True).dt.tz_localize(None))
            zoned = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            utc = local.where(has_offset, zoned).astype("datetime64[ns, UTC]")
            return local.where(has_offset, naive.dt.tz_localize("UTC")), utc, out
    local = local.astype("datetime64[ns]")
    utc = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return local, utc.astype("datetime64[ns, UTC]"), out


def _units(src: pd.Series, target: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """(scale, offset, source-unit-known, convertible) per row, via pint on distinct pairs."""
    from simulators.units import conversion, parse_unit

    pairs = pd.DataFrame({"s": src, "t": target})
    scale = np.full(len(src), np.nan)
    offset = np.full(len(src), np.nan)
    known = np.zeros(len(src), dtype=bool)
    conv = np.zeros(len(src), dtype=bool)
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(pairs.fillna("\x00")))
    for k, (s, t) in enumerate(uniq):
        if s == "\x00":
            continue
        sel = codes == k
        try:
            parse_unit(s)
        except Exception:  # noqa: BLE001 - any pint failure: not a unit
            continue
        known[sel] = True
        if t == "\x00":
            continue
        try:
            a, b = conversion(s, t)
        except Exception:  # noqa: BLE001 - incompatible dimensions
            continue
        conv[sel] = True
        scale[sel], offset[sel] = a, b
    idx = src.index
    return (pd.Series(scale, index=idx), pd.Series(offset, index=idx), pd.Series(known, index=idx),
            pd.Series(conv, index=idx))


def _width(lo: float, hi: float) -> float:
    """Band width; a zero-width band (a 0/1 flag that must be 0) counts max(1, |bound|) wide."""
    return hi - lo if hi > lo else max(1.0, abs(lo), abs(hi))


def bands(p: Process) -> dict[tuple[str, int], tuple[float, float]]:
    """Band per (characteristic, step) for the plausibility check; step 0 = any other step.

    At a gated inspection the gate's band; elsewhere the final band widened to
    take in every gate of the characteristic (intermediate values can sit far
    from the final band, e.g. a diameter before grinding).
    """
    out = {}
    for ch in p.characteristics:
        gates = [g for g in p.gates if g.characteristic == ch.name]
        lo = min([ch.lower] + [g.lower for g in gates])
        hi = max([ch.upper] + [g.upper for g in gates])
        out[(ch.name, 0)] = (lo, hi)
        for g in gates:
            if g.step != p.n_steps:
                out[(ch.name, g.step)] = (g.lower, g.upper)
    return out


#: The candidate columns that say what a value is (few distinct combinations per file).
_WHAT = ["step_raw", "variable_raw", "kind_raw", "unit_raw", "var_known", "factory_raw", "partner_raw"]


def parse_candidates(c: pd.DataFrame, plan: CandidatePlan) -> pd.DataFrame:
    """Candidate raw text -> schema dtypes plus what messages need (:data:`PARSED`).

    Everything that depends only on what a value is (step, variable, kind,
    unit, site) is worked out once per distinct combination and ids, bars and
    timestamps once per distinct cell (:mod:`.distinct`); the values row by row.
    """
    c["batch_id"], bar_from_id = by_distinct(c["id_raw"], lambda s: split_ids(s, plan.pattern))
    bar_given = c["bar_raw"].notna()
    c["bar_id"] = by_distinct(c["bar_raw"], _whole).where(bar_given, bar_from_id).astype("Int64")
    c["bar_key"] = c["bar_id"].fillna(NO_BAR).astype("int64")
    what = by_distinct_rows(c[_WHAT], lambda k: _what(k, plan))
    for col in what.columns:
        c[col] = what[col]
    _values(c, plan)
    del c["_scale"], c["_offset"]
    _timestamps(c, plan)
    c["id_problem"] = _id_problems(c["batch_id"])
    if plan.genealogy:
        c["parent_batch"], c["parent_bar"] = by_distinct(c["parent_raw"], lambda s: split_ids(s, plan.pattern))
        c["parent_bar_key"] = c["parent_bar"].fillna(NO_BAR).astype("int64")
        c["parent_problem"] = _id_problems(c["parent_batch"].astype("string"))
    return PARSED.expect(c, CANDIDATES, genealogy=plan.genealogy)


def _what(k: pd.DataFrame, plan: CandidatePlan) -> pd.DataFrame:
    """The columns that follow from what a value is: typed step, variable and kind,
    the process's expectations, the unit conversion (``_scale``, ``_offset``), ranges."""
    k = k.copy()
    k["step"] = _whole(k["step_raw"])
    k["variable"] = k["variable_raw"].astype("string")
    k["kind"] = k["kind_raw"].astype("string")
    _expectations(k, plan)
    k["_scale"], k["_offset"], k["unit_known"], k["unit_convertible"] = _units(k["unit_raw"], k["unit"])
    _ranges(k, plan)
    k["variable_problem"] = _id_problems(k["variable"])
    return k.drop(columns=_WHAT)


def _expectations(c: pd.DataFrame, plan: CandidatePlan) -> None:
    """What the process expects of each row (:class:`simulators.schema.StepRules`):
    factory and partner of the step, known variables, the target unit."""
    rules = plan.rules
    c["exp_factory"] = pd.array(rules.step_factory(c["step"]), dtype="string")
    c["exp_partner"] = pd.array(rules.step_partner(c["step"]), dtype="string")
    if plan.mapping is None:
        c["factory"], c["partner"] = c["factory_raw"], c["partner_raw"]
    else:
        c["factory"] = c["exp_factory"]
        c["partner"] = pd.Series(plan.mapping.partner, index=c.index, dtype="string")
    c["is_meas"] = (c["kind"] == "measurement").fillna(False)
    c["is_lever"] = (c["kind"] == "lever").fillna(False)
    c["char_known"] = rules.is_characteristic(c["variable"])
    c["lever_known"] = rules.is_lever(c["variable"])
    # target unit: the process's for measurements and levers, the file's for events/context
    target = rules.process_unit(c["kind"], c["variable"])
    c["unit"] = pd.array(np.where(rules.needs_value(c["kind"]), target, c["unit_raw"].astype(object)),
                         dtype="string")


def _values(c: pd.DataFrame, plan: CandidatePlan) -> None:
    """The value as a number, converted from the file's unit to the target unit."""
    m = plan.mapping
    decimal, thousands = (m.file.decimal, m.file.thousands) if m else (".", "")
    num = _numbers(c["value_raw"], decimal, thousands)
    c["value_num"] = num
    if c["value_raw"].dtype.kind in "fiub":
        # typed sources (Parquet): no text to quote; messages print the number
        c["value_text"] = pd.Series(pd.NA, index=c.index, dtype="string")
        c["value_present"] = num.notna()
    else:
        c["value_text"] = text_cells(c["value_raw"])
        c["value_present"] = c["value_text"].notna()
    c["value"] = (num * c["_scale"] + c["_offset"]).astype("float64")


def _ranges(c: pd.DataFrame, plan: CandidatePlan) -> None:
    """Plausible range of a measurement (ingestion's own rule, see :func:`bands`) and a
    lever's hard bounds and step (the step table's rules)."""
    p, rules = plan.process, plan.rules
    lo = np.full(len(c), -np.inf)
    hi = np.full(len(c), np.inf)
    is_meas = c["is_meas"].to_numpy(dtype=bool)
    is_lever = c["is_lever"].to_numpy(dtype=bool)
    var = c["variable"].fillna("")
    step_np = c["step"].fillna(0).astype("int64").to_numpy()
    for (name, st), (blo, bhi) in bands(p).items():
        sel = is_meas & (var == name).to_numpy() & (step_np == st if st else True)
        if st == 0:  # steps without a gate of their own
            sel &= ~np.isin(step_np, [g.step for g in p.gates if g.characteristic == name])
        w = PLAUSIBLE_WIDTHS * _width(blo, bhi)
        lo[sel], hi[sel] = blo - w, bhi + w
    llo, lhi = rules.lever_bounds(c["variable"])
    lo[is_lever], hi[is_lever] = llo[is_lever], lhi[is_lever]
    c["lo"], c["hi"] = lo, hi
    c["lever_step"] = np.where(is_lever, rules.lever_step(c["variable"], default=0), 0)


def _timestamps(c: pd.DataFrame, plan: CandidatePlan) -> None:
    """Local and UTC times, and whether the text is out of range or cut short."""
    if plan.ts_format is not None:  # a schema file's plan has ISO 8601
        fmt = plan.ts_format
        c["ts_local"], c["timestamp"], c["ts_out"] = by_distinct(c["ts_raw"],
                                                                 lambda s: _times(s, fmt, plan.ts_zone))
        typed = c["ts_raw"].dtype.kind == "M" or isinstance(c["ts_raw"].dtype, pd.DatetimeTZDtype)
        c["ts_cut"] = False if typed else _cut_short(c["ts_raw"].astype("string"), fmt)
    else:
        c["ts_out"], c["ts_cut"] = False, False
        c["ts_local"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns]")
        c["timestamp"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns, UTC]")


def _id_problems(ids: pd.Series) -> pd.Series:
    """:func:`recovery.data.ids.check_id` per value (<NA> where fine or missing), once per distinct id."""
    from recovery.data.ids import check_id

    s = ids.astype("string")
    uniq = s.dropna().unique()
    why = {v: check_id(v) for v in uniq}
    return s.map({v: r for v, r in why.items() if r is not None}).astype("string")
