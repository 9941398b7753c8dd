"""The store: one test class, run against every backend (DuckDB and PostgreSQL).

PostgreSQL runs on a throwaway server the tests start (``tests/conftest.py``);
without its binaries these tests fail and say to run ``scripts/test-deps.sh``.
"""

import hashlib

import pandas as pd
import pytest

from recovery.data.ingest import IngestError, ingest
from recovery.data.store import StoreError, open_store


def _mutated(df: pd.DataFrame, path, rows: list[int], delta: float):
    out = df.copy()
    out.loc[rows, "value"] = out.loc[rows, "value"] + delta
    out.to_parquet(path)
    return path


class TestStore:
    def test_round_trip_is_the_simulators_table(self, store, small_history, tmp_path):
        path, df = small_history
        r = ingest(path, store=store, process="small", quarantine=tmp_path / "q.csv")
        assert (r.rows, r.accepted, r.rejected, r.duplicates, r.stored) == (len(df), len(df), 0, 0, len(df))
        pd.testing.assert_frame_equal(store.read_steps(), df)
        # a CSV of the same table needs no mapping either, and adds nothing twice
        csv = tmp_path / "history.csv"
        df.to_csv(csv, index=False)
        again = ingest(csv, store=store, process="small", quarantine=tmp_path / "q2.csv")
        assert (again.accepted, again.duplicates, again.rejected) == (0, len(df), 0)
        pd.testing.assert_frame_equal(store.read_steps(), df)

    def test_reingest_adds_nothing_and_records_provenance(self, store, small_history, tmp_path):
        path, df = small_history
        ingest(path, store=store, process="small")
        before = store.counts()
        r = ingest(path, store=store, process="small")
        assert (r.accepted, r.duplicates, r.rejected, r.stored) == (0, len(df), 0, 0)
        after = store.counts()
        assert after["observations"] == before["observations"] == len(df)
        assert after["ingests"] == before["ingests"] + 1
        prov = store.read_steps(provenance=True)
        assert set(prov["source_sha256"]) == {hashlib.sha256(path.read_bytes()).hexdigest()}
        assert set(prov["source_path"]) == {str(path.resolve())} and prov["ingest_partner"].isna().all()
        assert prov["ingested_at"].notna().all() and prov["process"].eq("small-chromed-rod").all()
        ing = store.ingests()
        assert ing[["source_rows", "accepted", "duplicates", "rejected"]].astype(int).values.tolist() == [
            [len(df), len(df), 0, 0], [len(df), 0, len(df), 0]]

    def test_conflicting_reingest_is_quarantined_and_the_store_keeps_its_value(
            self, store, small_history, tmp_path):
        path, df = small_history
        ingest(path, store=store, process="small")
        meas = df.index[df["kind"] == "measurement"][:2].tolist()
        changed = _mutated(df, tmp_path / "changed.parquet", meas, 0.001)
        r = ingest(changed, store=store, process="small", quarantine=tmp_path / "q.csv")
        assert (r.rejected, r.duplicates, r.accepted) == (2, len(df) - 2, 0)
        assert [x.row for x in r.reasons] == [m + 1 for m in meas]
        unit = df.loc[meas[0], "unit"]
        assert r.reasons[0].reason == (f"conflicts with stored value {df.loc[meas[0], 'value']:.10g} "
                                       f"{unit} from {path.resolve()}")
        pd.testing.assert_frame_equal(store.read_steps(), df)
        q = pd.read_csv(r.quarantine)
        assert q["row"].tolist() == [m + 1 for m in meas]
        assert q["value"].tolist() == pytest.approx(df.loc[meas, "value"] + 0.001)

    def test_unreadable_files_leave_the_store_unchanged(self, store, small_history, tmp_path):
        path, df = small_history
        ingest(path.parent / path.name, store=store, process="small")
        before = store.counts()
        cut = tmp_path / "cut.parquet"
        cut.write_bytes(path.read_bytes()[:-100])
        empty = tmp_path / "empty.parquet"
        empty.write_bytes(b"")
        for bad in (cut, empty):
            with pytest.raises(IngestError, match=str(bad)):
                ingest(bad, store=store, process="small", quarantine=tmp_path / "q.csv")
        # a decoding error after earlier chunks were written rolls all of them back
        csv = tmp_path / "late.csv"
        df2 = df.assign(batch_id=df["batch_id"] + "-new")
        df2.to_csv(csv, index=False)
        csv.write_bytes(csv.read_bytes() + b"B-x,,1,FA1,A,season_day,1.0,day,context,\xff\n")
        with pytest.raises(IngestError, match=r"is not valid utf-8: byte 0xff"):
            ingest(csv, store=store, process="small", quarantine=tmp_path / "q.csv", chunk_rows=50)
        assert store.counts() == before
        assert not list(tmp_path.glob("q.csv*"))

    def test_partner_and_process_filters(self, store, small_history, tmp_path):
        path, df = small_history
        ingest(path, store=store, process="small")
        a = store.read_steps(partner="A")
        assert len(a) == (df["partner"] == "A").sum() and set(a["partner"]) == {"A"}
        assert len(store.read_steps(process="small-chromed-rod")) == len(df)
        assert len(store.read_steps(process="other")) == 0
        ids = ["B-2", "B-5"]
        pd.testing.assert_frame_equal(store.read_steps(batch_ids=ids),
                                      df[df["batch_id"].isin(ids)].reset_index(drop=True))
        assert store.process("small-chromed-rod").n_steps == 12
        with pytest.raises(StoreError, match="no process 'nope'"):
            store.process("nope")

    def test_models_recommendations_decisions_are_appended(self, store):
        mid = 7      # a model version id (no writer of model versions in the library yet)
        rid = store.add_recommendation(process="p", batch_id="B-1", after_step=15, agent="planner",
                                       plan={"temper_temperature": 470.0}, expected={"p_accept": 0.8},
                                       model_version=mid, partner="A")
        did = store.add_decision(batch_id="B-1", engineer="kim", decision="accepted",
                                 recommendation_id=rid, plan={"temper_temperature": 470.0}, partner="A")
        store.add_decision(batch_id="B-9", engineer="lee", decision="rejected", partner="B")
        assert len({mid, rid, did}) == 3
        rec = store.recommendations(partner="A")
        assert rec["plan"].tolist() == [{"temper_temperature": 470.0}]
        assert rec["expected"].tolist() == [{"p_accept": 0.8}]
        dec = store.decisions(partner="A")
        assert dec["decision"].tolist() == ["accepted"] and int(dec["recommendation_id"].iloc[0]) == rid
        assert len(store.decisions()) == 2
        assert not hasattr(store, "delete_decision") and not hasattr(store, "update_decision")

    def test_one_final_decision_per_batch_and_step_swapped_only_by_naming_it(self, store):
        key = dict(process="p", batch_id="B-1", after_step=3)
        assert store.claim_decision(**key, decision_id=10) is None
        assert store.claim_decision(**key, decision_id=11) == 10                 # taken: 10 is final
        assert store.claim_decision(**key, decision_id=12, supersedes=99) == 10  # stale: refused
        assert store.claim_decision(**key, decision_id=13, supersedes=10) is None
        assert store.claim_decision(**dict(key, after_step=6), decision_id=14, supersedes=10) == -1
        assert store.claim_decision(**dict(key, batch_id="B-2"), decision_id=15) is None
        heads = store.final_decisions("p")
        assert heads.values.tolist() == [["B-1", 3, 13], ["B-2", 3, 15]]

    def test_an_idempotency_key_is_claimed_once_per_token(self, store):
        assert store.claim_idempotency_key(token_id=1, key="k", request_sha256="a") is None
        assert store.claim_idempotency_key(token_id=1, key="k", request_sha256="b") == ("a", None, None)
        store.finish_idempotency_key(token_id=1, key="k", status=201, response={"decision_id": 5})
        assert store.idempotency_answer(token_id=1, key="k") == ("a", 201, {"decision_id": 5})
        assert store.claim_idempotency_key(token_id=2, key="k", request_sha256="b") is None
        # claimed in a transaction that fails: the key is free again
        with pytest.raises(RuntimeError):
            with store.transaction():
                assert store.claim_idempotency_key(token_id=3, key="k", request_sha256="c") is None
                raise RuntimeError("the request failed")
        assert store.idempotency_answer(token_id=3, key="k") is None

    def test_owners_are_data_partners_and_handovers_and_partners_are_known(self, store, small_history):
        path, df = small_history
        ingest(path, store=store, process="small")
        b = str(df["batch_id"].iloc[0])
        owners = store.batch_owners("small-chromed-rod", [b])
        data = set(df.loc[df["batch_id"] == b, "partner"])
        assert set(owners["partner"]) == data
        store.add_handover(process="small-chromed-rod", batch_id="B-new", partner="B", actor="token:1")
        assert store.batch_owners("small-chromed-rod", ["B-new"]).values.tolist() == [["B-new", "B"]]
        assert store.known_partners() == {"A": "process 'small-chromed-rod'", "B": "process 'small-chromed-rod'"}

    def test_audit_of_a_partner_shows_its_entries_and_those_about_its_batches(self, store):
        store.add_audit(actor="t1", action="append", partner="A", batch_id="B-1")
        store.add_audit(actor="t2", action="append", partner="B", batch_id="B-1")   # B wrote to A's batch
        store.add_audit(actor="t2", action="append", partner="B", batch_id="B-2")
        store.add_audit(actor="t1", action="token_created", partner="A")
        got = store.audit(partner="A", or_batch_ids=["B-1"])
        assert list(zip(got["partner"], got["batch_id"].fillna("-"))) == [("A", "B-1"), ("B", "B-1"), ("A", "-")]
        assert len(store.audit(partner="A", or_batch_ids=[])) == 2

    def test_threads_share_the_store_and_one_claim_wins(self, store, small_history):
        import concurrent.futures

        path, df = small_history
        ingest(path, store=store, process="small")

        def one(i):
            claim = store.claim_decision(process="p", batch_id="B-1", after_step=3, decision_id=100 + i)
            aid = store.add_audit_now(actor=f"t{i}", action="recommendation_shown", batch_id="B-1")
            rows = len(store.read_steps(process="small-chromed-rod"))
            return claim, aid, rows

        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            res = list(ex.map(one, range(32)))
        winners = [100 + i for i, (c, _, _) in enumerate(res) if c is None]
        assert len(winners) == 1
        assert all(c == winners[0] for c, _, _ in res if c is not None)
        assert all(n == len(df) for _, _, n in res)
        trail = store.audit()
        assert sorted(trail["id"].astype(int)) == sorted(a for _, a, _ in res) and trail["id"].is_unique
        assert sorted(trail["actor"]) == sorted(f"t{i}" for i in range(32))

    def test_an_audit_entry_added_now_inside_a_transaction_commits_with_it(self, store):
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.add_audit_now(actor="a", action="x")
                raise RuntimeError("the request failed")
        assert len(store.audit()) == 0
        store.add_audit_now(actor="a", action="y")
        assert store.audit()["action"].tolist() == ["y"]

    def test_data_versions_change_only_when_a_batch_gains_rows(self, store, small_history, tmp_path):
        path, df = small_history
        ids = sorted(df["batch_id"].astype(str).unique())
        first, rest = ids[0], ids[1:]
        ingest_part = lambda part, name: ingest(_write(part, tmp_path / name), store=store,  # noqa: E731
                                                process="small")
        ingest_part(df[df["batch_id"].astype(str) != first], "rest.parquet")
        before = store.data_versions("small-chromed-rod")
        assert set(before) == set(rest) and first not in before
        assert before[rest[0]][0] == int((df["batch_id"].astype(str) == rest[0]).sum())
        ingest(path, store=store, process="small")          # adds only the first batch's rows
        after = store.data_versions("small-chromed-rod")
        assert {b: after[b] for b in rest} == before and first in after
        ingest(path, store=store, process="small")          # all duplicates: nothing changes
        assert store.data_versions("small-chromed-rod") == after
        assert store.data_versions("small-chromed-rod", [first]) == {first: after[first]}

    def test_an_assessment_is_kept_once_per_input_hash(self, store):
        key = dict(process="p", batch_id="B-1", input_hash="h1")
        assert store.assessment(**key) is None
        assert store.put_assessment(**key, body={"status": "at risk", "rec": None}) is True
        assert store.put_assessment(**key, body={"status": "other"}) is False
        assert store.assessment(**key) == {"status": "at risk", "rec": None}
        assert store.assessment(**dict(key, input_hash="h2")) is None


