"""`recovery serve` and the CLI on one DuckDB store at the same time (issue 16, item 8).

DuckDB lets one process at a time open a file. The service opens its store
shared (it lets go when idle or when a command waits), so while it runs,
``recovery tokens create`` and ``recovery ingest`` work on the same file, and
the service goes on answering meanwhile.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from recovery.data.store import open_store
from simulators.process import Simulator

from .conftest import BATCHES, auth, build_world, flagged_history

pytestmark = pytest.mark.filterwarnings("ignore")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(small_model, tmp_path):
    """(url of the running `recovery serve` subprocess, store URL, admin token, folder)."""
    url, data_dir, tokens = build_world(tmp_path, BATCHES[:1], (("admin", "*", "admin"),))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from recovery.cli import main; main()", "serve", "--store", url,
         "--model", str(small_model[1]), "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):                      # model loading takes a few seconds
            if proc.poll() is not None:
                pytest.fail(f"recovery serve exited: {(tmp_path / 'serve.log').read_text()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("recovery serve did not start")
        yield base, url, tokens["admin"], tmp_path
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_tokens_and_ingest_from_the_cli_while_the_service_runs(served, capsys):
    from recovery.cli import main

    base, url, admin, folder = served
    # the service has the store open and in use
    assert httpx.get(base + "/api/batches", headers=auth(admin), timeout=120).status_code == 200

    statuses, stop = [], threading.Event()

    def keep_asking():                 # requests go on while the commands run
        with httpx.Client(base_url=base, timeout=120) as c:
            while not stop.is_set():
                statuses.append(c.get("/api/audit", headers=auth(admin)).status_code)

    t = threading.Thread(target=keep_asking)
    t.start()
    try:
        assert main(["tokens", "--store", url, "create", "--partner", "A", "--role", "engineer",
                     "--name", "from-cli"]) == 0, capsys.readouterr().err
        token = capsys.readouterr().out.strip().splitlines()[-1]
        src = folder / "b2.parquet"
        flagged_history(Simulator("small"), 2, "furnace_over_temperature", 42).to_parquet(src, index=False)
        assert main(["ingest", str(src), "--store", url, "--process", "small", "--quiet",
                     "--quarantine", str(folder / "q2.csv")]) == 0, capsys.readouterr().err
    finally:
        stop.set()
        t.join(60)
    assert statuses and set(statuses) == {200}, statuses[-5:]

    # the service uses both at once: the new token sees the newly ingested batch and decides on it
    with httpx.Client(base_url=base, timeout=120) as c:
        listed = [b["batch_id"] for b in c.get("/api/batches", headers=auth(token)).json()]
        assert listed == ["B-1", "B-2"]
        r = c.post("/api/batches/B-2/decision", headers=auth(token), json={"decision": "reject"})
        assert r.status_code == 201, r.text
    # ...and the CLI still gets in afterwards (the service let go of the file when idle)
    assert main(["tokens", "--store", url, "list"]) == 0
    assert "from-cli" in capsys.readouterr().out
    with open_store(url) as st:
        assert list(st.decisions()["batch_id"]) == ["B-2"]


def test_while_a_command_holds_the_store_the_service_answers_503_then_recovers(small_model, tmp_path):
    from fastapi.testclient import TestClient

    from recovery.service.app import create_app

    url, data_dir, tokens = build_world(tmp_path, BATCHES[:1], (("admin", "*", "admin"),))
    app = create_app(url, small_model[1], data_dir=data_dir)
    app.state.service.store.lock_timeout = 0.5      # the default, 30 s, is too long for a test
    path = url[len("duckdb://"):]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom recovery.data.store import open_store\n"
                               f"with open_store('duckdb://{path}'):\n"
                               "    print('holding', flush=True)\n    sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ,
                                                                           PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert holder.stdout.readline().strip() == "holding"     # the service let go of the file for it
        with TestClient(app) as c:
            r = c.get("/api/batches", headers=auth(tokens["admin"]))
            assert r.status_code == 503 and r.headers["Retry-After"] == "5"
            assert "has held its lock" in r.json()["detail"] and str(tmp_path) not in r.text
            holder.stdin.write("done\n")
            holder.stdin.flush()
            holder.wait(60)
            assert c.get("/api/batches", headers=auth(tokens["admin"])).status_code == 200
    finally:
        holder.kill()
        holder.wait(30)
