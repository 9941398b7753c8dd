"""The service's concurrency and caches (issue 21): a batch is read again only when
its rows change, assessments are shared through the store, several workers need
PostgreSQL, and concurrent requests lose no decision and no audit entry."""

import concurrent.futures
import os
import subprocess
import sys

import pytest

from recovery.data.store import open_store

from .conftest import auth, build_world
from .test_api import _continuation, _rows

ONE = [(1, "worn_drawing_die")]


def test_serve_refuses_several_workers_on_duckdb_and_says_what_to_do(tmp_path, capsys):
    from recovery.cli import main

    url = f"duckdb://{tmp_path / 's.duckdb'}"
    assert main(["serve", "--store", url, "--model", str(tmp_path / "none"), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2: a DuckDB store admits one process at a time" in err and "PostgreSQL" in err
    assert main(["serve", "--store", url, "--model", str(tmp_path / "none"), "--workers", "0"]) == 2
    assert "--workers 0: at least 1" in capsys.readouterr().err


def test_a_batch_is_read_again_only_when_its_rows_change(small_model, tmp_path):
    from recovery.service.app import Service
    from recovery.service.auth import authenticate

    url, data_dir, tokens = build_world(tmp_path, batches=ONE)
    svc = Service(url, small_model[1], data_dir=data_dir)
    try:
        who = svc.authenticate(f"Bearer {tokens['admin']}")
        reads = []
        real = svc.store.read_steps
        svc.store.read_steps = lambda **kw: reads.append(kw) or real(**kw)
        first = svc.batch_view(who, "B-1")
        assert len(reads) == 1
        again = svc.batch_view(who, "B-1")
        listed = svc.batches(who)
        assert len(reads) == 1                      # unchanged rows: nothing read again
        assert again == first and listed[0]["status"] == first["status"]
        new, _ = _continuation(1, "worn_drawing_die", 41, first["last_step"], svc.process.n_steps)
        nxt = int(new["step"].min())         # the next step with rows
        new = new[new["step"] == nxt]
        code, answer = svc.append(who, "B-1", _rows(new))
        assert code == 200 and answer["accepted"] == len(new) > 0
        after = svc.batch_view(who, "B-1")
        assert len(reads) == 2 and after["input_hash"] != first["input_hash"]
        assert after["last_step"] == nxt
        assert authenticate(svc.store, f"Bearer {tokens['admin']}") is not None
    finally:
        svc.store.close()


def test_the_batch_view_is_encoded_once_per_data_version_and_audited_every_time(small_model, tmp_path):
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    from recovery.service.app import create_app

    url, data_dir, tokens = build_world(tmp_path, batches=ONE)
    app = create_app(url, small_model[1], data_dir=data_dir)
    svc = app.state.service
    encodes = []
    real = svc._view
    svc._view = lambda *a: encodes.append(a[0]) or real(*a)
    try:
        with TestClient(app) as client:
            first = client.get("/api/batches/B-1", headers=auth(tokens["admin"]))
            again = client.get("/api/batches/B-1", headers=auth(tokens["eng_a"]))
            assert first.status_code == again.status_code == 200
            assert first.headers["content-type"] == "application/json"
            assert encodes == ["B-1"]               # built and encoded once, sent twice
            who = svc.authenticate(f"Bearer {tokens['admin']}")
            # the bytes FastAPI would send for the view as a dict
            assert first.content == again.content == JSONResponse(jsonable_encoder(svc.batch_view(who, "B-1"))).body
            assert client.get("/api/batches/B-9", headers=auth(tokens["admin"])).status_code == 404
            assert client.get("/api/batches/B-1", headers=auth(tokens["eng_b"])).status_code == 404
            trail = svc.store.audit()
            shown = trail[trail["action"] == "recommendation_shown"]
            names = [x.rsplit("(", 1)[-1].rstrip(")") for x in shown["actor"]]
            assert names == ["admin", "eng_a", "admin"]    # every answer audited, the 404s not
            new, _ = _continuation(1, "worn_drawing_die", 41, first.json()["last_step"], svc.process.n_steps)
            new = new[new["step"] == int(new["step"].min())]
            assert svc.append(who, "B-1", _rows(new))[0] == 200
            after = client.get("/api/batches/B-1", headers=auth(tokens["admin"]))
            assert after.json()["input_hash"] != first.json()["input_hash"]   # new rows: a new view
            assert len(encodes) == 3
    finally:
        svc.store.close()


def test_another_worker_takes_the_assessment_from_the_store_without_planning(small_model, tmp_path,
                                                                             monkeypatch):
    from recovery.service.app import Service

    url, data_dir, tokens = build_world(tmp_path, batches=ONE)
    first = Service(url, small_model[1], data_dir=data_dir)
    try:
        who = first.authenticate(f"Bearer {tokens['admin']}")
        shown = first.recommendation(who, "B-1")
        assert shown["recommendation"] is not None
    finally:
        first.store.close()

    import recovery.recommend

    def no_planning(*a, **k):
        raise AssertionError("the planner ran although the store had the assessment")

    monkeypatch.setattr(recovery.recommend, "recommend", no_planning)
    second = Service(url, small_model[1], data_dir=data_dir)
    try:
        who = second.authenticate(f"Bearer {tokens['admin']}")
        again = second.recommendation(who, "B-1")
        assert again == shown
        counts = second.store.counts()
        assert counts["recommendations"] == 1 and counts["assessments"] == 1
        assert list(second.store.audit()["action"]) == ["recommendation_shown"] * 2
    finally:
        second.store.close()


def test_several_workers_on_postgresql_share_the_cache_and_lose_nothing(postgresql_url, small_model, tmp_path):
    import socket
    import time

    import httpx

    from recovery.data.ingest import ingest
    from recovery.service.auth import create_token
    from simulators.process import Simulator

    from .conftest import flagged_history

    src = tmp_path / "h.parquet"
    flagged_history(Simulator("small"), 1, "worn_drawing_die", 41).to_parquet(src, index=False)
    with open_store(postgresql_url) as st:
        ingest(src, store=st, process="small", quarantine=tmp_path / "q.csv")
        token = create_token(st, partner="A", role="engineer")[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "recovery.cli", "serve", "--store", postgresql_url,
                             "--model", str(small_model[1]), "--port", str(port), "--workers", "2",
                             "--data-dir", str(tmp_path / "data")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base, h = f"http://127.0.0.1:{port}", auth(token)
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                pytest.fail(f"the service exited: {proc.stdout.read()}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        first = httpx.get(base + "/api/batches/B-1/recommendation", headers=h, timeout=300).json()

        def one(i):
            with httpx.Client(base_url=base, headers=h, timeout=300) as c:
                view = c.get("/api/batches/B-1")
                dec = c.post("/api/batches/B-1/decision", json={"decision": "reject", "comment": f"c{i}"})
                return view.status_code, view.json().get("input_hash"), dec.status_code

        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            res = list(ex.map(one, range(20)))
    finally:
        proc.terminate()
        proc.wait(60)
    assert all(v == 200 and hsh == first["input_hash"] for v, hsh, _ in res)
    assert sorted(d for _, _, d in res) == [201] + [409] * 19
    with open_store(postgresql_url) as st:
        assert len(st.recommendations()) == 1          # planned once, whichever worker answered
        assert len(st.decisions()) == 1
        trail = st.audit()
        assert (trail["action"] == "recommendation_shown").sum() == 21
        assert (trail["action"] == "decision").sum() == 1
