"""Ingestion: broken partner files are refused with exact reasons, and nothing is lost.

The partner files here are small German-style exports for the built-in ``small``
process (partner A runs steps 1-7). Every test checks the exact message a
partner would read, and the bookkeeping: accepted + rejected + duplicates ==
rows, every rejected row is in the quarantine file with its reason, and a file
that cannot be read leaves the store as it was.
"""

import csv
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recovery.data.ingest import IngestError, ingest
from recovery.data.mapping import MappingError, load_mapping
from recovery.data.store import open_store

PATTERN = r"^(?P<batch>\d{4})(?P<bar>\d{2})$"

WIDE_MAPPING = """\
[mapping]
name = "partner A gauge export"
process = "small"
partner = "A"
factories = ["FA1"]
shape = "wide"

[file]
encoding = "{encoding}"
separator = "{separator}"
decimal = ","
header_line = 3
data_line = 4

[ids]
batch = "Charge"
bar = "Stab"

[timestamp]
column = "Zeit"
format = "%d.%m.%Y %H:%M:%S"
timezone = "Europe/Berlin"

[[columns]]
column = "Durchmesser"
variable = "diameter"
step = 3
unit = "{unit}"

[[columns]]
column = "{ovality}"
variable = "ovality"
step = 3
unit = "mm"
"""

HEADER = "# Messprotokoll Werk FA1\n# Prüfplan 7\nCharge;Stab;Zeit;Durchmesser;Ovalität\n"


def wide_mapping(tmp_path, *, encoding="latin-1", separator=";", unit="um", ovality="Ovalität"):
    p = tmp_path / "partner_a.toml"
    p.write_text(WIDE_MAPPING.format(encoding=encoding, separator=separator, unit=unit,
                                     ovality=ovality), encoding="utf-8")
    return p


def wide_file(tmp_path, rows, *, name="gauges.csv", encoding="latin-1", header=HEADER):
    p = tmp_path / name
    p.write_bytes((header + "".join(r + "\n" for r in rows)).encode(encoding))
    return p


GOOD = ["B-1;0;05.01.2026 08:00:00;16101,5;0,020", "B-1;1;05.01.2026 08:01:00;16099;0,018",
        "B-2;0;06.01.2026 08:00:00;16110;0,025"]


@pytest.fixture
def st(tmp_path):
    with open_store(f"duckdb://{tmp_path / 'st.duckdb'}") as s:
        yield s


def quarantine_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def reasons(res) -> list[tuple[int, str, str]]:
    return [(r.row, r.column, r.reason) for r in res.reasons]


def check_nothing_lost(res, st, n_values_per_row):
    assert res.accepted + res.rejected + res.duplicates == res.rows
    if res.rejected:
        q = quarantine_rows(res.quarantine)
        assert len(q) == res.rejected
        assert all(r["reason"] for r in q)
        assert sorted(int(r["row"]) for r in q) == sorted({r.row for r in res.reasons}) \
            or len(res.reasons) == 100
    else:
        assert res.quarantine is None
    assert res.stored == res.accepted * n_values_per_row


# ---- accepted data --------------------------------------------------------------

def test_wide_file_converts_units_and_times_and_keeps_out_of_spec_values(tmp_path, st):
    res = ingest(wide_file(tmp_path, GOOD), store=st, mapping=wide_mapping(tmp_path),
                 quarantine=tmp_path / "q.csv")
    assert (res.rows, res.accepted, res.rejected, res.duplicates) == (3, 3, 0, 0)
    check_nothing_lost(res, st, 2)
    df = st.read_steps()
    d = df[df.variable == "diameter"].set_index(["batch_id", "bar_id"])["value"]
    # um -> mm through pint; 16.1 mm is out of the final band [15.975, 16.025] but plausible
    assert d[("B-1", 0)] == pytest.approx(16.1015, abs=1e-12)
    assert set(df["unit"]) == {"mm"} and set(df["factory"]) == {"FA1"} and set(df["partner"]) == {"A"}
    # 08:00 in Berlin in January is 07:00 UTC
    t = df[(df.batch_id == "B-1") & (df.bar_id == 0)]["timestamp"].iloc[0]
    assert t == pd.Timestamp("2026-01-05T07:00:00Z")
    assert (df["step"] == 3).all() and (df["kind"] == "measurement").all()


