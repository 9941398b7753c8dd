"""Regression tests of the adversarial probe of ``recovery serve`` (issue 16).

Each test failed on the service before its fix: cross-partner writes, int64
overflow, chunked bodies, ids, unknown partners, absolute paths, concurrent
decisions. The module has its own store, so its writes do not disturb the
other service tests.
"""

import concurrent.futures
import json

import pandas as pd
import pytest

from recovery.data.store import open_store
from simulators.process import Simulator

from .conftest import BATCHES, LiveServer, auth, build_world, flagged_history

pytestmark = pytest.mark.filterwarnings("ignore")

SPEC = (("admin", "*", "admin"), ("eng_a", "A", "engineer"), ("viewer_a", "A", "partner"),
        ("eng_b", "B", "engineer"), ("viewer_b", "B", "partner"))


@pytest.fixture(scope="module")
def world(small_model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from recovery.service.app import create_app

    url, data_dir, tokens = build_world(tmp_path_factory.mktemp("security"), BATCHES, SPEC)
    app = create_app(url, small_model[1], data_dir=data_dir)
    with TestClient(app) as client:
        yield app, client, tokens, data_dir


def _rows(df, batch_id=None):
    out = []
    for r in df.to_dict("records"):
        r["timestamp"] = r["timestamp"].isoformat()
        r["bar_id"] = None if pd.isna(r["bar_id"]) else int(r["bar_id"])
        r["value"] = None if pd.isna(r["value"]) else float(r["value"])
        if batch_id is not None:
            r["batch_id"] = batch_id
        out.append(r)
    return out


def _b_row(batch_id):
    """One measurement row of partner B's step 12 (from batch B-3, which reached it), for ``batch_id``."""
    h = flagged_history(Simulator("small"), 3, None, 43)
    m = h[(h["step"] == 12) & (h["kind"] == "measurement") & (h["partner"] == "B")].iloc[:1]
    return _rows(m, batch_id)


def _steps(app, batch_id):
    return app.state.service.history(batch_id)


# ---- 1. cross-partner read and write -----------------------------------------

def test_a_partner_cannot_write_its_way_into_another_partners_batch(world):
    app, client, tokens, _ = world
    svc = app.state.service
    before_rec = client.get("/api/batches/B-1/recommendation", headers=auth(tokens["eng_a"])).json()
    n_before = len(_steps(app, "B-1"))
    for who in ("viewer_b", "eng_b"):
        r = client.post("/api/batches/B-1/steps", headers=auth(tokens[who]), json={"rows": _b_row("B-1")})
        # the same answer as for a batch that does not exist: nothing learnt, nothing written
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == "no batch 'B-1'"
        assert client.get("/api/batches/B-1", headers=auth(tokens[who])).status_code == 404
        assert "B-1" not in [b["batch_id"] for b in client.get("/api/batches", headers=auth(tokens[who])).json()]
    assert len(_steps(app, "B-1")) == n_before
    after_rec = client.get("/api/batches/B-1/recommendation", headers=auth(tokens["eng_a"])).json()
    assert after_rec["input_hash"] == before_rec["input_hash"]
    assert after_rec["recommendation"]["decision"] == before_rec["recommendation"]["decision"]
    # the owner sees the attempts in the batch's audit trail
    trail = client.get("/api/audit", params={"batch_id": "B-1"}, headers=auth(tokens["viewer_a"])).json()
    refused = [e for e in trail if e["action"] == "append_refused"]
    assert [e["partner"] for e in refused] == ["B", "B"]
    assert svc.store.audit(batch_ids=["B-1"])["action"].tolist().count("append") == 0


def test_only_the_first_steps_partner_starts_a_batch_and_only_with_its_own_steps(world):
    app, client, tokens, _ = world
    # partner B cannot squat a batch id before partner A (where ids are born) uses it
    r = client.post("/api/batches/B-77/steps", headers=auth(tokens["eng_b"]), json={"rows": _b_row("B-77")})
    assert r.status_code == 404 and len(_steps(app, "B-77")) == 0
    # nor write rows of a step partner A runs
    a_rows = _rows(flagged_history(Simulator("small"), 77, None, 177).query("step <= 3"))
    r = client.post("/api/batches/B-77/steps", headers=auth(tokens["eng_b"]),
                    json={"rows": [dict(x, partner="B") for x in a_rows]})
    assert r.status_code == 403
    r = client.post("/api/batches/B-77/steps", headers=auth(tokens["eng_a"]), json={"rows": a_rows})
    assert r.status_code == 200, r.text
    assert client.get("/api/batches/B-77", headers=auth(tokens["viewer_a"])).status_code == 200
    assert client.get("/api/batches/B-77", headers=auth(tokens["viewer_b"])).status_code == 404


def test_a_handover_lets_the_next_partner_read_and_append_and_is_audited(world):
    app, client, tokens, _ = world
    body = {"partner": "B", "comment": "shipped to B"}
    # partners cannot hand over; nor can an engineer of a partner that does not own the batch
    assert client.post("/api/batches/B-2/handover", headers=auth(tokens["viewer_a"]), json=body).status_code == 403
    assert client.post("/api/batches/B-2/handover", headers=auth(tokens["eng_b"]), json=body).status_code == 404
    assert client.post("/api/batches/B-2/handover", headers=auth(tokens["eng_a"]),
                       json={"partner": "Z"}).status_code == 422
    r = client.post("/api/batches/B-2/handover", headers=auth(tokens["eng_a"]), json=body)
    assert r.status_code == 201, r.text
    again = client.post("/api/batches/B-2/handover", headers=auth(tokens["eng_a"]), json=body)
    assert again.status_code == 200 and again.json()["handover_id"] is None
    assert client.get("/api/batches/B-2", headers=auth(tokens["viewer_b"])).status_code == 200
    r = client.post("/api/batches/B-2/steps", headers=auth(tokens["viewer_b"]), json={"rows": _b_row("B-2")})
    assert r.status_code in (200, 422) and r.json()["accepted"] == 1, r.text
    # both partners see the hand-over and B's append in the batch's trail, and in their whole trail
    for who in ("viewer_a", "viewer_b"):
        for params in ({"batch_id": "B-2"}, {}):
            trail = client.get("/api/audit", params=params, headers=auth(tokens[who])).json()
            mine = [(e["action"], e["partner"]) for e in trail if e["batch_id"] == "B-2"]
            assert ("handover", "A") in mine and ("append", "B") in mine, (who, params, mine)


# ---- 2. integers beyond int64 ----------------------------------------------------

@pytest.mark.parametrize("field, value", [("bar_id", 2 ** 63), ("step", 2 ** 64), ("step", -(2 ** 63) - 1),
                                          ("bar_id", 10 ** 30)])
def test_integers_beyond_int64_are_refused_with_422(world, field, value):
    app, client, tokens, _ = world
    before = app.state.service.store.counts()
    row = dict(_b_row("B-3")[0], **{field: value})
    r = client.post("/api/batches/B-3/steps", headers=auth(tokens["eng_b"]), json={"rows": [row]})
    assert r.status_code == 422 and field in r.text
    assert app.state.service.store.counts() == before


def test_path_and_body_integers_beyond_int64_are_refused_with_422(world):
    _, client, tokens, _ = world
    assert client.delete(f"/api/tokens/{2 ** 64}", headers=auth(tokens["admin"])).status_code == 422
    r = client.post("/api/batches/B-3/decision", headers=auth(tokens["eng_a"]),
                    json={"decision": "reject", "supersedes": 2 ** 63})
    assert r.status_code == 422


# ---- 3. chunked bodies over the limit ---------------------------------------------

def test_a_chunked_body_over_the_limit_answers_413_on_a_real_server(world):
    import httpx

    from recovery.service.app import MAX_BODY_BYTES

    app, _, tokens, _ = world
    before = app.state.service.store.counts()

    def chunks():
        yield b'{"decision": "reject", "comment": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as c:
        r = c.post("/api/batches/B-3/decision", content=chunks(),
                   headers={**auth(tokens["eng_a"]), "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert "Content-Length" not in r.request.headers     # it really was chunked
        # a chunked body under the limit still goes through to the app (422: bad JSON)
        r = c.post("/api/batches/B-3/decision", content=iter([b'{"decision": ', b'"maybe"}']),
                   headers={**auth(tokens["eng_a"]), "Content-Type": "application/json"})
        assert r.status_code == 422
    assert app.state.service.store.counts() == before


# ---- 4. ids ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["B-1\x00", "B-\u202e1", "B-1\u2066", "x" * 65, " B-1", "B-1\u200b"])
def test_ids_that_could_pass_for_another_are_refused_with_422(world, bad):
    app, client, tokens, _ = world
    h = auth(tokens["eng_a"])
    before = app.state.service.store.counts()
    from urllib.parse import quote

    path = quote(bad, safe="")
    assert client.get(f"/api/batches/{path}", headers=h).status_code == 422
    assert client.get("/api/audit", params={"batch_id": bad}, headers=h).status_code == 422
    row = _rows(flagged_history(Simulator("small"), 88, None, 188).query("step == 1"))[0]
    for field in ("batch_id", "factory", "variable"):
        r = client.post("/api/batches/B-88/steps", headers=h, json={"rows": [dict(row, **{field: bad})]})
        assert r.status_code == 422 and "not an acceptable id" in r.text, (field, r.text)
    r = client.post(f"/api/batches/{path}/steps", headers=h, json={"rows": [row]})
    assert r.status_code == 422
    r = client.post("/api/tokens", headers=auth(tokens["admin"]), json={"partner": bad, "role": "partner"})
    assert r.status_code == 422
    assert app.state.service.store.counts() == before


# ---- 5. tokens for unknown partners --------------------------------------------------

def test_tokens_cli_refuses_a_partner_no_process_or_data_knows(tmp_path, capsys):
    from recovery.cli import main

    url, _, _ = build_world(tmp_path, BATCHES[:1], ())     # ingesting stores the process: A and B known
    assert main(["tokens", "--store", url, "create", "--partner", "Z", "--role", "partner"]) == 2
    err = capsys.readouterr().err
    assert "unknown partner 'Z'" in err and "A (process 'small-chromed-rod')" in err
    assert str(tmp_path) not in err                     # the store is named, not its absolute path
    assert main(["tokens", "--store", url, "create", "--partner", "B", "--role", "partner"]) == 0
    assert main(["tokens", "--store", url, "create", "--partner", "A\u202e", "--role", "partner"]) == 2
    assert "not an acceptable id" in capsys.readouterr().err
    with open_store(url) as st:
        assert list(st.tokens()["partner"]) == ["B"]


# ---- 6. absolute paths ---------------------------------------------------------------

def test_store_errors_name_the_store_without_its_absolute_path(tmp_path, monkeypatch):
    from recovery.data.store import StoreError

    monkeypatch.chdir(tmp_path.parent)
    path = tmp_path / "s.duckdb"
    with open_store(f"duckdb://{path}"):
        import subprocess
        import sys

        # another process: DuckDB lets one process at a time have the file
        code = ("from recovery.data.store import open_store, StoreError\n"
                f"try:\n    open_store('duckdb://{path}', lock_timeout=0.3)\n"
                "except StoreError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path.parent).stdout
    assert "has held its lock" in out and f"{tmp_path.name}/s.duckdb" in out, out
    assert str(tmp_path) not in out
    with pytest.raises(StoreError) as e:
        open_store("sqlite:///x.db")
    assert "sqlite" in str(e.value)


def test_service_answers_show_no_absolute_path(world):
    app, client, tokens, data_dir = world
    row = _rows(flagged_history(Simulator("small"), 2, "furnace_over_temperature", 42).query("step == 6"))[0]
    r = client.post("/api/batches/B-2/steps", headers=auth(tokens["eng_a"]),
                    json={"rows": [dict(row, variable="no_such_variable")]})
    assert r.status_code == 422
    body = r.json()
    assert body["quarantine"].startswith("quarantine/") and body["received"].startswith("inbox/")
    assert str(data_dir) not in r.text and str(data_dir.resolve()) not in r.text
    trail = client.get("/api/audit", params={"batch_id": "B-2"}, headers=auth(tokens["eng_a"])).text
    assert str(data_dir) not in trail


# ---- 7. concurrent decisions, idempotency, supersede --------------------------------

def _ten_concurrent(url, batch, token, keys=None):
    import httpx

    def one(i):
        headers = auth(token)
        if keys is not None:
            headers["Idempotency-Key"] = keys[i]
        body = {"decision": "reject", "comment": "ten"} if keys is not None else \
            {"decision": ["accept", "reject"][i % 2], "comment": f"client {i}"}
        with httpx.Client(base_url=url[i % len(url)], timeout=120) as c:
            r = c.post(f"/api/batches/{batch}/decision", headers=headers, json=body)
            return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        return list(ex.map(one, range(10)))


def _decisions_of(store, batch):
    d = store.decisions()
    return d[d["batch_id"] == batch] if len(d) else d


def test_ten_concurrent_decisions_store_exactly_one_then_supersede(world):
    app, client, tokens, _ = world
    st = app.state.service.store
    with LiveServer(app) as live:
        res = _ten_concurrent([live.url], "B-1", tokens["eng_a"])
    codes = sorted(c for c, _ in res)
    assert codes == [201] + [409] * 9, res
    winner = next(b for c, b in res if c == 201)["decision_id"]
    assert all(b["current_decision_id"] == winner for c, b in res if c == 409)
    assert list(_decisions_of(st, "B-1")["id"]) == [winner]
    # superseding names the current final decision, and is audited; a stale one is refused
    h = auth(tokens["eng_a"])
    r = client.post("/api/batches/B-1/decision", headers=h,
                    json={"decision": "accept", "comment": "second look", "supersedes": winner})
    assert r.status_code == 201, r.text
    new = r.json()["decision_id"]
    r = client.post("/api/batches/B-1/decision", headers=h, json={"decision": "reject", "supersedes": winner})
    assert r.status_code == 409 and r.json()["current_decision_id"] == new
    assert len(_decisions_of(st, "B-1")) == 2
    trail = client.get("/api/audit", params={"batch_id": "B-1"}, headers=auth(tokens["viewer_a"])).json()
    sup = [e for e in trail if e["action"] == "decision_superseded"]
    assert len(sup) == 1 and sup[0]["payload"] == {"decision_id": winner, "superseded_by": new,
                                                    "after_step": 3, "comment": "second look"}


def test_an_idempotency_key_replay_returns_the_first_answer_and_stores_nothing(world):
    app, client, tokens, _ = world
    st = app.state.service.store
    before = st.counts()
    with LiveServer(app) as live:
        res = _ten_concurrent([live.url], "B-4", tokens["eng_a"], keys=["k-ten"] * 10)
    assert [c for c, _ in res] == [201] * 10
    assert len({json.dumps(b, sort_keys=True) for _, b in res}) == 1      # the same answer, ten times
    after = st.counts()
    assert after["decisions"] == before["decisions"] + 1 and after["idempotency"] == before["idempotency"] + 1
    assert after["audit"] - before["audit"] == 1
    # the same key with another request is refused; another token's same key is its own
    h = {**auth(tokens["eng_a"]), "Idempotency-Key": "k-ten"}
    r = client.post("/api/batches/B-4/decision", headers=h, json={"decision": "accept", "comment": "ten"})
    assert r.status_code == 422 and "different request" in r.json()["detail"]
    r = client.post("/api/batches/B-4/decision", headers={**auth(tokens["admin"]), "Idempotency-Key": "k-ten"},
                    json={"decision": "reject", "comment": "ten"})
    assert r.status_code == 409
    assert st.counts()["decisions"] == after["decisions"]


def test_ten_concurrent_decisions_on_postgresql_from_two_service_processes_store_one(
        postgresql_url, small_model, tmp_path):
    """Two services (two connections, as two workers would have) on one PostgreSQL store."""
    from recovery.data.ingest import ingest
    from recovery.service.app import create_app
    from recovery.service.auth import create_token

    src = tmp_path / "h.parquet"
    flagged_history(Simulator("small"), 1, "worn_drawing_die", 41).to_parquet(src, index=False)
    with open_store(postgresql_url) as st:
        ingest(src, store=st, process="small", quarantine=tmp_path / "q.csv")
        token = create_token(st, partner="A", role="engineer")[1]
    apps = [create_app(postgresql_url, small_model[1], data_dir=tmp_path / f"data{i}") for i in (0, 1)]
    with LiveServer(apps[0]) as one, LiveServer(apps[1]) as two:
        res = _ten_concurrent([one.url, two.url], "B-1", token)
        keyed = _ten_concurrent([one.url, two.url], "B-1", token, keys=["same"] * 10)
    assert sorted(c for c, _ in res) == [201] + [409] * 9, res
    # the keyed requests conflict with the first decision: each gets 409, none is stored
    assert [c for c, _ in keyed] == [409] * 10
    with open_store(postgresql_url) as st:
        assert len(st.decisions()) == 1
        assert (st.audit()["action"] == "decision").sum() == 1
