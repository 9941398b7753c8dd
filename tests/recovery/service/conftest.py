"""A store with a few batches of the small process, tokens, and the service on the small model."""

import pytest

from recovery.data.ingest import ingest
from recovery.data.store import open_store
from recovery.service.auth import create_token
from simulators.process import Simulator
from simulators.schema import observations_frame

# (batch number, forced fault); each batch is cut at the inspection that first flags it
BATCHES = [(1, "worn_drawing_die"), (2, "furnace_over_temperature"), (3, None), (4, "worn_drawing_die")]


def flagged_history(sim, n, fault, seed):
    """Step data of batch B-n up to its first flagged inspection (all of it if never flagged)."""
    cond = sim.sample_conditions(1, seed, faults=False, force_fault=fault, first_id=n)
    res = sim.simulate(1, seed, conditions=cond)
    flags = res.flags[0]
    upto = sim.process.inspections[int(flags.argmax())].step if flags.any() else sim.process.n_steps
    return observations_frame(sim.process, cond, res.obs, res.plan, upto_step=upto)


TOKENS = (("admin", "*", "admin"), ("eng_a", "A", "engineer"), ("viewer_a", "A", "partner"),
          ("eng_b", "B", "engineer"))


def build_world(d, batches=BATCHES, token_spec=TOKENS):
    """(store_url, data_dir, tokens) of a DuckDB store in ``d`` with ``batches`` and ``token_spec`` tokens."""
    import pandas as pd

    url = f"duckdb://{d / 'store.duckdb'}"
    sim = Simulator("small")
    hist = pd.concat([flagged_history(sim, n, f, 40 + n) for n, f in batches])
    src = d / "history.parquet"
    hist.to_parquet(src, index=False)
    with open_store(url) as st:
        res = ingest(src, store=st, process="small", quarantine=d / "q.csv")
        assert res.rejected == 0
        tokens = {}
        for name, partner, role in token_spec:
            tokens[name] = create_token(st, partner=partner, role=role, name=name)[1]
    return url, d / "data", tokens


@pytest.fixture(scope="session")
def service_world(small_model, tmp_path_factory):
    """(store_url, model_dir, data_dir, tokens): tokens by name -> token string."""
    url, data_dir, tokens = build_world(tmp_path_factory.mktemp("service"))
    return url, small_model[1], data_dir, tokens


@pytest.fixture(scope="session")
def app(service_world):
    from recovery.service.app import create_app

    url, model_dir, data_dir, _ = service_world
    return create_app(url, model_dir, data_dir=data_dir)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def tokens(service_world):
    return service_world[3]


def auth(token):
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """The app on a real uvicorn server in a thread, on a free localhost port."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def live(app):
    with LiveServer(app) as server:
        yield server