def test_long_file_with_levers_and_unit_column(tmp_path, st):
    m = tmp_path / "long.toml"
    m.write_text(textwrap.dedent("""\
        [mapping]
        process = "small"
        partner = "A"
        shape = "long"
        [file]
        separator = ","
        [ids]
        part = "teil"
        pattern = '^(?P<batch>B-\\d+)(?:/(?P<bar>\\d+))?$'
        [timestamp]
        column = "zeit"
        [long]
        variable = "merkmal"
        value = "wert"
        unit = "einheit"
        step = "schritt"
        [[variables]]
        source = "Anlasstemperatur"
        variable = "temper_temperature"
        kind = "lever"
        [[variables]]
        source = "Streckgrenze"
        variable = "yield_strength"
        """), encoding="utf-8")
    f = tmp_path / "long.csv"
    f.write_text(textwrap.dedent("""\
        teil,schritt,merkmal,wert,einheit,zeit
        B-1,7,Anlasstemperatur,842,degF,2026-01-05T10:00:00Z
        B-1/0,6,Streckgrenze,160,ksi,2026-01-05T09:00:00Z
        B-1/1,6,Streckgrenze,1100,MPa,2026-01-05T09:00:00+01:00
        B-2,7,Anlasstemperatur,1100,degF,2026-01-05T10:00:00Z
        B-2/0,6,Streckgrenze,1100,kg,2026-01-05T09:00:00Z
        B-2/1,6,Streckgrenze,1100,N/mm2,2026-01-05T09:00:00Z
        B-2/2,6,Haerte,40,HRC,2026-01-05T09:00:00Z
        B-2/3,9,Streckgrenze,1100,MPa,2026-01-05T09:00:00Z
        B-3,6,Anlasstemperatur,842,degF,2026-01-05T10:00:00Z
        """), encoding="utf-8")
    res = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
    assert (res.rows, res.accepted, res.rejected) == (9, 3, 6)
    assert reasons(res) == [
        (5, "wert", "lever value 593.3333333 degC is outside its hard bounds [350, 530] degC"),
        (6, "einheit", "unit 'kg' cannot be converted to 'MPa', the process's unit of yield_strength"),
        (7, "einheit", "unknown unit 'N/mm2'"),
        (8, "merkmal", "variable 'Haerte' is not in the mapping"),
        (9, "schritt", "step 9 (grinding) is run by partner 'B', not 'A'"),
        (10, "schritt", "lever 'temper_temperature' acts at step 7, not 6"),
    ]
    check_nothing_lost(res, st, 1)
    df = st.read_steps().set_index(["batch_id", "variable"])
    lever = df.loc[("B-1", "temper_temperature")]
    assert lever["value"] == pytest.approx(450.0) and pd.isna(lever["bar_id"]) and lever["unit"] == "degC"
    ys = df.loc[("B-1", "yield_strength")].set_index("bar_id")["value"]
    assert ys[0] == pytest.approx(160 * 6.894757293168361) and ys[1] == 1100.0
    assert df.loc[("B-1", "yield_strength")]["timestamp"].tolist() == [
        pd.Timestamp("2026-01-05T09:00:00Z"), pd.Timestamp("2026-01-05T08:00:00Z")]


# ---- files that cannot be read: exact errors, store unchanged ---------------

def test_bad_encoding_names_the_line_and_byte(tmp_path, st):
    f = wide_file(tmp_path, GOOD)
    before = st.counts()
    with pytest.raises(IngestError) as e:
        ingest(f, store=st, mapping=wide_mapping(tmp_path, encoding="utf-8"), quarantine=tmp_path / "q.csv")
    pos = "# Prüfplan 7".encode("latin-1").index(b"\xfc") + 1
    assert str(e.value) == (f"{f}: line 2 is not valid utf-8: byte 0xfc at position {pos} "
                            "(is it latin-1 or cp1252? set [file] encoding in the mapping)")
    assert st.counts() == before


