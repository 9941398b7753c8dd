"""Ingestion's stages on their own: the fast paths equal the slow ones, the columns are declared.

The fast paths (Arrow's CSV reader, Arrow's number parser, work once per
distinct value) must give exactly what the paths they replace give; these
tests hold them equal on ordinary and awkward input.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recovery.data.ingestion.columns import CANDIDATES, PARSED, StageColumns
from recovery.data.ingestion.distinct import by_distinct, by_distinct_rows, distinct_rows
from recovery.data.ingestion.parsing import _times, _to_float, _whole, split_ids
from recovery.data.ingestion.reading import CsvReader


def _read(path: Path, size: int, *, arrow: bool) -> tuple[pd.DataFrame, np.ndarray]:
    r = CsvReader(path, encoding="utf-8", separator=",", header_line=1, data_line=2)
    chunks = list(r.chunks(size, lambda n: None) if arrow else r._pandas_chunks(size, lambda n: None, 2))
    assert all(len(c.raw) <= size for c in chunks)
    raw = pd.concat([c.raw for c in chunks], ignore_index=True)
    return raw, np.concatenate([c.rows for c in chunks])


GOOD = "a,b,c\n1,x,2.5\n2,y,-3e4\n 3 ,z ,\n4,,7\n,,\n5,w,8\n"
# a blank line, a whitespace-only line and a ragged one: Arrow stops there, pandas goes on
AWKWARD = "a,b,c\n1,x,2.5\n2,y,3\n\n3,z,4\n   \n4,v\n5,w,8\n6,u,9\n"


@pytest.mark.parametrize("text", [GOOD, AWKWARD])
@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_arrow_reader_gives_the_pandas_readers_cells_and_line_numbers(tmp_path, text, size):
    f = tmp_path / "f.csv"
    f.write_text(text, encoding="utf-8")
    r = CsvReader(f, encoding="utf-8", separator=",", header_line=1, data_line=2)
    assert r._plain()
    raw_a, rows_a = _read(f, size, arrow=True)
    raw_p, rows_p = _read(f, size, arrow=False)
    pd.testing.assert_frame_equal(raw_a, raw_p)
    assert rows_a.tolist() == rows_p.tolist()
    if text is AWKWARD:  # the blank and the whitespace lines (4 and 6) are no rows
        assert rows_a.tolist() == [2, 3, 5, 7, 8, 9]
        assert raw_a.loc[3, :1].tolist() == ["4", "v"] and raw_a.loc[4, 2] == "8"  # line 7 is short


def test_quoted_or_latin1_files_are_left_to_pandas(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text('a,b\n"1,5",x\n', encoding="utf-8")
    assert not CsvReader(f, encoding="utf-8", separator=",", header_line=1, data_line=2)._plain()
    g = tmp_path / "l.csv"
    g.write_text("a,b\n1,\u00e4\n", encoding="latin-1")
    assert not CsvReader(g, encoding="latin-1", separator=",", header_line=1, data_line=2)._plain()


def test_arrow_numbers_equal_pandas_numbers():
    rng = np.random.default_rng(3)
    vals = rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-12, 12, 5000)
    plain = pd.Series([repr(v) for v in vals] + ["1", "-0", "+2.", ".5", "1E5", None], dtype="string")
    got = _to_float(plain)
    want = pd.to_numeric(plain, errors="coerce").astype("float64")
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    # anything not plain goes to pandas, whose answers stay
    odd = pd.Series(["1", "inf", "abc", "0x10", "1_000", "nan", None], dtype="string")
    np.testing.assert_array_equal(_to_float(odd).to_numpy(),
                                  pd.to_numeric(odd, errors="coerce").astype("float64").to_numpy())


def test_work_once_per_distinct_value_equals_work_on_every_row():
    rng = np.random.default_rng(0)
    n = 500
    steps = pd.Series(rng.choice(["1", "2", " 3", "x", "2.0", None, "1e3"], n), dtype="string")
    pd.testing.assert_series_equal(by_distinct(steps, _whole), _whole(steps))
    ids = pd.Series(rng.choice(["100101", "100102", "7", None], n), dtype="string")
    import re

    pat = re.compile(r"^(?P<batch>\d{4})(?P<bar>\d{2})$")
    for got, want in zip(by_distinct(ids, lambda s: split_ids(s, pat)), split_ids(ids, pat)):
        pd.testing.assert_series_equal(got, want)
    ts = pd.Series(rng.choice(["2026-03-01T08:00:00", "2026-03-29T02:30:00", "bad", None], n),
                   dtype="string")
    for got, want in zip(by_distinct(ts, lambda s: _times(s, "ISO8601", "Europe/Berlin")),
                         _times(ts, "ISO8601", "Europe/Berlin")):
        pd.testing.assert_series_equal(got, want)
    frame = pd.DataFrame({"a": steps, "b": ids})
    f = (lambda d: pd.DataFrame({"s": d["a"].str.len() * 10 + d["b"].str.len().fillna(-1),
                                 "t": d["a"].fillna("?") + d["b"].fillna("?")}, index=d.index))
    pd.testing.assert_frame_equal(by_distinct_rows(frame, f), f(frame))


def test_distinct_rows_numbers_combinations_and_finds_their_first_row():
    a = pd.Series(["x", "y", "x", None, "x", None])
    b = pd.Series([1, 1, 1, 2, 2, 2])
    codes, first = distinct_rows([a, b])
    assert codes.tolist() == [0, 1, 0, 2, 3, 2]
    assert first.tolist() == [0, 1, 3, 4]


def test_a_stage_with_an_undeclared_or_missing_column_fails_loudly():
    stage = StageColumns("demo", {"x": "a column"})
    ok = pd.DataFrame({"x": [1]})
    assert stage.expect(ok, genealogy=False) is ok
    with pytest.raises(RuntimeError, match=r"undeclared column\(s\) \['y'\]"):
        stage.expect(ok.assign(y=2), genealogy=False)
    with pytest.raises(RuntimeError, match=r"missing column\(s\) \['x'\]"):
        stage.expect(pd.DataFrame({}), genealogy=False)
    # the declarations do not overlap: each column has one stage that adds it
    assert not set(CANDIDATES.columns) & set(PARSED.columns)


def test_a_chunk_whose_timestamps_are_all_missing_is_not_cut_short():
    # found by the slow fuzz (seed 16): every timestamp cell of a chunk empty used to
    # raise IndexError instead of rejecting the rows for their missing timestamp
    from recovery.data.ingestion.parsing import _cut_short

    empty = pd.Series([pd.NA, pd.NA, pd.NA], dtype="string")
    assert _cut_short(empty, "%Y-%m-%d %H:%M:%S").tolist() == [False, False, False]
    assert _cut_short(empty, "ISO8601").tolist() == [False, False, False]


def test_partner_file_without_any_timestamp_is_rejected_row_by_row(tmp_path):
    from recovery.data.ingest import ingest
    from recovery.data.store import open_store

    m = tmp_path / "m.toml"
    m.write_text('[mapping]\nprocess = "small"\npartner = "A"\n[ids]\nbatch = "b"\nbar = "bar"\n'
                 '[timestamp]\ncolumn = "t"\nformat = "%Y-%m-%d %H:%M:%S"\ntimezone = "Europe/Berlin"\n'
                 '[[columns]]\ncolumn = "d"\nvariable = "diameter"\nstep = 3\nunit = "mm"\n', encoding="utf-8")
    f = tmp_path / "f.csv"
    f.write_text("b,bar,t,d\nR-1,0,,16.0\nR-2,0,,16.0\n", encoding="utf-8")
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(f, store=st, mapping=m, quarantine=tmp_path / "q.csv", chunk_rows=1)
    assert (r.rows, r.accepted, r.rejected) == (2, 0, 2)
    assert [(x.row, x.column, x.reason) for x in r.reasons] == [(2, "t", "timestamp is missing"),
                                                                (3, "t", "timestamp is missing")]
