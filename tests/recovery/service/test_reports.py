"""The plant reports in the service: a partner's token sees its own factories and
the batches it may read, nothing of the others'."""

from .conftest import auth


def test_health_report_shows_a_partner_only_its_factories(client, tokens):
    everyone = client.get("/api/reports/health", headers=auth(tokens["admin"])).json()
    assert {f["factory"] for f in everyone["factories"]} == {"FA1", "FA2", "FB1"}
    a = client.get("/api/reports/health", headers=auth(tokens["viewer_a"])).json()
    b = client.get("/api/reports/health", headers=auth(tokens["eng_b"])).json()
    assert a["factories"] and {f["partner"] for f in a["factories"]} == {"A"}
    assert b["factories"] and {f["factory"] for f in b["factories"]} == {"FB1"}
    assert {f["fault"] for f in b["faults"]} == {"chrome_bath_current_drop"}
    for f in a["factories"]:
        assert f["offset_low"] <= f["offset"] <= f["offset_high"]
    assert client.get("/api/reports/health", headers=auth(tokens["eng_b"]),
                      params={"gate_level": 1.5}).status_code == 422


def test_track_record_shows_only_readable_batches(client, tokens):
    # B-1 is partner A's alone (its worn die flags it before B's steps); B-3 runs to the end
    # viewing a recommendation logs it (decisions are left to the other tests of this shared store)
    assert client.get("/api/batches/B-1/recommendation", headers=auth(tokens["eng_a"])).status_code == 200
    assert client.get("/api/batches/B-1", headers=auth(tokens["eng_b"])).status_code == 404
    a = client.get("/api/reports/track-record", headers=auth(tokens["eng_a"])).json()
    b = client.get("/api/reports/track-record", headers=auth(tokens["eng_b"])).json()
    admin = client.get("/api/reports/track-record", headers=auth(tokens["admin"])).json()
    ids = lambda rep: {row["batch_id"] for row in rep["batches"]}  # noqa: E731
    assert "B-1" in ids(a) and "B-1" in ids(admin) and "B-1" not in ids(b)
    assert b["n_recommendations"] < admin["n_recommendations"]
    assert set(admin) >= {"n_recommendations", "n_decisions", "n_outcomes", "agreement", "followed",
                          "not_followed", "calibration", "by_month"}
    assert client.get("/api/reports/track-record", headers=auth(tokens["eng_a"]),
                      params={"since": "yesterday"}).status_code == 422
    future = client.get("/api/reports/track-record", headers=auth(tokens["admin"]),
                        params={"since": "2999-01-01"}).json()
    assert future["n_recommendations"] == 0 and future["by_month"] == []
