"""The service's GET /api/batches/{id}/measure: the top candidates beside the recommendation."""

import pytest

from tests.recovery.service.conftest import auth, build_world

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def client_tokens(small_model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from recovery.service.app import create_app

    url, data_dir, tokens = build_world(tmp_path_factory.mktemp("measure"),
                                        [(1, "worn_drawing_die"), (3, None)])
    app = create_app(url, small_model[1], data_dir=data_dir)
    with TestClient(app) as client:
        yield app, client, tokens


def test_a_flagged_batch_gets_its_top_three_measurements(client_tokens):
    app, client, tokens = client_tokens
    r = client.get("/api/batches/B-1/measure", headers=auth(tokens["admin"]))
    assert r.status_code == 200
    body = r.json()
    m = body["measure"]
    assert m["batch_id"] == "B-1" and m["step"] == 3 and m["currency"] == "EUR"
    assert 1 <= len(m["candidates"]) <= 3
    nets = [c["evsi"] - c["cost"] for c in m["candidates"]]
    assert nets == sorted(nets, reverse=True)
    # the same rows give the same answer, from the cache
    again = client.get("/api/batches/B-1/measure?top=1", headers=auth(tokens["admin"])).json()
    assert again["input_hash"] == body["input_hash"]
    assert again["measure"]["candidates"] == m["candidates"][:1]


def test_a_batch_with_nothing_to_decide_says_why(client_tokens):
    app, client, tokens = client_tokens
    body = client.get("/api/batches/B-3/measure", headers=auth(tokens["admin"])).json()
    assert body["measure"] is None and body["message"]
