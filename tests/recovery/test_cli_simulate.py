"""``recovery simulate`` end to end: files, summary, ground truth apart, clear errors."""

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
