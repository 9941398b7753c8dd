"""Campaign tables: the Arrow tables built from the kernel's arrays equal the frames they replace."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from simulators.campaign import (_faults_frame, _latent_frame, _outcome_frame, chunk_output,
                                 simulate_chunk)
from simulators.definition import load_process
from simulators.process import Simulator
from simulators.schema import observations_frame, observations_table


def _same(table, frame):
    want = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.equals(want.schema, check_metadata=True)
    assert table.equals(want)
    pd.testing.assert_frame_equal(table.to_pandas(), frame.reset_index(drop=True))


@pytest.mark.parametrize("upto_step", [None, 1, 7])
def test_observations_table_equals_the_frame(upto_step):
    sim = Simulator("small")
    # 12 batches: ids B-1..B-12 sort as strings (B-10 before B-2), as the frame sorts them
    res = sim.simulate(12, seed=4, explore=0.5)
    _same(observations_table(sim.process, res.conditions, res.obs, res.plan, upto_step=upto_step),
          observations_frame(sim.process, res.conditions, res.obs, res.plan, upto_step=upto_step))


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
