"""Ingestion never loses a row and never crashes on bad input (issue 16).

Every source row ends accepted, rejected with a reason (and in the quarantine
file), or a duplicate of a row stored or accepted before it, whatever the
chunk size; bad cells are refused with a reason naming file, row and column.
"""

import csv
from pathlib import Path

import pandas as pd
import pytest

from recovery.data.ingest import ingest
from recovery.data.store import open_store

BASE = '[mapping]\nprocess = "small"\npartner = "A"\n[ids]\nbatch = "b"\nbar = "bar"\n'
DIAMETER = '[[columns]]\ncolumn = "d"\nvariable = "diameter"\nstep = 3\nunit = "mm"\n'
OVALITY = '[[columns]]\ncolumn = "o"\nvariable = "ovality"\nstep = 3\nunit = "mm"\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def quarantine_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def counts(r) -> tuple[int, int, int, int]:
    return r.rows, r.accepted, r.rejected, r.duplicates


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_a_rejected_row_does_not_swallow_a_later_good_one(tmp_path, chunk_rows):
    m1 = write(tmp_path / "m1.toml", BASE + DIAMETER)
    m2 = write(tmp_path / "m2.toml", BASE + DIAMETER + OVALITY)
    first = write(tmp_path / "first.csv", "b,bar,d\nR-1,0,16.10\n")
    # line 2 conflicts with the stored diameter and is rejected; line 3 agrees with the
    # store on the diameter and brings the ovality, which nothing accepted has delivered
    second = write(tmp_path / "second.csv", "b,bar,d,o\nR-1,0,16.20,0.04\nR-1,0,16.10,0.04\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        ingest(first, store=st, mapping=m1, quarantine=tmp_path / "q1.csv")
        r = ingest(second, store=st, mapping=m2, quarantine=tmp_path / "q2.csv", chunk_rows=chunk_rows)
        assert counts(r) == (2, 1, 1, 0)
        assert [(x.row, x.column) for x in r.reasons] == [(2, "d")]
        assert r.stored == 1
        df = st.read_steps().set_index("variable")["value"]
        assert df.to_dict() == {"diameter": pytest.approx(16.10), "ovality": pytest.approx(0.04)}


@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_a_row_rejected_for_genealogy_is_no_parent(tmp_path, chunk_rows):
    m = write(tmp_path / "m.toml", '[mapping]\nprocess = "small"\npartner = "A"\n'
              '[ids]\npart = "teil"\npattern = \'^(?P<batch>\\d{4})(?P<bar>\\d{2})$\'\n'
              '[genealogy]\nparent_step = 3\nparent = "vor"\n'
              '[[columns]]\ncolumn = "g"\nvariable = "weight"\nstep = 3\nkind = "context"\nunit = "kg"\n')
    # 100102's parent 100101 has no record: rejected; so 100103 (child of 100102) has
    # no parent either, whether or not 100102 was read in the same chunk
    f = write(tmp_path / "f.csv", "teil,vor,g\n100102,100101,0.5\n100103,100102,0.6\n100104,100103,0.7\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv", chunk_rows=chunk_rows)
        assert counts(r) == (3, 0, 3, 0)
        assert [x.row for x in r.reasons] == [2, 3, 4]
        assert all(x.reason.startswith("genealogy: part ") for x in r.reasons)
        assert st.counts()["observations"] == 0


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_a_duplicate_of_an_accepted_row_is_a_duplicate(tmp_path, chunk_rows):
    m = write(tmp_path / "m.toml", BASE + DIAMETER + OVALITY)
    # line 2 is good; line 3 conflicts with it; line 4 repeats line 2; line 5 conflicts with
    # line 2 on the ovality, not with the rejected line 3
    f = write(tmp_path / "f.csv", "b,bar,d,o\nR-1,0,16.10,0.04\nR-1,0,16.20,0.04\n"
                                  "R-1,0,16.10,0.04\nR-1,0,16.10,0.05\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv", chunk_rows=chunk_rows)
        assert counts(r) == (4, 1, 2, 1)
        assert [(x.row, x.reason) for x in r.reasons] == [
            (3, "conflicts with value 16.1 mm on line 2 of this file"),
            (5, "conflicts with value 0.04 mm on line 2 of this file")]
        assert st.counts()["observations"] == 2


# ---- timestamps: out of range or cut short ----------------------------------------

@pytest.fixture(scope="module")
def schema_rows():
    from simulators.process import Simulator

    return Simulator("small").simulate(2, seed=5, explore=1.0).observations


def test_out_of_range_timestamps_are_rejected_not_a_crash(tmp_path, schema_rows):
    df = schema_rows
    text = df.assign(timestamp=df["timestamp"].astype(str))
    text.loc[1, "timestamp"] = "9999-12-31"
    text.loc[2, "timestamp"] = "2300-01-05 12:00:00+00:00"
    text.to_csv(tmp_path / "h.csv", index=False)
    typed = df.assign(timestamp=df["timestamp"].astype("datetime64[us, UTC]"))
    typed.loc[0, "timestamp"] = pd.Timestamp("9999-12-31", tz="UTC")
    typed.to_parquet(tmp_path / "h.parquet")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(tmp_path / "h.csv", store=st, process="small", quarantine=tmp_path / "q.csv")
        assert counts(r) == (len(df), len(df) - 2, 2, 0)
        assert [(x.row, x.column, x.reason) for x in r.reasons] == [
            (3, "timestamp", "timestamp '9999-12-31' is outside the supported range 1677-09-23 to "
                             "2262-04-10 (an export placeholder?)"),
            (4, "timestamp", "timestamp '2300-01-05 12:00:00+00:00' is outside the supported range "
                             "1677-09-23 to 2262-04-10 (an export placeholder?)")]
        assert [q["timestamp"] for q in quarantine_rows(r.quarantine)] == ["9999-12-31",
                                                                          "2300-01-05 12:00:00+00:00"]
        assert st.counts()["observations"] == len(df) - 2
    with open_store(f"duckdb://{tmp_path / 't.duckdb'}") as st:
        r = ingest(tmp_path / "h.parquet", store=st, process="small", quarantine=tmp_path / "q2.csv")
        assert counts(r) == (len(df), len(df) - 1, 1, 0)
        assert (r.reasons[0].row, r.reasons[0].column) == (1, "timestamp")
        assert "outside the supported range" in r.reasons[0].reason


def test_out_of_range_timestamp_through_a_mapping(tmp_path):
    m = write(tmp_path / "m.toml", BASE + '[timestamp]\ncolumn = "t"\nformat = "%d.%m.%Y %H:%M:%S"\n'
              + DIAMETER)
    f = write(tmp_path / "f.csv", "b,bar,t,d\nR-1,0,05.01.2026 08:00:00,16.1\n"
                                  "R-1,1,31.12.9999 00:00:00,16.1\nR-1,2,01.01.2300 00:00:00,16.1\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
        assert counts(r) == (3, 1, 2, 0)
        assert [(x.row, x.column) for x in r.reasons] == [(3, "t"), (4, "t")]


@pytest.mark.parametrize("fmt, good, cut", [
    ("ISO8601", "2026-03-05T08:45:00+00:00", ["2026-03-0", "2026-03-05T08:4", "2026-03-05T08:45:0",
                                              "2026-03-05T08:45:00+0", "2026-03-05T08:45:00+00:0"]),
    ("%d.%m.%Y %H:%M:%S", "05.03.2026 08:45:05", ["05.03.2026 08:45:0"]),
    ("%Y-%m-%d %H:%M", "2026-03-05 08:45", ["2026-03-05 08:4"]),
])
def test_a_timestamp_cut_short_is_refused(tmp_path, fmt, good, cut):
    m = write(tmp_path / "m.toml", BASE + f'[timestamp]\ncolumn = "t"\nformat = "{fmt}"\n' + DIAMETER)
    for k, c in enumerate(cut):
        # the file ends inside its last timestamp (no newline after it)
        f = write(tmp_path / f"f{k}.csv", f"b,bar,d,t\nR-1,0,16.1,{good}\nR-1,1,16.1,{c}")
        with open_store(f"duckdb://{tmp_path / f's{k}.duckdb'}") as st:
            r = ingest(f, store=st, mapping=m, quarantine=tmp_path / f"q{k}.csv")
            assert counts(r) == (2, 1, 1, 0), c
            assert (r.reasons[0].row, r.reasons[0].column) == (3, "t")
            assert r.reasons[0].reason.startswith(f"timestamp '{c}' "), r.reasons[0].reason
            assert len(st.read_steps()) == 1


# ---- ids ----------------------------------------------------------------------------

def test_check_id_rule():
    from recovery.data.ids import MAX_ID_LENGTH, check_id

    assert check_id("B-0042") is None and check_id("Ovalität-7") is None and check_id("x" * 64) is None
    assert MAX_ID_LENGTH == 64
    assert check_id("x" * 65) == "is 65 characters long (at most 64)"
    assert check_id("") == "is empty"
    assert check_id(" B-1") == "has leading or trailing whitespace"
    assert check_id("B-\x001") == "contains the control character U+0000 at position 3"
    assert check_id("B-\u202e1") == "contains the format (invisible or bidi) character U+202E at position 3"
    assert check_id("B\u2028x") == "contains the line separator character U+2028 at position 2"
    assert check_id(42) == "is a int, not text"


def test_bad_ids_are_rejected_with_the_reason(tmp_path):
    m = write(tmp_path / "m.toml", BASE + DIAMETER)
    f = tmp_path / "f.csv"
    f.write_text("b,bar,d\nR-1,0,16.10\nR-\x002,0,16.1\nR-\u202e3,0,16.1\n" + "X" * 65 + ",0,16.1\n",
                 encoding="utf-8")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
        assert counts(r) == (4, 1, 3, 0)
        assert [(x.row, x.column, x.reason) for x in r.reasons] == [
            (3, "b", "batch id 'R-\\u00002' contains the control character U+0000 at position 3"),
            (4, "b", "batch id 'R-\\u202e3' contains the format (invisible or bidi) character U+202E "
                     "at position 3"),
            (5, "b", f"batch id '{'X' * 40}...' is 65 characters long (at most 64)")]
        assert st.read_steps()["batch_id"].tolist() == ["R-1"]
        # the quarantine keeps the cells as they were
        assert [q["b"] for q in quarantine_rows(r.quarantine)] == ["R-\x002", "R-\u202e3", "X" * 65]


def test_bad_ids_and_variables_in_a_schema_file(tmp_path, schema_rows):
    df = schema_rows.copy()
    df["batch_id"] = df["batch_id"].astype(object)
    df.loc[0, "batch_id"] = "B\u20661"
    ev = df.index[df["kind"] == "context"][1]
    df.loc[ev, "variable"] = "season\x00day"
    df.to_parquet(tmp_path / "h.parquet")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(tmp_path / "h.parquet", store=st, process="small", quarantine=tmp_path / "q.csv")
        assert [(x.row, x.column, x.reason) for x in r.reasons] == [
            (1, "batch_id", "batch id 'B\\u20661' contains the format (invisible or bidi) character "
                            "U+2066 at position 2"),
            (ev + 1, "variable", "variable 'season\\u0000day' contains the control character U+0000 "
                                 "at position 7")]


# ---- the quarantine file -------------------------------------------------------------

def test_quarantine_cells_cannot_run_as_spreadsheet_formulas(tmp_path):
    from recovery.data.ingest import neutralise_cell

    m = write(tmp_path / "m.toml", BASE + DIAMETER)
    f = write(tmp_path / "f.csv", 'b,bar,d\nR-1,0,16.10\n"=HYPERLINK(""http://evil"",""x"")",0,abc\n'
                                  "R-2,0,=1+1\nR-3,0,@SUM(A1)\nR-4,0,-17e9\nR-5,0,+cmd|' /C calc'!A0\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
    assert counts(r) == (6, 1, 5, 0)
    q = quarantine_rows(r.quarantine)
    assert [x["b"] for x in q] == ['\'=HYPERLINK("http://evil","x")', "R-2", "R-3", "R-4", "R-5"]
    # a plain negative number stays a number; formulas are shown, not run
    assert [x["d"] for x in q] == ["abc", "'=1+1", "'@SUM(A1)", "-17e9", "'+cmd|' /C calc'!A0"]
    # the reasons stay readable (they quote the cell as it was)
    assert q[1]["reason"] == "value '=1+1' is not a finite number"
    assert all(not x["reason"].startswith("'") for x in q)
    for cell in ["=1", "+1x", "-x", "@a", "\tx", "\rx"]:
        assert neutralise_cell(cell) == "'" + cell
    for cell in ["-1", "+2.5", "-16,1", "1e-3", "B-1", "", 3.0, None]:
        assert neutralise_cell(cell) == cell


def test_stale_partial_quarantine_files_are_removed_and_none_is_left(tmp_path):
    import subprocess
    import sys

    from recovery.data.ingest import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    qdir = tmp_path / "quarantine"
    qdir.mkdir()
    stale = qdir / f".old.quarantine.csv.{_HOST}.{dead.pid}.partial"
    legacy = qdir / "older.quarantine.csv.partial"
    other_host = qdir / f".x.quarantine.csv.otherhost.{dead.pid}.partial"
    alive = qdir / f".y.quarantine.csv.{_HOST}.{__import__('os').getpid()}.partial"
    for p in (stale, legacy, other_host, alive):
        p.write_text("row,column,reason\n")
    m = write(tmp_path / "m.toml", BASE + DIAMETER)
    f = write(tmp_path / "f.csv", "b,bar,d\nR-1,0,16.10\nR-2,0,abc\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=qdir / "f.quarantine.csv")
    assert r.rejected == 1 and r.quarantine == (qdir / "f.quarantine.csv").resolve()
    assert sorted(p.name for p in qdir.iterdir()) == sorted(["f.quarantine.csv", other_host.name, alive.name])


def test_long_rows_with_an_unknown_variable_or_step_are_rejected_not_a_crash(tmp_path):
    # found by the fuzzing: the partner check's message looked up the step of a row
    # whose step was unknown (a variable not in the mapping, a step beyond the process)
    m = write(tmp_path / "m.toml", '[mapping]\nprocess = "small"\npartner = "A"\nshape = "long"\n'
              '[ids]\nbatch = "b"\n[long]\nvariable = "m"\nvalue = "w"\nunit = "e"\nstep = "s"\n'
              '[[variables]]\nsource = "Durchmesser"\nvariable = "diameter"\n')
    f = write(tmp_path / "f.csv", "b,s,m,w,e\nR-1,3,Durchmesser,16.0,mm\nR-1,3,Härte,40,HRC\n"
                                  "R-2,99,Durchmesser,16.0,mm\nR-3,,Durchmesser,16.0,mm\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
    assert counts(r) == (4, 1, 3, 0)
    assert [(x.row, x.column, x.reason) for x in r.reasons] == [
        (3, "m", "variable 'Härte' is not in the mapping"),
        (4, "s", "unknown step 99: process 'small-chromed-rod' has steps 1..12"),
        (5, "s", "step is missing")]


def test_huge_step_or_bar_numbers_are_rejected_not_a_crash(tmp_path, schema_rows):
    # 1e20 is a whole float that does not fit Int64: it crashed the cast of the column
    df = schema_rows.head(4).reset_index(drop=True)
    df = df.assign(step=[3.0, 3.5, 1e20, float("nan")])
    df.to_parquet(tmp_path / "h.parquet")
    m = write(tmp_path / "m.toml", BASE + DIAMETER)
    f = write(tmp_path / "f.csv", "b,bar,d\nR-1,0,16.1\nR-1,1e20,16.1\nR-1,9007199254740993,16.1\n")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(tmp_path / "h.parquet", store=st, process="small", quarantine=tmp_path / "q.csv")
        assert [(x.row, x.column, x.reason) for x in r.reasons] == [
            (2, "step", "step '3.5' is not a whole number"),
            (3, "step", "step '1e+20' is not a whole number"),
            (4, "step", "step is missing")]
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q2.csv")
        assert counts(r) == (3, 1, 2, 0)
        assert [(x.row, x.column) for x in r.reasons] == [(3, "bar"), (4, "bar")]