def _write(df: pd.DataFrame, path):
    df.to_parquet(path)
    return path


def _other_process(code: str) -> str:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return r.stdout + r.stderr


def test_a_shared_duckdb_store_lets_another_process_in_and_reopens_after(tmp_path):
    path = tmp_path / "s.duckdb"
    with open_store(f"duckdb://{path}", shared=True) as st:
        st.add_audit(actor="service", action="x")             # the connection is open: the file is locked
        out = _other_process("from recovery.data.store import open_store\n"
                             f"with open_store('duckdb://{path}', lock_timeout=60) as o:\n"
                             "    o.add_audit(actor='cli', action='y')\n    print('cli got in')")
        assert "cli got in" in out, out
        assert st.audit()["actor"].tolist() == ["service", "cli"]   # reopened, sees the other's write


def test_a_store_held_by_another_process_times_out_with_a_clear_error(tmp_path):
    path = tmp_path / "s.duckdb"
    with open_store(f"duckdb://{path}"):                     # not shared: held until closed
        out = _other_process("from recovery.data.store import open_store, StoreError\n"
                             f"try:\n    open_store('duckdb://{path}', shared=True, lock_timeout=0.5)\n"
                             "except StoreError as e:\n    print(e)")
    assert "has held its lock for more than 0.5 s" in out, out
    assert not list(tmp_path.glob("s.duckdb.waiting.*"))    # no marker left behind


