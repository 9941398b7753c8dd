"""Campaign tables: the Arrow tables built from the kernel's arrays equal the frames they replace."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from simulators.campaign import (_faults_frame, _latent_frame, _outcome_frame, chunk_output,
                                 simulate_chunk)
from simulators.definition import load_process
from simulators.process import Simulator
from simulators.schema import observations_frame, observations_table, plain_table


def _same(table, frame):
    table = plain_table(table)  # chunk tables hold their strings as dictionary arrays
    want = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.equals(want.schema, check_metadata=True)
    assert table.equals(want)
    pd.testing.assert_frame_equal(table.to_pandas(), frame.reset_index(drop=True))


@pytest.mark.parametrize("process", ["small", "default"])
@pytest.mark.parametrize("upto_step", [None, 1, 7])
def test_observations_table_equals_the_frame(upto_step, process):
    sim = Simulator(process)
    # 12 batches: ids B-1..B-12 sort as strings (B-10 before B-2), as the frame sorts them
    res = sim.simulate(12, seed=4, explore=0.5)
    frame = observations_frame(sim.process, res.conditions, res.obs, res.plan, upto_step=upto_step)
    _same(observations_table(sim.process, res.conditions, res.obs, res.plan, upto_step=upto_step), frame)
    coded = observations_table(sim.process, res.conditions, res.obs, res.plan, upto_step=upto_step,
                               dictionary=True)
    assert pa.types.is_dictionary(coded.schema.field("batch_id").type)
    _same(coded, frame)


@pytest.mark.parametrize("faults", [True, False])
def test_chunk_tables_equal_the_frames(faults):
    process = load_process("small")
    out = chunk_output(process, 1300, 8, chunk=1, faults=faults)
    res = simulate_chunk(process, 1300, 1, 8, faults=faults)
    ff = _faults_frame(res)
    assert (len(ff) > 0) == faults
    _same(out.observations, res.observations)
    _same(out.faults, ff)
    _same(out.latent, _latent_frame(res))
    _same(out.outcome, _outcome_frame(res))
    assert out.fault_counts == {str(k): int(v) for k, v in ff["fault"].value_counts().items()}
    assert out.counts().rows == len(res.observations)
    assert chunk_output(process, 1300, 8, chunk=1, faults=faults, truth=False).latent is None


def _old_part(table, path):
    """A part as written before dictionary columns: the plain table, strings dictionary-encoded by pyarrow."""
    import pyarrow.parquet as pq

    plain = plain_table(table)
    pq.write_table(plain, path, use_dictionary=[f.name for f in plain.schema if pa.types.is_large_string(f.type)
                                                or pa.types.is_string(f.type)])


def _stats(path):
    import pyarrow.parquet as pq

    md = pq.read_metadata(path)
    out = []
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            s = md.row_group(g).column(c).statistics
            out.append((s.has_min_max, s.min, s.max, s.null_count) if s is not None else None)
    return out


@pytest.mark.parametrize("faults", [True, False])
def test_parts_written_from_dictionary_columns_read_back_as_before(tmp_path, faults):
    import pyarrow.parquet as pq

    from simulators.campaign import write_table

    out = chunk_output(load_process(), 1300, 8, chunk=1, faults=faults)
    for key in ("observations", "faults", "latent", "outcome"):
        table = getattr(out, key)
        new, old = tmp_path / f"{key}.new.parquet", tmp_path / f"{key}.old.parquet"
        write_table(table, new)
        _old_part(table, old)
        a, b = pq.read_table(new), pq.read_table(old)
        assert a.schema.equals(b.schema, check_metadata=True), key
        assert a.equals(b), key
        assert pq.read_metadata(new).metadata == pq.read_metadata(old).metadata, key
        pd.testing.assert_frame_equal(pd.read_parquet(new), pd.read_parquet(old), check_exact=True)
        # readers skip row groups by these: the same min, max and null counts as before
        assert _stats(new) == _stats(old), key
        assert new.stat().st_size <= 1.001 * old.stat().st_size, key   # no unused strings stored


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("form", ["folder", "file"])
def test_writing_behind_gives_the_same_bytes_as_writing_inline(tmp_path, form):
    from simulators.campaign import simulate_to_files

    process = load_process("small")
    runs = {}
    for behind in (True, False):
        d = tmp_path / str(behind)
        d.mkdir()
        out, truth = (d / "obs", d / "truth") if form == "folder" else (d / "obs.parquet", d / "truth.parquet")
        summary = simulate_to_files(process, 2500, 3, out, truth=truth, progress=False, write_behind=behind)
        runs[behind] = (summary, _files(d))
    assert runs[True][0] == runs[False][0]
    assert list(runs[True][1]) == list(runs[False][1])
    assert len(runs[True][1]) == (3 * 4 if form == "folder" else 4)
    assert runs[True][1] == runs[False][1]


def test_an_error_in_the_writer_thread_is_raised_and_stops_the_campaign(tmp_path, monkeypatch):
    import threading

    from simulators import campaign

    real = campaign._write_part
    threads = set()

    def failing(table, final):
        threads.add(threading.current_thread().name)
        if final.name == campaign.part_name(1) and final.parent.name == "obs":
            raise OSError(f"{final}: disk full")
        real(table, final)

    monkeypatch.setattr(campaign, "_write_part", failing)
    with pytest.raises(OSError, match="part-00001.parquet: disk full"):
        campaign.simulate_to_files(load_process("small"), 5000, 3, tmp_path / "obs", truth=tmp_path / "truth",
                                   progress=False)
    assert threads and all(t.startswith("campaign-writer") for t in threads)
    # chunk 0 is in place; chunk 1 failed and left no temporary file; no later chunk was written
    assert sorted(p.name for p in (tmp_path / "obs").iterdir()) == [campaign.part_name(0)]
    assert not any(t.name.startswith("campaign-writer") for t in threading.enumerate())  # thread ended


def test_write_behind_runs_jobs_in_order_off_the_caller_thread_and_raises_their_errors():
    import threading

    from simulators.campaign import WriteBehind

    seen = []
    with WriteBehind(depth=2) as wb:
        for k in range(5):
            wb.submit(lambda k=k: seen.append((k, threading.current_thread() is threading.main_thread())))
    assert seen == [(k, False) for k in range(5)]

    def boom():
        raise ValueError("writer failed")

    with pytest.raises(ValueError, match="writer failed"):  # raised on leaving the block
        with WriteBehind() as wb:
            wb.submit(boom)
    with pytest.raises(ValueError, match="writer failed"):  # or by the next submit
        with WriteBehind() as wb:
            wb.submit(boom)
            wb.submit(seen.append, "never")
    assert "never" not in seen
    inline = []
    with WriteBehind(enabled=False) as wb:
        wb.submit(lambda: inline.append(threading.current_thread() is threading.main_thread()))
    assert inline == [True]
    with pytest.raises(ValueError, match="depth must be >= 1"):
        WriteBehind(depth=0)
