"""Property-based fuzzing of ingestion (issue 16): nothing vanishes, nothing crashes.

Hypothesis writes partner files for the ``small`` process, wide and long through
a mapping (CSV in random encodings, separators and decimal marks, or Parquet)
and step-data files in the schema (CSV or Parquet), from a small key space so
that duplicates and conflicts are frequent, with broken cells mixed in (NaN,
text, out-of-range values, bad units, bad or cut timestamps, bad ids). For
every file:

- every source row is accepted, rejected with a reason (and in the quarantine
  file) or a duplicate: ``accepted + rejected + duplicates == rows``;
- a row with a broken cell is always rejected; the stored rows are exactly the
  accepted ones (one source row each), with the values the file says;
- the result (counts, reasons, stored table) is the same for a tiny random
  chunk size and one chunk;
- ingesting the file again stores nothing and rejects the same rows;
- no exception escapes.

The CI budget is :data:`CI_EXAMPLES` examples per file kind, derandomized (the
same examples on every run); ``-m slow`` runs :data:`SLOW_EXAMPLES` with a
fixed seed.
"""

import csv
import io
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from recovery.data.ingest import ingest
from recovery.data.store import open_store

CI_EXAMPLES = 15
SLOW_EXAMPLES = 300
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)

CI = settings(max_examples=CI_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- cells: (text, broken?) ------------------------------------------------------------

IDS = ["R-1", "R-2", "Ä-3"]
BAD_IDS = ["", "X" * 65, "R\x00", "R\u202e1", "R\u2066-1"]
BARS = ["0", "1", "2"]
BAD_BARS = ["x", "-1", "1.5", "1e20"]
TIMES = ["2026-01-05 08:00:00", "2026-02-01 12:30:15"]
BAD_TIMES = ["9999-12-31 00:00:00", "2300-01-01 00:00:00", "2026-13-01 00:00:00", "2026-02-30 10:00:00",
             "2026-03-05 08:45:0", "2026-03-29 02:30:00", "2099-01-01 00:00:00", "yesterday", ""]
BAD_TEXT = ["", "NaN", "nan", "inf", "-inf", "abc", "=1+1", "1e308"]
# numbers outside the plausible ranges of diameter and ovality, in mm and in um
BAD_NUMBERS = {1.0: ["17.5", "-3", "1e9"], 1000.0: ["-3000", "1e9"]}
DIAMETERS = [15.99, 16.0, 16.01]
OVALITIES = [0.01, 0.02]
ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-8-sig"]
SEPARATORS = [",", ";", "\t", "|"]


def cell(good: list[str], bad: list[str]):
    """A cell: mostly good, sometimes broken; (text, broken)."""
    return st.one_of(st.sampled_from(good).map(lambda t: (t, False)),
                     st.sampled_from(good).map(lambda t: (t, False)),
                     st.sampled_from(good).map(lambda t: (t, False)),
                     st.sampled_from(bad).map(lambda t: (t, True)))


def number(values: list[float], decimal: str, scale: float = 1.0, digits: int = 2):
    """A good value (text in the file's decimal mark, the value in mm) or a broken one."""
    good = st.sampled_from(values).map(
        lambda v: (f"{v * scale:.{digits}f}".replace(".", decimal), False, v))
    bad = st.sampled_from(BAD_TEXT + BAD_NUMBERS[scale]).map(lambda t: (t.replace(".", decimal), True, None))
    return st.one_of(good, good, good, bad)


def encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


@st.composite
def partner_files(draw):
    """A wide or long partner file and its mapping, with what each row should give."""
    shape = draw(st.sampled_from(["wide", "long"]))
    fmt = draw(st.sampled_from(["csv", "csv", "parquet"]))
    enc = draw(st.sampled_from(ENCODINGS)) if fmt == "csv" else "utf-8"
    sep = draw(st.sampled_from(SEPARATORS))
    dec = draw(st.sampled_from([".", ","])) if fmt == "csv" else "."
    n = draw(st.integers(1, 12))
    rows, expect = [], []     # expect: None for a row with a broken cell, else {variable: mm}
    for _ in range(n):
        (b, bb), (bar, barb), (t, tb) = (draw(cell(IDS, BAD_IDS)), draw(cell(BARS, BAD_BARS)),
                                         draw(cell(TIMES, BAD_TIMES)))
        if not encodable(b, enc):
            b = "X" * 65
        if shape == "wide":
            d, db, dv = draw(number(DIAMETERS, dec))
            o, ob, ov = draw(number(OVALITIES, dec))
            rows.append([b, bar, t, d, o])
            broken = bb or barb or tb or db or ob
            expect.append(None if broken else {"diameter": dv, "ovality": ov})
        else:
            var, varb = draw(cell(["Durchmesser", "Ovalität"], ["Härte", ""]))
            unit, unitb = draw(cell(["mm", "um"], ["kg", "zz", ""]))
            scale = 1000.0 if unit == "um" else 1.0
            values = DIAMETERS if var == "Durchmesser" else OVALITIES
            v, vb, vv = draw(number(values, dec, scale, 2 if scale == 1 else 0))
            rows.append([b, bar, t, var, v, unit])
            name = {"Durchmesser": "diameter", "Ovalität": "ovality"}.get(var)
            broken = bb or barb or tb or varb or unitb or vb
            expect.append(None if broken else {name: vv})
    # repeat some rows as they are (duplicates) and in another order (conflicts)
    extra = draw(st.lists(st.integers(0, n - 1), max_size=4))
    rows += [list(rows[i]) for i in extra]
    expect += [expect[i] for i in extra]
    order = draw(st.permutations(range(len(rows))))
    rows, expect = [rows[i] for i in order], [expect[i] for i in order]
    header = ["b", "bar", "t", "d", "o"] if shape == "wide" else ["b", "bar", "t", "m", "w", "e"]
    return dict(shape=shape, format=fmt, encoding=enc, separator=sep, decimal=dec, header=header,
                rows=rows, expect=expect, chunk=draw(st.integers(1, 5)))


def mapping_text(case) -> str:
    sep = case["separator"].replace("\t", "\\t")
    file = (f'[file]\nformat = "parquet"\n' if case["format"] == "parquet" else
            f'[file]\nencoding = "{case["encoding"]}"\nseparator = "{sep}"\ndecimal = "{case["decimal"]}"\n')
    head = (f'[mapping]\nprocess = "small"\npartner = "A"\nshape = "{case["shape"]}"\n{file}'
            '[ids]\nbatch = "b"\nbar = "bar"\n'
            '[timestamp]\ncolumn = "t"\nformat = "%Y-%m-%d %H:%M:%S"\ntimezone = "Europe/Berlin"\n')
    if case["shape"] == "wide":
        return head + ('[[columns]]\ncolumn = "d"\nvariable = "diameter"\nstep = 3\nunit = "mm"\n'
                       '[[columns]]\ncolumn = "o"\nvariable = "ovality"\nstep = 3\nunit = "mm"\n')
    return head + ('[long]\nvariable = "m"\nvalue = "w"\nunit = "e"\n'
                   '[[variables]]\nsource = "Durchmesser"\nvariable = "diameter"\nstep = 3\n'
                   '[[variables]]\nsource = "Ovalität"\nvariable = "ovality"\nstep = 3\n')


def write_file(case, folder: Path) -> tuple[Path, int]:
    """The file and the source row number of its first data row."""
    if case["format"] == "parquet":
        path = folder / "data.parquet"
        pd.DataFrame(case["rows"], columns=case["header"], dtype="string").to_parquet(path)
        return path, 1
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=case["separator"], lineterminator="\n")
    w.writerow(case["header"])
    w.writerows(case["rows"])
    path = folder / "data.csv"
    path.write_bytes(buf.getvalue().encode(case["encoding"]))
    return path, 2


