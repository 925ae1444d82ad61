"""POST /predict: scores with online features, logs every prediction, answers bad input with 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loopml.serving.factory import build_predictor
from loopml.serving.http import create_app
from loopml.serving.predictionlog import PredictionLog

GOOD = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "scheduled_departure": "2013-03-01T14:15:00Z", "distance": 1400, "flight_id": "2013-03-01:UA:1545:EWR"}


@pytest.fixture(scope="module")
def client(flights_project, served_ws):
    predictor = build_predictor(flights_project, served_ws)
    with TestClient(create_app(predictor)) as c:
        yield c, predictor


def test_predict_returns_score_version_request_id_and_logs_it(client, served_ws):
    c, predictor = client
    r = c.post("/predict", json=GOOD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["score"] < 1
    assert body["model_version"] == predictor.version
    assert r.headers["x-request-id"] == body["request_id"]
    assert body["at"].startswith("2013-03-01T12:15:00")  # scheduled departure - 2 h
    assert body["features"]["origin_departures_3h"] > 0  # online state was materialised up to 12:00
    predictor.log.close()
    logged = PredictionLog(served_ws.predictions).read_predictions()
    row = logged[logged["request_id"] == body["request_id"]]
    assert len(row) == 1 and row.iloc[0]["entity_id"] == GOOD["flight_id"]
    assert row.iloc[0]["score"] == pytest.approx(body["score"])


@pytest.mark.parametrize("field", ["carrier", "scheduled_departure", "distance"])
def test_missing_field_is_422_naming_it_and_server_keeps_serving(client, field):
    c, _ = client
    bad = {k: v for k, v in GOOD.items() if k != field}
    r = c.post("/predict", json=bad)
    assert r.status_code == 422
    assert field in r.json()["error"] and "missing" in r.json()["error"]
    assert c.post("/predict", json=GOOD).status_code == 200


@pytest.mark.parametrize(("patch", "words"), [
    ({"scheduled_departure": "yesterday"}, ["scheduled_departure", "ISO-8601"]),
    ({"distance": "far"}, ["distance", "number"]),
    ({"flight": 1.5}, ["flight", "integer"]),
    ({"carrier": 7}, ["carrier", "string"]),
    ({"at": "soon"}, ["at", "ISO-8601"]),
])
def test_bad_values_are_422_with_the_field_and_what_was_expected(client, patch, words):
    c, _ = client
    r = c.post("/predict", json={**GOOD, **patch})
    assert r.status_code == 422, r.text
    for w in words:
        assert w in r.json()["error"]


def test_non_json_body_is_422(client):
    c, _ = client
    r = c.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    assert c.get("/health").json()["status"] == "ok"


def test_unknown_carrier_and_missing_tailnum_still_score(client):
    c, _ = client
    r = c.post("/predict", json={**GOOD, "carrier": "ZZ", "tailnum": None})
    assert r.status_code == 200
    assert r.json()["features"]["plane_prev_arr_delay"] is None
