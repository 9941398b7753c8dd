"""The CLI's one history reader (recovery.commands._common.read_history)."""

import pandas as pd
import pytest

from recovery.cli import UserError
from recovery.commands._common import read_history
from simulators import load_process
from simulators.process import Simulator


@pytest.fixture(scope="module")
def two_batches():
    return Simulator("small").simulate(2, 7).observations


def test_parquet_file_folder_and_csv_read_the_same_rows(two_batches, tmp_path):
    f = tmp_path / "h.parquet"
    two_batches.to_parquet(f, index=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    two_batches.to_parquet(folder / "part-0.parquet", index=False)
    csv = tmp_path / "h.csv"
    two_batches.to_csv(csv, index=False)
    p = load_process("small")
    ref = read_history(f, check=True, process=p)
    pd.testing.assert_frame_equal(read_history(folder, check=True, process=p), ref)
    pd.testing.assert_frame_equal(read_history(csv, check=True, process=p, csv=True), ref)
    with pytest.raises(UserError, match="cannot read as Parquet"):   # CSV only where a command takes it
        read_history(csv)


def test_one_batch_is_cut_out_and_a_missing_one_named(two_batches, tmp_path):
    f = tmp_path / "h.parquet"
    two_batches.to_parquet(f, index=False)
    first, second = pd.unique(two_batches["batch_id"].astype(str))
    rows = read_history(f, batch=second)
    assert set(rows["batch_id"].astype(str)) == {second}
    assert len(rows) == (two_batches["batch_id"].astype(str) == second).sum()
    with pytest.raises(UserError, match=r"batch 'nope' is not in .*h.parquet \(2 batches there\)"):
        read_history(f, batch="nope")


def test_bad_inputs_name_the_file_and_the_reason(two_batches, tmp_path):
    with pytest.raises(UserError, match="missing.parquet: no such file or folder"):
        read_history(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(UserError, match="junk.parquet: cannot read as Parquet"):
        read_history(junk)
    empty = tmp_path / "empty.parquet"
    two_batches.iloc[:0].to_parquet(empty, index=False)
    with pytest.raises(UserError, match="empty.parquet: no step data"):
        read_history(empty)
    other = tmp_path / "other.parquet"
    two_batches.to_parquet(other, index=False)
    with pytest.raises(UserError, match="other.parquet does not match the process"):
        read_history(other, check=True, process=load_process("default"))
    broken = two_batches.drop(columns=["value"])
    bad = tmp_path / "bad.parquet"
    broken.to_parquet(bad, index=False)
    with pytest.raises(UserError, match="bad.parquet: not step data in the schema"):
        read_history(bad, check=True)
