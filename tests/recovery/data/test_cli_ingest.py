"""``recovery ingest`` and ``recovery quality``: exit codes, summary, the --json contract."""

import json

import pytest

from recovery.cli import main

from .conftest import PARTNER_DEMO, REPO, real_cip_dmd_or_skip


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


# lines `recovery quality` prints, coaxiality out of spec and its Ppk, after the README's commands
_README = {
    "demo": (["out of spec: 16 measurement(s) on 16 part(s)",
                    "step 2 -> step 4: 40 linked part(s); 80 of 120 parent part(s) have no later record"],
             14, 0.37),
    "real": (["out of spec: 82 measurement(s) on 81 part(s)",
                    "step 2 -> step 4: 253 linked part(s); 731 of 984 parent part(s) have no later record"],
             76, 0.34),
}


@pytest.mark.parametrize("which", ["demo", "real"])
def test_readme_commands_on_the_partner_files(which, tmp_path, capsys):
    data = PARTNER_DEMO if which == "demo" else real_cip_dmd_or_skip()
    lines, coax_out, coax_ppk = _README[which]
    url = f"duckdb://{tmp_path / 'cip.duckdb'}"
    for name in ("sawing", "cylinder_bottom", "piston_rods"):
        rc = main(["ingest", str(data / f"quality_data_{name}.csv"), "--mapping",
                   str(REPO / "examples" / "cip_dmd" / f"{name}.toml"), "--store", url,
                   "--quarantine", str(tmp_path / f"{name}.csv"), "--allow-rejects", "--quiet"])
        assert rc == 0
    capsys.readouterr()
    assert main(["quality", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "coaxiality" in text
    for line in lines:
        assert line in text
    assert main(["quality", "--store", url, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) == {"process", "capability", "out_of_spec", "links", "relations"}
    cox = next(c for c in rep["capability"] if c["variable"] == "coaxiality")
    assert cox["out_of_spec"] == coax_out and round(cox["ppk"], 2) == coax_ppk and cox["cpk"] is not None


# --- a folder of Parquet parts (recovery simulate --out FOLDER) ---------------------------

@pytest.fixture
def parts(tmp_path, monkeypatch):
    """A simulated dataset folder of the small process in three parts (chunks of 10 batches)."""
    import simulators.campaign as campaign

    monkeypatch.setattr(campaign, "CHUNK", 10)
    folder = tmp_path / "campaign"
    assert main(["simulate", "--batches", "30", "--seed", "4", "--process", "small", "--quiet",
                 "--out", str(folder)]) == 0
    names = [f"part-0000{i}.parquet" for i in range(3)]
    assert sorted(p.name for p in folder.iterdir()) == names
    return folder, [folder / n for n in names]


def test_a_folder_is_ingested_part_by_part(tmp_path, parts, capsys):
    import pandas as pd

    from recovery.data.store import open_store
    from simulators.campaign import read_campaign

    folder, files = parts
    df = read_campaign(folder)
    bad = pd.read_parquet(files[1])
    m = bad.index[bad["kind"] == "measurement"][:2]
    bad.loc[m, "value"] = [float("nan"), 1e9]
    bad.to_parquet(files[1], index=False)
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    capsys.readouterr()
    rc = main(["ingest", str(folder), "--process", "small", "--store", url, "--json",
               "--quarantine", str(tmp_path / "q")])
    assert rc == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accepted", "rejected", "duplicates", "quarantine", "reasons", "files"}
    assert (out["accepted"], out["rejected"], out["duplicates"]) == (len(df) - 2, 2, 0)
    q = tmp_path / "q" / "part-00001.quarantine.csv"
    assert out["quarantine"] == [str(q.resolve())] and q.exists()
    assert [(r["file"], r["row"]) for r in out["reasons"]] == [(str(files[1]), int(i) + 1) for i in m]
    assert [f["file"] for f in out["files"]] == [str(f) for f in files]
    assert [f["rows"] for f in out["files"]] == [len(pd.read_parquet(f)) for f in files]
    assert [f["rejected"] for f in out["files"]] == [0, 2, 0]
    with open_store(url) as st:
        ingests = st.ingests()
        assert list(ingests["source_path"]) == [str(f) for f in files]  # each part its own provenance
        assert ingests["source_sha256"].nunique() == 3
        assert st.counts()["observations"] == len(df) - 2
    rc = main(["ingest", str(folder), "--process", "small", "--store", url, "--allow-rejects",
               "--quarantine", str(tmp_path / "q2"), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "part-00001.parquet" in text and f"duplicates   {len(df) - 2}" in text


def test_a_corrupted_part_is_named_and_the_good_parts_are_stored(tmp_path, parts, capsys):
    import pandas as pd

    from recovery.data.store import open_store

    folder, files = parts
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    capsys.readouterr()
    assert main(["ingest", str(folder), "--process", "small", "--store", url, "--quiet"]) == 2
    cap = capsys.readouterr()
    assert f"recovery ingest: error: {files[1]}: not a readable Parquet file" in cap.err
    assert "part-00001.parquet       not ingested" in cap.out
    with open_store(url) as st:
        assert st.counts()["ingests"] == 2
        good = len(pd.read_parquet(files[0])) + len(pd.read_parquet(files[2]))
        assert st.counts()["observations"] == good


def test_an_empty_folder_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no parquet here")
    assert main(["ingest", str(empty), "--store", f"duckdb://{tmp_path / 's.duckdb'}"]) == 2
    assert capsys.readouterr().err.strip() == (f"recovery ingest: error: {empty}: "
                                               "the folder holds no .parquet files")


# ---- exit statuses (issue 16) -------------------------------------------------------------

def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    out = capsys.readouterr().out
    for line in ["0  every row accepted", "1  some rows rejected", "2  the file, a part of the folder",
                 "3  internal error"]:
        assert line in out


def test_exit_statuses_0_1_2_3(tmp_path, files, monkeypatch, capsys):
    good, bad, _, _ = files
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    base = ["--process", "small", "--store", url, "--quiet", "--quarantine", str(tmp_path / "q.csv")]
    assert main(["ingest", str(good)] + base) == 0
    assert main(["ingest", str(good)] + base) == 0          # all duplicates: nothing rejected
    assert main(["ingest", str(bad)] + base) == 1
    # errors name the file as given, relative, not as an absolute server path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.csv").write_text("")
    capsys.readouterr()
    assert main(["ingest", "empty.csv"] + base) == 2
    assert capsys.readouterr().err.strip() == "recovery ingest: error: empty.csv: the file is empty"

    import recovery.data.ingestion.run as ing

    def boom(*a, **k):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(ing, "_chunk", boom)
    monkeypatch.delenv("RECOVERY_DEBUG", raising=False)
    from recovery.data.store import open_store

    with open_store(url) as st:
        n = len(st.read_steps())
    assert main(["ingest", str(bad)] + base) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("recovery ingest: internal error: RuntimeError: a bug over two lines (at ")
    assert main(["ingest", str(bad)] + base + ["--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("traceback)")
    with open_store(url) as st:                             # the failed ingests stored nothing
        assert len(st.read_steps()) == n


def test_a_dangling_symlink_part_exits_2_naming_it(tmp_path, small_history, capsys):
    path, df = small_history
    folder = tmp_path / "season"
    folder.mkdir()
    (folder / "part-00000.parquet").write_bytes(path.read_bytes())
    (folder / "part-00001.parquet").symlink_to(tmp_path / "gone.parquet")
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    rc = main(["ingest", str(folder), "--process", "small", "--store", url, "--quiet",
               "--quarantine", str(tmp_path / "q")])
    assert rc == 2
    out, err = capsys.readouterr()
    assert "part-00001.parquet" in out and f"rows         {len(df)}" in out
    assert err.strip() == (f"recovery ingest: error: {folder / 'part-00001.parquet'}: is a symbolic "
                           f"link to a missing file ({tmp_path / 'gone.parquet'})")
    from simulators.campaign import read_campaign

    with pytest.raises(FileNotFoundError, match="part-00001.parquet: is a symbolic link to a missing file"):
        read_campaign(folder)


# --- the audit trail: one 'append' entry per stored file, as the service leaves ---------------

def test_each_ingested_file_leaves_an_audit_entry(tmp_path, files, monkeypatch, capsys):
    import hashlib

    import pandas as pd

    from recovery.data.store import open_store

    good, bad, df, m = files
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    base = ["--process", "small", "--store", url, "--quiet", "--allow-rejects"]
    assert main(["ingest", str(bad), "--by", "alice", "--quarantine", str(tmp_path / "q.csv")] + base) == 0
    assert main(["ingest", str(bad), "--by", "alice", "--quarantine", str(tmp_path / "q2.csv")] + base) == 0
    one = df[df["batch_id"] == df["batch_id"].iloc[0]].assign(batch_id="SOLO-1")  # a batch not stored yet
    single = tmp_path / "one.parquet"
    one.to_parquet(single)
    monkeypatch.setattr("getpass.getuser", lambda: "bob")
    assert main(["ingest", str(single), "--process", "small", "--store", url, "--quiet"]) == 0
    (tmp_path / "empty.csv").write_text("")
    assert main(["ingest", str(tmp_path / "empty.csv"), "--store", url]) == 2  # nothing stored, no entry
    with open_store(url) as st:
        audit = st.audit()
    assert list(audit["action"]) == ["append"] * 3
    assert list(audit["actor"]) == ["cli:alice", "cli:alice", "cli:bob"] and set(audit["role"]) == {"cli"}
    first, again, third = (audit.iloc[i] for i in range(3))
    batches = sorted(df["batch_id"].astype(str).unique())
    partners = sorted(df["partner"].astype(str).unique())
    assert first["payload"] == {
        "file": str(bad), "rows": len(df), "accepted": len(df) - 3, "rejected": 3, "duplicates": 0,
        "ingest_id": first["payload"]["ingest_id"], "process": "small-chromed-rod", "batches": batches,
        "partners": partners, "quarantine": str((tmp_path / "q.csv").resolve())}
    assert first["input_hash"] == hashlib.sha256(bad.read_bytes()).hexdigest()
    assert pd.isna(first["batch_id"])  # several batches: the payload lists them
    # a schema file names no partner of its own: the one its rows name, or none when several
    assert (first["partner"] == partners[0]) if len(partners) == 1 else pd.isna(first["partner"])
    # the same file again: every good row a duplicate, no batch touched
    assert (again["payload"]["accepted"], again["payload"]["duplicates"], again["payload"]["batches"]) == \
        (0, len(df) - 3, [])
    assert again["payload"]["ingest_id"] != first["payload"]["ingest_id"]
    # a file of one batch names it, so the batch's own trail shows where its rows came from
    assert third["batch_id"] == "SOLO-1" and third["payload"]["batches"] == ["SOLO-1"]
    assert (third["payload"]["accepted"], third["payload"]["duplicates"]) == (len(one), 0)
    with open_store(url) as st:
        assert list(st.audit(batch_ids=["SOLO-1"])["id"]) == [third["id"]]


def test_a_folder_leaves_one_audit_entry_per_stored_part(tmp_path, parts, capsys):
    from recovery.data.store import open_store

    folder, files = parts
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    assert main(["ingest", str(folder), "--process", "small", "--store", url, "--quiet", "--by", "carol"]) == 0
    with open_store(url) as st:
        audit, ingests = st.audit(), st.ingests()
    assert [a["file"] for a in audit["payload"]] == [str(f) for f in files]
    assert [a["ingest_id"] for a in audit["payload"]] == list(ingests["id"])
    assert set(audit["actor"]) == {"cli:carol"}
    # 30 batches in chunks of 10: each part's entry lists its own ten
    assert [len(a["batches"]) for a in audit["payload"]] == [10, 10, 10]
    assert len({b for a in audit["payload"] for b in a["batches"]}) == 30
