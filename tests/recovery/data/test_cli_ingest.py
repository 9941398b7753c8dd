"""``recovery ingest`` and ``recovery quality``: exit codes, summary, the --json contract."""

import json

import pytest

from recovery.cli import main

from .conftest import REPO, cip_dir


@pytest.fixture
def files(tmp_path, small_history):
    path, df = small_history
    bad = df.copy()
    m = bad.index[bad["kind"] == "measurement"][:3]
    bad.loc[m, "value"] = [float("nan"), 1e9, -1e9]
    bad_path = tmp_path / "bad.parquet"
    bad.to_parquet(bad_path)
    return path, bad_path, df, m


def test_clean_file_exits_0_with_a_summary(tmp_path, files, capsys):
    good, _, df, _ = files
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    assert main(["ingest", str(good), "--process", "small", "--store", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"rows         {len(df)}" in out and f"accepted     {len(df)}" in out
    assert "rejected     0" in out and "quarantine" not in out


def test_rejects_exit_1_unless_allowed_and_json_contract(tmp_path, files, capsys):
    _, bad, df, m = files
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    q = tmp_path / "q.csv"
    rc = main(["ingest", str(bad), "--process", "small", "--store", url, "--json",
               "--quarantine", str(q)])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accepted", "rejected", "duplicates", "quarantine", "reasons"}
    assert (out["accepted"], out["rejected"], out["duplicates"]) == (len(df) - 3, 3, 0)
    assert out["quarantine"] == str(q.resolve()) and q.exists()
    assert [set(r) for r in out["reasons"]] == [{"row", "column", "reason"}] * 3
    assert [r["row"] for r in out["reasons"]] == [int(i) + 1 for i in m]
    assert out["reasons"][0] == {"row": int(m[0]) + 1, "column": "value",
                                 "reason": "value is missing"}
    assert out["reasons"][1]["reason"].startswith("value 1000000000 mm is outside the plausible range")
    rc = main(["ingest", str(bad), "--process", "small", "--store", url, "--json",
               "--quarantine", str(tmp_path / "q2.csv"), "--allow-rejects"])
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, len(df) - 3, 3)


def test_unreadable_file_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECOVERY_STORE", f"duckdb://{tmp_path / 's.duckdb'}")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["ingest", str(empty)]) == 2
    assert capsys.readouterr().err.strip() == f"recovery ingest: error: {empty}: the file is empty"
    assert main(["ingest", str(empty), "--mapping", "m.toml", "--process", "small"]) == 2
    assert "--process is for schema files" in capsys.readouterr().err
    missing = tmp_path / "nope.toml"
    assert main(["ingest", str(empty), "--mapping", str(missing)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{missing}: no such mapping file")


def test_readme_commands_on_the_real_data(tmp_path, capsys):
    data = cip_dir()
    url = f"duckdb://{tmp_path / 'cip.duckdb'}"
    for stem, name in [("sawing", "sawing"), ("cylinder_bottom", "cylinder_bottom"),
                       ("piston_rods", "piston_rods")]:
        rc = main(["ingest", str(data / f"quality_data_{stem}.csv"), "--mapping",
                   str(REPO / "examples" / "cip_dmd" / f"{name}.toml"), "--store", url,
                   "--quarantine", str(tmp_path / f"{name}.csv"), "--allow-rejects", "--quiet"])
        assert rc == 0
    capsys.readouterr()
    assert main(["quality", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "coaxiality" in text and "out of spec: 82 measurement(s) on 81 part(s)" in text
    assert "step 2 -> step 4: 253 linked part(s); 731 of 984 parent part(s) have no later record" in text
    assert main(["quality", "--store", url, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) == {"process", "capability", "out_of_spec", "links", "relations"}
    cox = next(c for c in rep["capability"] if c["variable"] == "coaxiality")
    assert cox["out_of_spec"] == 76 and round(cox["ppk"], 2) == 0.34 and cox["cpk"] is not None
