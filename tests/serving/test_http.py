"""POST /predict: scores with online features, logs every prediction, answers bad input with 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loopml.serving.factory import build_predictor
from loopml.serving.http import create_app
from loopml.serving.predictionlog import PredictionLog

GOOD = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "sched_dep": "2013-03-01T14:15:00Z", "distance": 1400, "flight_id": "2013-03-01:UA:1545:EWR"}


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


@pytest.mark.parametrize("field", ["carrier", "sched_dep", "origin"])
def test_missing_field_is_422_naming_it_and_server_keeps_serving(client, field):
    c, _ = client
    bad = {k: v for k, v in GOOD.items() if k != field}
    r = c.post("/predict", json=bad)
    assert r.status_code == 422
    assert field in r.json()["error"] and "missing" in r.json()["error"]
    assert c.post("/predict", json=GOOD).status_code == 200


@pytest.mark.parametrize(("patch", "words"), [
    ({"sched_dep": "yesterday"}, ["sched_dep", "ISO-8601"]),
    ({"tailnum": 5}, ["tailnum", "string"]),
    ({"flight": 1.5}, ["flight", "integer"]),
    ({"carrier": 7}, ["carrier", "string"]),
    ({"at": "soon"}, ["at", "ISO-8601"]),
    ({"sched_dep": "0001-01-01T00:30:00Z"}, ["sched_dep", "out of range"]),
    # valid prediction time, but the local hour is before year 1 (found by schemathesis)
    ({"sched_dep": "0001-01-01T02:30:00Z"}, ["sched_dep_hour_local", "OverflowError"]),
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


V2_INPUTS = [{"name": k, "datatype": "BYTES", "shape": [2], "data": [str(v), str(v)]}
             for k, v in GOOD.items() if k not in ("flight_id", "distance")]


def test_v2_metadata_declares_bytes_inputs_and_fp64_score(client, flights_project):
    c, predictor = client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2/models/flights").json()
    assert meta["name"] == "flights" and meta["versions"] == [str(predictor.version)]
    assert [i["name"] for i in meta["inputs"]] == list(flights_project.spine.request_fields)
    assert all(i["datatype"] == "BYTES" and i["shape"] == [-1] for i in meta["inputs"])
    assert meta["outputs"] == [{"name": "score", "datatype": "FP64", "shape": [-1]}]
    assert c.get("/v2/models/flights/ready").json()["ready"] is True
    assert c.get("/v2/models/nope").status_code == 404


def test_v2_infer_returns_one_score_per_row_equal_to_predict(client):
    c, predictor = client
    r = c.post("/v2/models/flights/infer", json={"id": "abc", "inputs": V2_INPUTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "abc" and body["model_name"] == "flights"
    out = body["outputs"][0]
    assert out["name"] == "score" and out["datatype"] == "FP64" and out["shape"] == [2]
    plain = c.post("/predict", json=GOOD).json()["score"]
    assert out["data"] == pytest.approx([plain, plain], abs=1e-12)
    r = c.post(f"/v2/models/flights/versions/{predictor.version}/infer", json={"inputs": V2_INPUTS})
    assert r.status_code == 200


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda ins: [{**ins[0], "datatype": "FP32"}, *ins[1:]], ["BYTES"]),
    (lambda ins: [{**ins[0], "shape": [3]}, *ins[1:]], ["shape"]),
    (lambda ins: ins[1:], ["missing", "carrier"]),
    (lambda ins: [*ins, {"name": "bogus", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}], ["bogus"]),
    (lambda ins: [{**i, "data": ["x", "y"]} if i["name"] == "flight" else i for i in ins], ["flight", "integers"]),
])
def test_v2_bad_tensors_get_error_shape_and_4xx(client, mutate, words):
    c, _ = client
    r = c.post("/v2/models/flights/infer", json={"inputs": mutate(V2_INPUTS)})
    assert 400 <= r.status_code < 500
    assert set(r.json()) >= {"error"}
    for w in words:
        assert w in r.json()["error"]


def test_metrics_endpoint_counts_requests_and_errors(client):
    c, predictor = client
    c.post("/predict", json=GOOD)
    c.post("/predict", json={})
    text = c.get("/metrics").text
    assert 'loopml_requests_total{endpoint="/predict"' in text
    assert 'status="422"' in text and 'loopml_errors_total{type="SchemaError"}' in text
    assert "loopml_request_latency_seconds_bucket" in text and "loopml_feature_lookup_seconds" in text
    assert f"loopml_model_version {float(predictor.version)}" in text


def test_oversized_body_is_413(client):
    c, _ = client
    r = c.post("/predict", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_a_client_request_id_is_kept_only_if_it_is_a_plain_id(client):
    c, _ = client
    r = c.post("/predict", json=GOOD, headers={"x-request-id": "order-42:retry.1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == r.json()["request_id"] == "order-42:retry.1"
    for bad in ("x" * 60_000, "a b", "<script>"):
        r = c.post("/predict", json=GOOD, headers={"x-request-id": bad})
        rid = r.json()["request_id"]
        assert r.status_code == 200 and rid != bad and len(rid) == 32 and r.headers["x-request-id"] == rid


def test_a_405_names_the_allowed_methods(client):
    c, _ = client
    r = c.get("/predict")
    assert r.status_code == 405 and "POST" in r.headers.get("allow", "") and "error" in r.json()


def test_a_non_ascii_digit_in_a_length_header_is_a_4xx_not_a_500(client):
    c, _ = client
    r = c.post("/v2/models/flights/infer", content=b"{}", headers={
        "content-type": "application/octet-stream", "inference-header-content-length": "\u00b2".encode("latin-1")})
    assert 400 <= r.status_code < 500 and "Inference-Header-Content-Length" in r.json()["error"]


def test_a_client_that_leaves_mid_body_is_not_counted_as_a_server_error(flights_project, served_ws):
    from tests.serving.conftest import leave_mid_body

    app = create_app(build_predictor(flights_project, served_ws))
    assert leave_mid_body(app, "/predict", b'{"carrier": "UA"') == []  # nobody to answer
    with TestClient(app) as c:
        text = c.get("/metrics").text
    assert 'type="InternalError"' not in text and 'status="500"' not in text


def test_admin_load_needs_token_and_swaps_verified_version(flights_project, served_ws):
    from loopml.registry import ArtifactStore, Registry
    from loopml.serving.factory import model_loader

    reg = Registry(served_ws.registry_url, ArtifactStore(served_ws.artifacts))
    mv = reg.get("flights", "champion")
    blob = reg.artifacts.get(mv.artifact_sha256)
    v2 = reg.register("flights", blob, feature_hash=mv.feature_hash, metrics={})
    predictor = build_predictor(flights_project, served_ws)
    app = create_app(predictor, load_model=model_loader(flights_project, served_ws), admin_token="s3cret")
    with TestClient(app) as c:
        url = "/admin/models/flights/load"
        assert c.post(url, json={"version": v2.version}).status_code == 401
        assert c.post(url, json={"version": v2.version}, headers={"authorization": "Bearer nope"}).status_code == 401
        r = c.post(url, json={"version": 99}, headers={"authorization": "Bearer s3cret"})
        assert r.status_code == 404 and predictor.version == mv.version
        r = c.post(url, json={"version": v2.version}, headers={"authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["model_version"] == v2.version
        assert c.post("/predict", json=GOOD).json()["model_version"] == v2.version
    no_token = create_app(build_predictor(flights_project, served_ws), load_model=model_loader(flights_project, served_ws))
    with TestClient(no_token) as c:
        r = c.post("/admin/models/flights/load", json={}, headers={"authorization": "Bearer "})
        assert r.status_code == 401 and "disabled" in r.json()["error"]


def test_a_bug_in_scoring_is_a_500_in_the_error_shape_with_the_request_id(flights_project, served_ws, monkeypatch):
    predictor = build_predictor(flights_project, served_ws)

    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(predictor, "apredict_many", broken)
    with TestClient(create_app(predictor), raise_server_exceptions=False) as c:
        r = c.post("/predict", json=GOOD, headers={"x-request-id": "bug-1"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "bug-1"
        assert r.json()["type"] == "InternalError" and "bug-1" in r.json()["error"]
        assert 'loopml_errors_total{type="InternalError"} 1.0' in c.get("/metrics").text
        assert c.get("/health").status_code == 200  # and it keeps serving


def test_a_failing_log_disk_is_a_503_and_nothing_is_acknowledged(flights_project, served_ws, tmp_path, monkeypatch):
    from loopml.serving import predictionlog

    def no_space(fd):
        raise OSError(28, "No space left on device")

    predictor = build_predictor(flights_project, served_ws)
    predictor.log = PredictionLog(tmp_path)
    monkeypatch.setattr(predictionlog.os, "fsync", no_space)
    with TestClient(create_app(predictor)) as c:
        r = c.post("/predict", json=GOOD)
        assert r.status_code == 503 and r.json()["type"] == "PredictionLogError"
        assert "No space left" in r.json()["error"] and "score" not in r.json()


def test_scoring_paths_with_other_methods_or_models_go_through_the_router(client):
    c, _ = client
    assert c.get("/predict").status_code == 405
    r = c.post("/v2/models/other/infer", json={"inputs": []})
    assert r.status_code == 404 and "not served here" in r.json()["error"] and "x-request-id" in r.headers


def test_predict_response_is_the_same_json_text_starlette_would_render(client):
    from starlette.responses import JSONResponse

    c, _ = client
    r = c.post("/predict", json=GOOD)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == JSONResponse(r.json()).body


def test_request_ids_are_unique_32_hex_digits_and_a_forked_process_gets_its_own():
    import os
    import re

    from loopml.serving.predictor import new_request_id

    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert re.fullmatch("[0-9a-f]{32}", child) and child[:16] != ids[0][:16] and child not in ids


def test_predict_error_answers_keep_the_request_id_and_the_error_shape(client):
    c, _ = client
    r = c.post("/predict", content=b"not json", headers={"x-request-id": "bad-1", "content-type": "application/json"})
    assert r.status_code == 422 and r.headers["x-request-id"] == "bad-1"
    assert r.headers["content-type"] == "application/json" and int(r.headers["content-length"]) == len(r.content)
    assert r.json()["type"] == "SchemaError" and "JSON" in r.json()["error"]
