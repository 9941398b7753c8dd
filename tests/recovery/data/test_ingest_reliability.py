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
