"""The authorization matrix: every endpoint x role x batch ownership, in one table.

The callers are partner B's tokens (role ``partner`` and ``engineer``), an
admin token, a revoked token of partner B and no token at all. "own" is batch
B-2 (partner A's, handed to B), "foreign" is B-1 (partner A's only); "-" is an
endpoint without a batch (``/api/audit`` has both: without ``batch_id`` and
with one). An endpoint of the app's OpenAPI schema missing from the table
fails the test, so a new endpoint cannot go out without its row.

Statuses of authorized writes are the success codes: the test makes every
request valid (rows of B's step, a decision that supersedes the final one).
"""

import pytest

from simulators.process import Simulator

from .conftest import BATCHES, auth, build_world

pytestmark = pytest.mark.filterwarnings("ignore")

ROLES = ("partner", "engineer", "admin", "revoked", "none")
OWN, FOREIGN = "B-2", "B-1"

# (method, path): {ownership: statuses for ROLES}
MATRIX = {
    ("GET", "/health"):                                {"-": (200, 200, 200, 200, 200)},
    ("GET", "/api/model"):                             {"-": (200, 200, 200, 401, 401)},
    ("GET", "/api/batches"):                           {"-": (200, 200, 200, 401, 401)},
    ("GET", "/api/batches/{batch_id}"):                {"own": (200, 200, 200, 401, 401),
                                                        "foreign": (404, 404, 200, 401, 401)},
    ("GET", "/api/batches/{batch_id}/recommendation"): {"own": (200, 200, 200, 401, 401),
                                                        "foreign": (404, 404, 200, 401, 401)},
    ("GET", "/api/batches/{batch_id}/measure"):        {"own": (200, 200, 200, 401, 401),
                                                        "foreign": (404, 404, 200, 401, 401)},
    ("POST", "/api/batches/{batch_id}/steps"):         {"own": (200, 200, 200, 401, 401),
                                                        "foreign": (404, 404, 200, 401, 401)},
    ("POST", "/api/batches/{batch_id}/handover"):      {"own": (403, 200, 200, 401, 401),
                                                        "foreign": (403, 404, 200, 401, 401)},
    ("POST", "/api/batches/{batch_id}/decision"):      {"own": (403, 201, 201, 401, 401),
                                                        "foreign": (403, 404, 201, 401, 401)},
    ("GET", "/api/audit"):                             {"-": (200, 200, 200, 401, 401),
                                                        "own": (200, 200, 200, 401, 401),
                                                        "foreign": (404, 404, 200, 401, 401)},
    ("GET", "/api/decisions/export"):                  {"-": (403, 200, 200, 401, 401)},
    ("GET", "/api/reports/health"):                    {"-": (200, 200, 200, 401, 401)},
    ("GET", "/api/reports/track-record"):              {"-": (200, 200, 200, 401, 401)},
    ("POST", "/api/tokens"):                           {"-": (403, 403, 201, 401, 401)},
    ("DELETE", "/api/tokens/{token_id}"):              {"-": (403, 403, 200, 401, 401)},
}


@pytest.fixture(scope="module")
def world(small_model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from recovery.service.app import create_app

    spec = (("admin", "*", "admin"), ("engineer", "B", "engineer"), ("partner", "B", "partner"),
            ("revoked", "B", "engineer"), ("eng_a", "A", "engineer"))
    url, data_dir, tokens = build_world(tmp_path_factory.mktemp("matrix"), BATCHES[:2], spec)
    app = create_app(url, small_model[1], data_dir=data_dir)
    with TestClient(app) as client:
        assert client.post(f"/api/batches/{OWN}/handover", headers=auth(tokens["eng_a"]),
                           json={"partner": "B"}).status_code == 201
        rid = int(app.state.service.store.tokens().set_index("name").loc["revoked", "id"])
        assert client.delete(f"/api/tokens/{rid}", headers=auth(tokens["admin"])).status_code == 200
        yield app, client, tokens


def _rows(batch_n, fault, seed, partner, step):
    """Rows of batch B-n's simulation at ``step`` (run by ``partner``)."""
    import pandas as pd

    sim = Simulator("small")
    cond = sim.sample_conditions(1, seed, faults=False, force_fault=fault, first_id=batch_n)
    res = sim.simulate(1, seed, conditions=cond)
    from simulators.schema import observations_frame

    df = observations_frame(sim.process, cond, res.obs, res.plan, upto_step=step)
    df = df[(df["step"] == step) & (df["partner"] == partner)]
    assert len(df)
    out = []
    for r in df.to_dict("records"):
        out.append({**r, "timestamp": r["timestamp"].isoformat(),
                    "bar_id": None if pd.isna(r["bar_id"]) else int(r["bar_id"]),
                    "value": None if pd.isna(r["value"]) else float(r["value"])})
    return out


def _request(app, client, tokens, method, path, ctx, role):
    """The (method, url, json body) of one cell: valid, so only authorization decides."""
    svc = app.state.service
    batch = {"own": OWN, "foreign": FOREIGN}.get(ctx)
    url = path.replace("{batch_id}", batch or "")
    body = None
    if path.endswith("/steps"):
        # B's own step for B's batch; for the admin on the foreign batch, A's step (it stays A's only)
        rows = _rows(2, "furnace_over_temperature", 42, "B", 9) if ctx == "own" or role != "admin" \
            else _rows(1, "worn_drawing_die", 41, "A", 6)
        body = {"rows": [dict(r, batch_id=batch) for r in rows]}
    elif path.endswith("/handover"):
        body = {"partner": "A"}          # A owns both batches already: ownership stays as it is
    elif path.endswith("/decision"):
        rec = client.get(f"/api/batches/{batch}/recommendation", headers=auth(tokens["admin"])).json()
        heads = svc.store.final_decisions(svc.process.name, [batch])
        current = heads[heads["after_step"] == rec["recommendation"]["step"]]["decision_id"]
        body = {"decision": "reject", "comment": f"matrix {role}"}
        if len(current):
            body["supersedes"] = int(current.iloc[0])
    elif path == "/api/tokens":
        body = {"partner": "B", "role": "partner"}
    elif path == "/api/tokens/{token_id}":
        from recovery.service.auth import create_token

        with svc._db():
            tid = create_token(svc.store, partner="B", role="partner")[0]
        url = path.replace("{token_id}", str(tid))
    params = {"batch_id": batch} if path == "/api/audit" and batch else None
    return method, url, body, params


def test_every_endpoint_role_and_ownership_answers_as_the_table_says(world):
    app, client, tokens = world
    schema = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert schema - set(MATRIX) == set(), "endpoints without a row in MATRIX"
    assert set(MATRIX) - schema == set(), "rows in MATRIX for endpoints the app does not have"
    got, want = {}, {}
    for (method, path), by_ctx in MATRIX.items():
        for ctx, statuses in by_ctx.items():
            assert len(statuses) == len(ROLES)
            for role, expected in zip(ROLES, statuses):
                m, url, body, params = _request(app, client, tokens, method, path, ctx, role)
                headers = auth(tokens[role]) if role in tokens else {}
                r = client.request(m, url, headers=headers, json=body, params=params)
                got[(method, path, ctx, role)] = r.status_code
                want[(method, path, ctx, role)] = expected
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"(got, expected) where they differ: {wrong}"
    # 15 endpoints x 5 roles x 1 to 3 ownership cases: the size BENCHMARKS.md records
    assert (len(MATRIX), len(want)) == (15, 115)
    # the foreign batch stayed partner A's alone through all of it
    assert app.state.service._owners([FOREIGN])[FOREIGN] == {"A"}