def test_bad_encoding_deep_in_the_file_rolls_back_every_chunk(tmp_path, st):
    header = "Charge;Stab;Zeit;Durchmesser;Ovalitaet\n"
    rows = GOOD * 4 + ["B-9;0;06.01.2026 08:00:00;16110;0,025 ä"]
    f = wide_file(tmp_path, rows, header="#\n#\n" + header)
    before = st.counts()
    with pytest.raises(IngestError, match=r"line 16 is not valid utf-8: byte 0xe4"):
        ingest(f, store=st, mapping=wide_mapping(tmp_path, encoding="utf-8", ovality="Ovalitaet"),
               quarantine=tmp_path / "q.csv", chunk_rows=2)
    assert st.counts() == before and st.counts()["observations"] == 0
    assert not list(tmp_path.glob("q.csv*"))


def test_wrong_separator_says_which_one(tmp_path, st):
    f = wide_file(tmp_path, GOOD)
    with pytest.raises(IngestError) as e:
        ingest(f, store=st, mapping=wide_mapping(tmp_path, separator=","), quarantine=tmp_path / "q.csv")
    assert str(e.value) == (
        f"{f}: column 'Charge' named in the mapping is not in the header (line 3): "
        "['Charge;Stab;Zeit;Durchmesser;Ovalität']; the line splits into 1 field with separator "
        "',' but contains 4 ';': is the separator ';'?")
    assert st.counts()["ingests"] == 0


def test_missing_column(tmp_path, st):
    f = wide_file(tmp_path, GOOD)
    with pytest.raises(IngestError) as e:
        ingest(f, store=st, mapping=wide_mapping(tmp_path, ovality="Rundheit"), quarantine=tmp_path / "q.csv")
    assert str(e.value) == (f"{f}: column 'Rundheit' named in the mapping is not in the header "
                            "(line 3): ['Charge', 'Stab', 'Zeit', 'Durchmesser', 'Ovalität']")


def test_empty_header_only_and_truncated_files(tmp_path, st, small_history):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(IngestError) as e:
        ingest(empty, store=st, mapping=wide_mapping(tmp_path))
    assert str(e.value) == f"{empty}: the file is empty"
    head = wide_file(tmp_path, [], name="head.csv")
    with pytest.raises(IngestError) as e:
        ingest(head, store=st, mapping=wide_mapping(tmp_path))
    assert str(e.value) == f"{head}: the file has no data rows (expected the first on line 4)"
    src, _ = small_history
    cut = tmp_path / "cut.parquet"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError) as e:
        ingest(cut, store=st, process="small")
    assert str(e.value).startswith(f"{cut}: not a readable Parquet file: ")
    assert st.counts()["ingests"] == 0 and st.counts()["observations"] == 0


def test_unknown_unit_in_the_mapping_is_a_mapping_error(tmp_path):
    m = wide_mapping(tmp_path, unit="Pfund")
    with pytest.raises(MappingError) as e:
        load_mapping(m)
    assert str(e.value) == f"{m}: columns[0]: unknown unit 'Pfund'"
    m = wide_mapping(tmp_path, unit="kg")
    with pytest.raises(MappingError) as e:
        load_mapping(m)
    assert str(e.value) == (f"{m}: columns[0]: unit 'kg' cannot be converted to 'mm', "
                            "the process's unit of diameter")


# ---- rows refused with their reasons ------------------------------------------------

