"""Crash consistency: ``recovery ingest`` killed with SIGKILL at random points (issue 16).

The ingest runs as a subprocess and is killed (seeded delays after its
temporary quarantine file appears, i.e. inside its transaction, or later).
After every kill the store holds all of the file's accepted rows or none, with
consistent provenance; the next run completes, stores exactly the accepted
rows, and leaves no temporary quarantine file behind.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from recovery.data.ingest import ingest
from recovery.data.store import open_store

from .conftest import REPO

KILLS = 3


def _start(args, env):
    return subprocess.Popen([sys.executable, "-m", "recovery.cli", "ingest", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


def _partials(folder):
    return sorted(p.name for p in folder.glob("*.partial"))


def test_sigkill_at_random_points_leaves_all_or_nothing(tmp_path):
    from simulators.process import Simulator

    df = Simulator("small").simulate(30, seed=16, explore=1.0).observations
    df = df.assign(timestamp=df["timestamp"].map(lambda t: t.isoformat()))
    df["value"] = df["value"].astype(object)
    df.loc[df.index[::97], "value"] = "abc"          # some rejects, so a quarantine file is written
    src = tmp_path / "history.csv"
    df.to_csv(src, index=False)

    with open_store(f"duckdb://{tmp_path / 'reference.duckdb'}") as st:
        ref = ingest(src, store=st, process="small", quarantine=tmp_path / "ref.csv")
        ref_steps = st.read_steps()
    assert ref.rejected > 0 and ref.accepted > 0

    qdir = tmp_path / "quarantine"
    qdir.mkdir()
    url = f"duckdb://{tmp_path / 'store.duckdb'}"
    args = [str(src), "--process", "small", "--store", url, "--quarantine", str(qdir / "q.csv"),
            "--chunk-rows", "20", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(16)
    outcomes = []
    for delay in rng.uniform(0.0, 0.3, size=KILLS):
        proc = _start(args, env)
        # wait until the ingest is inside its transaction (its temporary quarantine file
        # exists), or over; a kill point is a delay from then
        while proc.poll() is None and not _partials(qdir):
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcomes.append(proc.returncode)
        with open_store(url) as st:
            ing, obs = st.ingests(), st.read_steps()
        # all of the file's accepted rows, or none, and provenance that agrees
        assert len(ing) in (0, 1)
        if len(ing):
            row = ing.iloc[0]
            assert (row["source_rows"], row["accepted"], row["rejected"]) == (ref.rows, ref.accepted,
                                                                              ref.rejected)
            assert len(obs) == ref.stored
            assert row["quarantine_path"] == str((qdir / "q.csv").resolve())
            assert (qdir / "q.csv").exists()
            break                                     # done: the remaining kills would hit a re-run
        assert len(obs) == 0
    # the next run completes and stores exactly the accepted rows; no partial file is left
    done = subprocess.run([sys.executable, "-m", "recovery.cli", "ingest", *args], env=env,
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1, done.stderr            # rows were rejected: exit 1
    with open_store(url) as st:
        ing, obs = st.ingests(), st.read_steps()
    assert ing["accepted"].sum() == ref.accepted and len(obs) == ref.stored
    pd.testing.assert_frame_equal(obs.reset_index(drop=True), ref_steps.reset_index(drop=True))
    assert _partials(qdir) == []
    q = pd.read_csv(qdir / "q.csv")
    assert len(q) == ref.rejected
    assert any(rc == -signal.SIGKILL for rc in outcomes)
