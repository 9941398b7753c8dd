"""``recovery simulate`` end to end: files, summary, ground truth apart, clear errors."""

import re

import pandas as pd
import pytest

from recovery.cli import main
from simulators.definition import load_process
from simulators.schema import validate


def test_simulate_writes_data_and_truth_apart(tmp_path, capsys):
    out, truth = tmp_path / "obs.parquet", tmp_path / "truth.parquet"
    rc = main(["simulate", "--batches", "40", "--seed", "3", "--out", str(out), "--truth", str(truth),
               "--process", "small", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "batches      40" in text and "flagged at each inspection" in text
    obs = pd.read_parquet(out)
    validate(obs, load_process("small"))
    faults = pd.read_parquet(truth)
    assert list(faults.columns) == ["batch_id", "step", "fault", "magnitude"]
    assert len(faults) > 0 and set(faults["fault"]) <= {f.name for f in load_process("small").faults}
    latent = pd.read_parquet(tmp_path / "truth.latent.parquet")
    assert set(latent["step"]) == set(range(13))
    outcome = pd.read_parquet(tmp_path / "truth.outcome.parquet")
    assert len(outcome) == 40 and outcome["accepted"].dtype == bool
    assert not set(obs["variable"]) & set(faults["fault"])


def test_simulate_is_deterministic(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for f in (a, b):
        assert main(["simulate", "--batches", "12", "--seed", "8", "--out", str(f), "--quiet"]) == 0
    assert pd.read_parquet(a).equals(pd.read_parquet(b))


def test_campaign_does_not_depend_on_chunking(tmp_path, monkeypatch):
    import simulators.campaign as campaign

    monkeypatch.setattr(campaign, "CHUNK", 1000)
    one = campaign.simulate_chunk(load_process("small"), 30, 0, seed=4)
    # the first batches of a campaign are the same whatever its total size
    two = campaign.simulate_chunk(load_process("small"), 30, 0, seed=4)
    assert (one.state == two.state).all()


@pytest.mark.parametrize("argv,message", [
    (["--batches", "0"], "expected a number >= 1"),
    (["--batches", "ten"], "expected a whole number"),
    (["--batches", "5", "--seed", "-1"], "a seed must be >= 0"),
])
def test_bad_arguments_are_explained(tmp_path, capsys, argv, message):
    args = ["simulate", "--seed", "1", "--out", str(tmp_path / "x.parquet")] + argv
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_invalid_process_file_names_the_entry(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    from importlib import resources
    text = resources.files("simulators.processes").joinpath("small.toml").read_text()
    bad.write_text(text.replace('kind = "quench"', 'kind = "quenchh"'))
    rc = main(["simulate", "--batches", "2", "--seed", "1", "--out", str(tmp_path / "o.parquet"),
               "--process", str(bad)])
    assert rc == 2
    assert "steps[4] (step 5): unknown kind 'quenchh'" in capsys.readouterr().err


def test_output_must_be_parquet_in_an_existing_dir(tmp_path, capsys):
    assert main(["simulate", "--batches", "2", "--seed", "1", "--out", str(tmp_path / "o.csv")]) == 2
    assert main(["simulate", "--batches", "2", "--seed", "1", "--out", str(tmp_path / "no" / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "expected a .parquet file name" in err and "does not exist" in err


# --- dataset folders: one part per chunk, written by whoever simulated it -----------------

SMALL = ["--batches", "2500", "--seed", "6", "--process", "small", "--quiet"]  # three chunks
TABLES = [("obs.parquet", "obs"), ("truth.parquet", "truth/faults"),
          ("truth.latent.parquet", "truth/latent"), ("truth.outcome.parquet", "truth/outcome")]


def _simulate(out, truth, extra=()):
    """Run ``recovery simulate`` and return its summary lines, without the lines naming paths."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["simulate", *SMALL, "--out", str(out), "--truth", str(truth), *extra]) == 0
    text = buf.getvalue()
    rows = re.search(r"\((\d+) rows written to ", text).group(1)
    return [rows] + [x for x in text.splitlines() if not x.startswith(("batches", "truth"))]


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("file")
    return _simulate(d / "obs.parquet", d / "truth.parquet"), d


@pytest.mark.parametrize("cluster", [[], ["--cluster", "local:1"], ["--cluster", "local:2"]],
                         ids=["in-process", "local:1", "local:2"])
def test_folder_output_equals_the_single_file(single_file, tmp_path, cluster):
    from simulators.campaign import read_campaign

    summary_ref, ref = single_file
    assert _simulate(tmp_path / "obs", tmp_path / "truth", cluster) == summary_ref
    for f, folder in TABLES:
        a, b = pd.read_parquet(ref / f), read_campaign(tmp_path / folder)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [
            "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_stale_parts_of_an_earlier_run_are_removed(tmp_path):
    from simulators.campaign import read_campaign

    out, truth = tmp_path / "obs", tmp_path / "truth"
    for d in (out, truth / "latent"):
        d.mkdir(parents=True)
        (d / "part-00007.parquet").write_bytes(b"stale")
        (d / ".part-00001.0123abcd.tmp").write_bytes(b"half")
    assert main(["simulate", "--batches", "30", "--seed", "2", "--process", "small", "--quiet",
                 "--out", str(out), "--truth", str(truth)]) == 0
    for d in (out, truth / "faults", truth / "latent", truth / "outcome"):
        assert [p.name for p in d.iterdir()] == ["part-00000.parquet"]
    assert main(["simulate", "--batches", "30", "--seed", "2", "--process", "small", "--quiet",
                 "--out", str(tmp_path / "again.parquet")]) == 0
    pd.testing.assert_frame_equal(read_campaign(out), pd.read_parquet(tmp_path / "again.parquet"))


@pytest.mark.parametrize("out,truth,message", [
    ("obs.parquet", "truth", "observed output {d}/obs.parquet is a .parquet file but truth output "
                             "{d}/truth is a folder; give two .parquet files or two folders"),
    ("obs", "truth.parquet", "observed output {d}/obs is a folder but truth output {d}/truth.parquet "
                             "is a .parquet file; give two .parquet files or two folders"),
    ("obs", "obs/truth", "must not contain each other"),
    ("mine", "truth", "{d}/mine: holds other Parquet files (history.parquet)"),
    ("afile", None, "{d}/afile: exists and is not a folder"),
])
def test_outputs_of_mixed_or_unsafe_forms_are_refused(tmp_path, capsys, out, truth, message):
    (tmp_path / "obs").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "history.parquet").write_bytes(b"someone's data")
    (tmp_path / "afile").write_text("x")
    argv = ["simulate", "--batches", "2", "--seed", "1", "--out", str(tmp_path / out)]
    assert main(argv + (["--truth", str(tmp_path / truth)] if truth else [])) == 2
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert (tmp_path / "mine" / "history.parquet").read_bytes() == b"someone's data"
    assert not list(tmp_path.glob("**/part-*.parquet"))


def test_readers_take_a_folder_like_a_file(tmp_path):
    import argparse

    from recovery.cli import UserError
    from recovery.commands.fit import _read
    from recovery.commands.recommend import read_history

    for out in ("obs", "obs.parquet"):
        assert main(["simulate", "--batches", "6", "--seed", "3", "--process", "small", "--quiet",
                     "--out", str(tmp_path / out)]) == 0
    data = _read(argparse.Namespace(data=str(tmp_path / "obs")), None)
    pd.testing.assert_frame_equal(data, pd.read_parquet(tmp_path / "obs.parquet"))
    pd.testing.assert_frame_equal(read_history(str(tmp_path / "obs")),
                                  read_history(str(tmp_path / "obs.parquet")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="the folder holds no .parquet files"):
        _read(argparse.Namespace(data=str(tmp_path / "empty")), None)


def test_parts_are_read_in_chunk_order_past_99999(tmp_path):
    from simulators.campaign import campaign_parts

    for name in ("part-100000.parquet", "part-99999.parquet", "part-00002.parquet",
                 ".part-00003.ab.tmp", "_metadata.parquet"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in campaign_parts(tmp_path)] == [
        "part-00002.parquet", "part-99999.parquet", "part-100000.parquet"]