def test_broken_rows_exact_reasons_and_quarantine(tmp_path, st):
    rows = GOOD + [
        "B-3;0;06.01.2026 08:00:00;NaN;0,02",          # line 7: NaN
        "B-3;1;06.01.2026 08:00:00;;0,02",             # line 8: empty
        "B-3;2;06.01.2026 08:00:00;16100;abc",         # line 9: text
        "B-3;3;06.01.2026 08:00:00;17500;0,02",        # line 10: implausible, 17.5 mm
        "B-3;4;31.02.2026 08:00:00;16100;0,02",        # line 11: no such date
        "B-3;5;29.03.2026 02:30:00;16100;0,02",        # line 12: skipped by the DST change
        "B-3;6;06.01.2099 08:00:00;16100;0,02",        # line 13: future
        ";7;06.01.2026 08:00:00;16100;0,02",           # line 14: no batch id
        "B-3;x;06.01.2026 08:00:00;16100;0,02",        # line 15: bar id not a number
        "",                                            # line 16: blank, not a row
        "B-3;8;06.01.2026 08:00:00;16100;0,9",         # line 17: ovality 0.9 > 0.715
    ]
    f = wide_file(tmp_path, rows)
    res = ingest(f, store=st, mapping=wide_mapping(tmp_path), quarantine=tmp_path / "q.csv",
                 now=pd.Timestamp("2026-06-01T00:00:00Z").to_pydatetime())
    assert reasons(res) == [
        (7, "Durchmesser", "value 'NaN' is not a finite number"),
        (8, "Durchmesser", "value is missing"),
        (9, "Ovalität", "value 'abc' is not a finite number"),
        (10, "Durchmesser", "value 17.5 mm is outside the plausible range [15.672, 16.533] mm of "
                            "diameter at step 3 (10 band widths around its band)"),
        (11, "Zeit", "timestamp '31.02.2026 08:00:00' does not match the format '%d.%m.%Y %H:%M:%S'"),
        (12, "Zeit", "timestamp '29.03.2026 02:30:00' does not exist or is ambiguous in "
                     "Europe/Berlin (daylight-saving change)"),
        (13, "Zeit", "timestamp 2099-01-06T07:00:00+00:00 is in the future"),
        (14, "Charge", "batch id is missing"),
        (15, "Stab", "bar id 'x' is not a whole number >= 0"),
        (17, "Ovalität", "value 0.9 mm is outside the plausible range [-0.65, 0.715] mm of ovality "
                         "at step 3 (10 band widths around its band)"),
    ]
    assert (res.rows, res.accepted, res.rejected, res.duplicates) == (13, 3, 10, 0)
    check_nothing_lost(res, st, 2)
    q = quarantine_rows(res.quarantine)
    assert list(q[0]) == ["row", "column", "reason", "Charge", "Stab", "Zeit", "Durchmesser", "Ovalität"]
    assert q[0]["row"] == "7" and q[0]["Durchmesser"] == "NaN" and q[0]["Charge"] == "B-3"
    assert q[3]["Durchmesser"] == "17500"
    assert st.ingests()["quarantine_path"].iloc[0] == str(res.quarantine)


def test_duplicates_in_the_file_and_on_reingest(tmp_path, st):
    rows = GOOD + [GOOD[0], GOOD[1].replace("16099", "16098")]
    f = wide_file(tmp_path, rows)
    res = ingest(f, store=st, mapping=wide_mapping(tmp_path), quarantine=tmp_path / "q.csv")
    assert (res.rows, res.accepted, res.duplicates, res.rejected) == (5, 3, 1, 1)
    assert reasons(res) == [(8, "Durchmesser", "conflicts with value 16.099 mm on line 5 of this file")]
    check_nothing_lost(res, st, 2)
    n = st.counts()["observations"]
    again = ingest(f, store=st, mapping=wide_mapping(tmp_path), quarantine=tmp_path / "q2.csv")
    assert (again.accepted, again.duplicates, again.rejected) == (0, 4, 1)
    assert again.reasons[0].reason == f"conflicts with stored value 16.099 mm from {f}"
    assert st.counts()["observations"] == n == 6


