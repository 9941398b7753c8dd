"""Simulation campaigns: many batches in seeded chunks, written to Parquet.

Batches are simulated in chunks of ``CHUNK`` with seeds spawned from the
campaign seed, so the result does not depend on how the work is split or on
how many workers run it. ``chunk_output`` is the unit of work (a worker can
run it anywhere); ``write_campaign`` consumes chunk outputs in chunk order and
streams them into Parquet files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from simulators.definition import Process
from simulators.process import Simulator

__all__ = ["CHUNK", "ChunkOutput", "simulate_chunk", "chunk_output", "n_chunks", "write_campaign",
           "simulate_to_files"]

CHUNK = 1000


def n_chunks(n_batches: int) -> int:
    return (n_batches + CHUNK - 1) // CHUNK


def simulate_chunk(process: Process, n_total: int, chunk: int, seed: int, *, explore: float = 0.2,
                   faults: bool = True):
    """Simulate chunk number ``chunk`` of a campaign of ``n_total`` batches."""
    sim = Simulator(process)
    start = chunk * CHUNK
    n = min(CHUNK, n_total - start)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(chunk + 1)[chunk])
    time = np.arange(start, start + n) * process.season_days / max(n_total, 1)
    cond = sim.sample_conditions(n, rng, time=time, faults=faults, first_id=start + 1)
    return sim.simulate(n, rng, conditions=cond, record_latent=True,
                        plan=sim.exploration_plans(n, explore, rng))


@dataclass(frozen=True)
class ChunkOutput:
    """What one chunk contributes: the frames to write and the counts to add up."""

    chunk: int
    observations: pd.DataFrame
    faults: pd.DataFrame
    latent: pd.DataFrame
    outcome: pd.DataFrame
    fault_counts: dict
    faulty: int
    flagged: np.ndarray
    accepted: int


def _latent_frame(res) -> pd.DataFrame:
    p = res.process
    nb, ns1, nc = res.latent.shape
    return pd.DataFrame({
        "batch_id": np.repeat(res.conditions.batch_ids.astype(str), ns1 * nc),
        "step": np.tile(np.repeat(np.arange(ns1), nc), nb),
        "variable": np.tile([c.name for c in p.characteristics], nb * ns1),
        "value": res.latent.reshape(-1),
    })


def chunk_output(process: Process, n_total: int, seed: int, *, chunk: int, explore: float = 0.2,
                 faults: bool = True, truth: bool = True) -> ChunkOutput:
    """Simulate one chunk and turn it into frames (runs in-process or on a worker)."""
    res = simulate_chunk(process, n_total, chunk, seed, explore=explore, faults=faults)
    ff = res.faults_frame().astype({"batch_id": "string", "fault": "string"})
    return ChunkOutput(
        chunk=chunk,
        observations=res.observations,
        faults=ff,
        latent=_latent_frame(res) if truth else pd.DataFrame(),
        outcome=pd.DataFrame({"batch_id": res.conditions.batch_ids.astype(str),
                              "in_spec_fraction": res.in_spec, "accepted": res.accepted}),
        fault_counts={str(k): int(v) for k, v in ff["fault"].value_counts().items()},
        faulty=int(res.conditions.occurred.any(axis=1).sum()),
        flagged=res.flags.sum(axis=0),
        accepted=int(res.accepted.sum()),
    )


def write_campaign(process: Process, n_batches: int, outputs: Iterable[ChunkOutput], out: Path, *,
                   truth: Path | None = None) -> dict:
    """Stream chunk outputs (in chunk order) into Parquet files and sum the counts.

    The observed file never contains ground truth. With ``truth``, three files
    are written: ``truth`` (one row per injected fault: batch_id, step, fault,
    magnitude), ``<truth>.latent.parquet`` (true batch-mean state after every
    step; step 0 is before the first step) and ``<truth>.outcome.parquet``
    (share of bars in spec and acceptance under the levers used).

    Returns a summary dict for printing.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers: dict[str, pq.ParquetWriter] = {}
    fault_counts: dict[str, int] = {f.name: 0 for f in process.faults}
    flagged = np.zeros(len(process.inspections))
    accepted = faulty = rows = 0
    paths = {"obs": out}
    if truth:
        stem = truth.with_suffix("")
        paths |= {"faults": truth, "latent": Path(f"{stem}.latent.parquet"),
                  "outcome": Path(f"{stem}.outcome.parquet")}

    def write(key: str, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if key not in writers:
            writers[key] = pq.ParquetWriter(paths[key], table.schema)
        writers[key].write_table(table)

    expected = 0
    try:
        for o in outputs:
            if o.chunk != expected:
                raise RuntimeError(f"chunk {o.chunk} arrived where chunk {expected} was expected")
            expected += 1
            rows += len(o.observations)
            write("obs", o.observations)
            for name, n in o.fault_counts.items():
                fault_counts[name] += n
            faulty += o.faulty
            flagged += o.flagged
            accepted += o.accepted
            if truth:
                if len(o.faults):
                    write("faults", o.faults)
                write("latent", o.latent)
                write("outcome", o.outcome)
    finally:
        for w in writers.values():
            w.close()
    if truth and "faults" not in writers:  # no faults at all: still write an empty table
        pd.DataFrame({"batch_id": pd.Series(dtype="string"), "step": pd.Series(dtype="int64"),
                      "fault": pd.Series(dtype="string"), "magnitude": pd.Series(dtype="float64")}
                     ).to_parquet(truth, index=False)
    return {
        "batches": n_batches, "rows": rows, "faults": fault_counts,
        "faults_total": sum(fault_counts.values()), "faulty_batches": faulty,
        "flagged": {ins.step: float(flagged[q] / n_batches) for q, ins in enumerate(process.inspections)},
        "accepted": accepted / n_batches,
    }


def simulate_to_files(process: Process, n_batches: int, seed: int, out: Path, *,
                      truth: Path | None = None, explore: float = 0.2, faults: bool = True,
                      progress: bool = True) -> dict:
    """Simulate a campaign in this process and write it (see :func:`write_campaign`)."""
    from tqdm import tqdm

    n = n_chunks(n_batches)
    outputs = (chunk_output(process, n_batches, seed, chunk=c, explore=explore, faults=faults,
                            truth=truth is not None)
               for c in tqdm(range(n), desc="simulate", unit="chunk", disable=not progress or n < 2))
    return write_campaign(process, n_batches, outputs, out, truth=truth)