# ---- the properties -------------------------------------------------------------------

def run(path, chunk, folder: Path, name: str, *, rerun: bool, **kw):
    with open_store("duckdb://:memory:") as store:
        r = ingest(path, store=store, quarantine=folder / f"{name}.csv", chunk_rows=chunk, now=NOW, **kw)
        steps = store.read_steps(provenance=True)
        again = None
        if rerun:
            again = ingest(path, store=store, quarantine=folder / f"{name}-again.csv", chunk_rows=chunk,
                           now=NOW, **kw)
            assert len(store.read_steps()) == len(steps)
    return r, steps, again


def quarantined(r) -> list[dict]:
    if r.quarantine is None:
        return []
    with open(r.quarantine, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def check(path, first_row: int, expect: list, labels: list[str], chunk: int, folder: Path, **kw):
    small, steps, again = run(path, chunk, folder, "small", rerun=True, **kw)
    whole, steps1, _ = run(path, 100_000, folder, "whole", rerun=False, **kw)
    n = len(expect)
    rows = set(range(first_row, first_row + n))
    # nothing vanishes
    assert small.rows == n
    assert small.accepted + small.rejected + small.duplicates == n
    q = quarantined(small)
    rejected = [int(x["row"]) for x in q]
    assert len(rejected) == len(set(rejected)) == small.rejected and set(rejected) <= rows
    assert all(x["reason"] and x["column"] in labels for x in q)
    assert [r.row for r in small.reasons] == rejected[:len(small.reasons)]
    # a broken row is never stored; stored rows are the accepted ones, with the file's values
    broken = {first_row + i for i, e in enumerate(expect) if e is None}
    assert broken <= set(rejected)
    empty = pd.DataFrame({"source_row": [], "variable": [], "value": []})
    steps = steps if len(steps) else empty      # an empty store's table has no provenance columns
    steps1 = steps1 if len(steps1) else empty
    stored_rows = set(steps["source_row"].astype(int))
    assert len(stored_rows) == small.accepted and not stored_rows & set(rejected)
    assert len(steps) == small.stored
    for row, var, value in steps[["source_row", "variable", "value"]].itertuples(index=False):
        want = expect[int(row) - first_row]
        if want is not None and var in want:
            assert math.isclose(value, want[var], rel_tol=1e-9), (row, var, value, want)
    # the chunk size changes nothing
    assert (small.rows, small.accepted, small.rejected, small.duplicates) == \
           (whole.rows, whole.accepted, whole.rejected, whole.duplicates)
    assert small.reasons == whole.reasons
    cols = [c for c in ["batch_id", "bar_id", "step", "variable", "value", "unit", "kind", "timestamp",
                        "source_row"] if c in steps]
    pd.testing.assert_frame_equal(steps[cols].reset_index(drop=True), steps1[cols].reset_index(drop=True))
    # a re-run stores nothing new and rejects the same rows
    assert (again.accepted, again.stored, again.rejected) == (0, 0, small.rejected)
    assert again.duplicates == small.accepted + small.duplicates
    assert [int(x["row"]) for x in quarantined(again)] == rejected


def check_partner_file(case):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, first = write_file(case, folder)
        m = folder / "mapping.toml"
        m.write_text(mapping_text(case), encoding="utf-8")
        check(path, first, case["expect"], case["header"], case["chunk"], folder, mapping=m)


@CI
@given(partner_files())
def test_partner_files_lose_nothing(case):
    check_partner_file(case)


@pytest.mark.slow
@seed(16)
@SLOW
@given(partner_files())
def test_partner_files_lose_nothing_large_budget(case):
    check_partner_file(case)


# ---- files in the step-data schema ------------------------------------------------------

@pytest.fixture(scope="module")
def pool():
    from simulators.process import Simulator

    df = Simulator("small").simulate(2, seed=5, explore=1.0).observations
    return df


SCHEMA_BAD = {
    "batch_id": BAD_IDS, "bar_id": ["x", "-1", "1.5", "1e20"], "step": ["0", "99", "x", "", "1e20"],
    "factory": ["FZ", ""], "partner": ["Z", ""], "variable": ["nope", "season\x00day", ""],
    "value": BAD_TEXT, "unit": ["kg", "zz", ""], "kind": ["measure", ""],
    "timestamp": ["9999-12-31", "2026-03-0", "2026-01-05T08:4", "2026-01-05 08:00:00+00:0", "garbage",
                  "2099-01-01T00:00:00Z"],
}


@st.composite
def schema_files(draw, n_pool: int):
    picks = draw(st.lists(st.integers(0, n_pool - 1), min_size=1, max_size=12))
    edits = []      # per row: None, ("bad", column, text) or ("value", new value)
    for _ in picks:
        kind = draw(st.sampled_from(["keep", "keep", "keep", "bad", "value"]))
        if kind == "bad":
            col = draw(st.sampled_from(sorted(SCHEMA_BAD)))
            edits.append(("bad", col, draw(st.sampled_from(SCHEMA_BAD[col]))))
        elif kind == "value":
            edits.append(("value", draw(st.sampled_from([0.001, -0.002]))))
        else:
            edits.append(None)
    return dict(picks=picks, edits=edits, format=draw(st.sampled_from(["csv", "parquet"])),
                chunk=draw(st.integers(1, 5)))


def check_schema_file(case, pool):
    from simulators.schema import COLUMNS

    df = pool.iloc[case["picks"]].reset_index(drop=True)
    text = pd.DataFrame({c: df[c].astype("string") for c in COLUMNS})
    text["timestamp"] = df["timestamp"].map(lambda t: t.isoformat()).astype("string")
    text["value"] = df["value"].map(repr).astype("string")
    expect = []
    for i, e in enumerate(case["edits"]):
        value = float(df.loc[i, "value"])
        if e is not None and e[0] == "bad":
            text.loc[i, e[1]] = e[2]
            # events and context may carry NaN, any variable name and their own unit
            free = df.loc[i, "kind"] not in ("measurement", "lever") and e[1] in ("value", "variable", "unit")
            expect.append({} if free else None)
            continue
        if e is not None:   # a changed value: a conflict when the key came earlier
            value = value + e[1]
            text.loc[i, "value"] = repr(value)
        expect.append({str(df.loc[i, "variable"]): value})
    text = text.fillna("")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if case["format"] == "csv":
            path, first = folder / "steps.csv", 2
            text.to_csv(path, index=False, encoding="utf-8")
        else:
            path, first = folder / "steps.parquet", 1
            text.to_parquet(path)
        check(path, first, expect, list(COLUMNS), case["chunk"], folder, process="small")


def test_schema_files_lose_nothing(pool):
    @CI
    @given(schema_files(len(pool)))
    def prop(case):
        check_schema_file(case, pool)

    prop()


@pytest.mark.slow
def test_schema_files_lose_nothing_large_budget(pool):
    @seed(16)
    @SLOW
    @given(schema_files(len(pool)))
    def prop(case):
        check_schema_file(case, pool)

    prop()