def test_bad_store_url_is_clear():
    with pytest.raises(StoreError, match="expected duckdb:///path/file.duckdb or postgresql://"):
        open_store("sqlite:///x.db")


def test_default_store_comes_from_the_environment(monkeypatch, tmp_path):
    from recovery.data.store import default_url

    monkeypatch.setenv("RECOVERY_STORE", f"duckdb://{tmp_path / 'env.duckdb'}")
    with open_store() as st:
        assert st.location == str(tmp_path / "env.duckdb")
    monkeypatch.delenv("RECOVERY_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_url() == f"duckdb://{tmp_path / 'xdg' / 'recovery' / 'recovery.duckdb'}"


def test_duckdb_lets_go_of_a_staged_frame_before_the_transaction_commits(tmp_path):
    """An ingest stages each chunk's keys inside its one transaction; a frame DuckDB kept
    until the commit (as register() does) made a 1M-row ingest hold every chunk's frames."""
    import gc
    import weakref

    with open_store(f"duckdb://{tmp_path / 'store.duckdb'}") as st, st.transaction():
        keys = pd.DataFrame({"pos": [0, 1, 2], "batch_id": ["a", "b", "c"], "bar_key": -1, "step": 1})
        ref = weakref.ref(keys)
        st._stage("_recovery_parts", keys)
        try:
            assert sorted(st._frame("SELECT pos FROM _recovery_parts")["pos"]) == [0, 1, 2]
        finally:
            st._unstage("_recovery_parts")
        del keys
        gc.collect()
        assert ref() is None, "the staged frame is still held inside the transaction"
        # and staged frames still answer the store's own look-ups
        parts = pd.DataFrame({"pos": [0], "batch_id": ["a"], "bar_key": -1, "step": 1})
        assert st.parts_at_step("p", parts).empty