def test_conflicting_reingest_keeps_the_stored_value(tmp_path, st):
    f = wide_file(tmp_path, GOOD)
    ingest(f, store=st, mapping=wide_mapping(tmp_path), quarantine=tmp_path / "q.csv")
    g = wide_file(tmp_path, [GOOD[0], GOOD[2].replace("0,025", "0,026")], name="fixed.csv")
    res = ingest(g, store=st, mapping=wide_mapping(tmp_path), quarantine=tmp_path / "q2.csv")
    assert (res.accepted, res.duplicates, res.rejected) == (0, 1, 1)
    assert reasons(res) == [(5, "Ovalität", f"conflicts with stored value 0.025 mm from {f}")]
    df = st.read_steps()
    assert df[(df.batch_id == "B-2") & (df.variable == "ovality")]["value"].tolist() == [0.025]


def test_chunk_size_does_not_change_the_result(tmp_path):
    rng = np.random.default_rng(3)
    rows = [f"B-{i // 4};{i % 4};05.01.2026 08:{i % 60:02d}:00;{16100 + rng.integers(-30, 30)};0,02"
            for i in range(40)]
    rows += [rows[5], rows[33].replace(";0,02", ";0,03"), "B-x;1;bad;1;1"]
    f = wide_file(tmp_path, rows)
    out = []
    for k, chunk in enumerate([3, 7, 100_000]):
        with open_store(f"duckdb://{tmp_path / f'c{k}.duckdb'}") as s:
            r = ingest(f, store=s, mapping=wide_mapping(tmp_path), quarantine=tmp_path / f"q{k}.csv",
                       chunk_rows=chunk)
            out.append(((r.rows, r.accepted, r.rejected, r.duplicates), reasons(r),
                        s.read_steps()))
    for o in out[1:]:
        assert o[0] == out[0][0] == (43, 40, 2, 1) and o[1] == out[0][1]
        pd.testing.assert_frame_equal(o[2], out[0][2])


def test_genealogy_needs_the_parent_record(tmp_path, st):
    sawing = tmp_path / "saw.csv"
    sawing.write_text("teil,gewicht\n100101,0.5\n100102,0.6\n", encoding="utf-8")
    milling = tmp_path / "mill.csv"
    milling.write_text("teil,rauheit\n100101,0.2\n100103,0.25\n", encoding="utf-8")
    m1, m2 = tmp_path / "saw.toml", tmp_path / "mill.toml"
    common = f"""[mapping]\nprocess = "small"\npartner = "A"\n[ids]\npart = "teil"\npattern = '{PATTERN}'\n"""
    m1.write_text(common + '[[columns]]\ncolumn = "gewicht"\nvariable = "weight"\nstep = 3\n'
                  'kind = "context"\nunit = "kg"\n', encoding="utf-8")
    m2.write_text(common + '[genealogy]\nparent_step = 3\n[[columns]]\ncolumn = "rauheit"\n'
                  'variable = "ovality"\nstep = 6\nunit = "mm"\n', encoding="utf-8")
    early = ingest(milling, store=st, mapping=m2, quarantine=tmp_path / "q0.csv")
    assert reasons(early) == [
        (2, "teil", "genealogy: part 100101 has no record at step 3 (inspection after drawing); "
                    "ingest that step's data first"),
        (3, "teil", "genealogy: part 100103 has no record at step 3 (inspection after drawing); "
                    "ingest that step's data first")]
    ingest(sawing, store=st, mapping=m1, quarantine=tmp_path / "q1.csv")
    res = ingest(milling, store=st, mapping=m2, quarantine=tmp_path / "q2.csv")
    assert (res.accepted, res.rejected) == (1, 1) and res.reasons[0].row == 3
    links = st.read_links()
    assert links[["parent_batch", "parent_bar", "parent_step", "child_batch", "child_bar",
                  "child_step"]].values.tolist() == [["1001", 1, 3, "1001", 1, 6]]


