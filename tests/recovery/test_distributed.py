"""Campaigns on Dask give the same result on any number of workers, even when one dies."""

import os
import signal

import pandas as pd
import pytest

from recovery.distributed import cluster_client, ordered_map, simulate_on_client
from simulators.campaign import (TRUTH_PARTS, chunk_output, n_chunks, part_name, read_campaign,
                                 simulate_to_files, write_campaign)
from simulators.definition import load_process

N = 5000  # five chunks of the default process


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process campaign as one file set and as a folder set: (summary, file dir, folder dir)."""
    d = tmp_path_factory.mktemp("ref")
    summary = simulate_to_files(load_process(), N, 21, d / "obs.parquet", truth=d / "truth.parquet",
                                progress=False)
    in_folders = simulate_to_files(load_process(), N, 21, d / "obs", truth=d / "truth", progress=False)
    assert in_folders == summary
    return summary, d


def _read(d):
    return [pd.read_parquet(d / f) for f in ("obs.parquet", "truth.parquet", "truth.latent.parquet",
                                             "truth.outcome.parquet")]


def _read_folders(d):
    return [read_campaign(d / f) for f in ("obs", "truth/faults", "truth/latent", "truth/outcome")]


def _kill_one_worker_after_the_first(client, results, killed):
    for i, o in enumerate(results):
        if i == 0:
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        yield o


def test_in_process_folder_equals_the_file(reference):
    _, d = reference
    for a, b in zip(_read(d), _read_folders(d)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert sorted(p.name for p in (d / "obs").iterdir()) == [part_name(c) for c in range(n_chunks(N))]


def test_a_killed_worker_loses_no_chunk_and_counts_none_twice(reference, tmp_path):
    summary_ref, ref_dir = reference
    process = load_process()
    killed = []
    with cluster_client("local:2") as client:
        outputs = ordered_map(client, chunk_output, n_chunks(N), process, N, 21, window=4)
        summary = write_campaign(process, N, _kill_one_worker_after_the_first(client, outputs, killed),
                                 tmp_path / "obs.parquet", truth=tmp_path / "truth.parquet")
    assert killed
    assert summary == summary_ref
    for a, b in zip(_read(ref_dir), _read(tmp_path)):
        pd.testing.assert_frame_equal(a, b)


def test_a_killed_worker_leaves_one_part_per_chunk_in_folders(reference, tmp_path):
    summary_ref, ref_dir = reference
    process = load_process()
    out, truth = tmp_path / "obs", tmp_path / "truth"
    killed = []
    with cluster_client("local:2") as client:
        summary = simulate_on_client(
            client, process, N, 21, out, truth=truth,
            progress=lambda counts, n: _kill_one_worker_after_the_first(client, counts, killed))
    assert killed
    assert summary == summary_ref
    names = [part_name(c) for c in range(n_chunks(N))]
    for d in [out] + [truth / k for k in TRUTH_PARTS]:
        assert sorted(p.name for p in d.iterdir()) == names  # no duplicates, no temporary files
    for a, b in zip(_read_folders(ref_dir), _read_folders(tmp_path)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_cluster_spec_errors():
    with pytest.raises(ValueError, match="needs a whole number"):
        with cluster_client("local:two"):
            pass
    with pytest.raises(ValueError, match="N >= 1"):
        with cluster_client("local:0"):
            pass


def test_evaluation_figures_do_not_depend_on_the_worker_count(capsys):
    import json

    from recovery.cli import main

    def run(extra):
        assert main(["evaluate", "--batches", "520", "--seed", "5", "--agents", "heuristic,none",
                     "--process", "small", "--json", "--quiet"] + extra) == 0
        r = json.loads(capsys.readouterr().out)
        for a in r["agents"].values():  # wall-clock latencies differ, nothing else may
            a.pop("latency_p50_s"), a.pop("latency_p95_s")
        return r

    here, one, two = run([]), run(["--cluster", "local:1"]), run(["--cluster", "local:2"])
    assert here == one == two
    assert here["n_flagged"] > 0