def test_wide_ids_must_agree_across_qdas_columns(tmp_path, st):
    f = tmp_path / "qdas.csv"
    f.write_text("Messwerte;14 Teileidentnummer;1 Messwert;14 Teileidentnummer;1 Messwert;\n"
                 ";200101;16,001;200101;0,01;\n;200102;16,002;200199;0,01;\n", encoding="utf-8")
    m = tmp_path / "qdas.toml"
    m.write_text(textwrap.dedent(f"""\
        [mapping]
        process = "small"
        partner = "A"
        [file]
        separator = ";"
        decimal = ","
        [ids]
        part = 2
        pattern = '{PATTERN}'
        agree = true
        [[columns]]
        column = 3
        variable = "diameter"
        step = 3
        unit = "mm"
        part = 2
        [[columns]]
        column = 5
        variable = "ovality"
        step = 3
        unit = "mm"
        part = 4
        """), encoding="utf-8")
    res = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv")
    assert reasons(res) == [(3, "column 4", "part ids disagree across the row's id columns: 200102, 200199")]
    assert res.accepted == 1 and st.counts()["observations"] == 2


def test_simulated_data_of_the_default_process_is_accepted_whole(tmp_path, st):
    # faults push values out of spec; out of spec is data, never a rejection
    from simulators.process import Simulator

    df = Simulator("default").simulate(40, seed=4).observations
    f = tmp_path / "default.parquet"
    df.to_parquet(f)
    res = ingest(f, store=st, process="default")
    assert (res.accepted, res.rejected) == (len(df), 0)
    p = Simulator("default").process
    lo, hi = p.final_bands()
    last = df[df.step == p.n_steps].pivot_table(index=["batch_id", "bar_id"], columns="variable",
                                                values="value")
    names = [c.name for c in p.characteristics]
    last = last[names]
    out = ((last < pd.Series(lo, index=names)) | (last > pd.Series(hi, index=names))).any(axis=1)
    assert out.any()  # the file really holds out-of-spec bars


def test_schema_file_rows_are_checked_against_the_process(tmp_path, st, small_history):
    _, df = small_history
    bad = df.head(6).copy()
    bad.loc[0, "step"] = 99
    bad.loc[1, "factory"] = "FB1"
    bad.loc[2, "partner"] = "B"
    bad.loc[3, "variable"] = "hardness"
    bad.loc[4, "kind"] = "guess"
    f = tmp_path / "bad.parquet"
    bad.to_parquet(f)
    res = ingest(f, store=st, process="small", quarantine=tmp_path / "q.csv")
    assert reasons(res)[:5] == [
        (1, "step", "unknown step 99: process 'small-chromed-rod' has steps 1..12"),
        (2, "factory", f"factory 'FB1' does not run step {bad.step[1]} ({df.factory[1]} does)"),
        (3, "partner", f"partner 'B' does not own step {bad.step[2]} ({df.partner[2]} does)"),
        (4, "variable", "unknown characteristic 'hardness' for process 'small-chromed-rod'")
        if bad.kind[3] == "measurement" else
        (4, "variable", "unknown lever 'hardness' for process 'small-chromed-rod'"),
        (5, "kind", "kind 'guess' is not one of measurement, lever, event, context"),
    ]
    assert (res.accepted, res.rejected) == (1, 5)
    not_schema = tmp_path / "other.csv"
    not_schema.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(IngestError, match=r"not in the step-data schema: missing column\(s\) "
                                          r"\['batch_id'"):
        ingest(not_schema, store=st, process="small")


def test_mapping_errors_name_file_and_entry(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text('[mapping]\nprocess = "small"\npartner = "B"\n[ids]\nbatch = 1\n'
                 '[[columns]]\ncolumn = 2\nvariable = "diameter"\nstep = 3\nunit = "mm"\n', encoding="utf-8")
    with pytest.raises(MappingError) as e:
        load_mapping(m)
    assert str(e.value) == (f"{m}: columns[0]: step 3 (inspection after drawing) is run by "
                            "partner 'A', not 'B'")
    m.write_text('[mapping]\nprocess = "small"\npartner = "A"\n[ids]\npart = 1\npattern = "(\\\\d+)"\n'
                 '[[columns]]\ncolumn = 2\nvariable = "diameter"\nstep = 3\nunit = "mm"\n', encoding="utf-8")
    with pytest.raises(MappingError) as e:
        load_mapping(m)
    assert str(e.value) == (f"{m}: [ids]: pattern needs the named group (?P<batch>...) and "
                            "optionally (?P<bar>...), no others")
