"""The v2 raw-features model (``<name>-features``): the served model scored on feature tensors the client
sends (no online lookup), declared in its metadata, logged like every prediction, checked like every input."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import tritonclient.http as tc
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from loopml.errors import SchemaError
from loopml.serving.factory import build_predictor
from loopml.serving.http import create_app
from loopml.serving.predictionlog import PredictionLog

GOOD = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "sched_dep": "2013-03-01T14:15:00Z"}


@pytest.fixture(scope="module")
def served(flights_project, served_ws):
    """(client, predictor, the features /predict served for GOOD and its score)."""
    predictor = build_predictor(flights_project, served_ws)
    with TestClient(create_app(predictor)) as c:
        plain = c.post("/predict", json=GOOD).json()
        yield c, predictor, plain["features"], plain["score"]


def _tensors(model, rows: list[dict]) -> list[dict]:
    """One JSON tensor per model feature, as a v2 client would send the rows."""
    out = []
    for f in model.features:
        if f in model.categories:
            out.append({"name": f, "datatype": "BYTES", "shape": [len(rows)], "data": [r[f] or "" for r in rows]})
        else:
            out.append({"name": f, "datatype": "FP64", "shape": [len(rows)], "data": [r[f] for r in rows]})
    return out


def test_metadata_declares_one_tensor_per_model_feature(served):
    c, predictor, _, _ = served
    meta = c.get("/v2/models/flights-features").json()
    model = predictor.model
    assert meta["name"] == "flights-features" and meta["versions"] == [str(predictor.version)]
    assert [i["name"] for i in meta["inputs"]] == model.features
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        f: "BYTES" if f in model.categories else "FP64" for f in model.features}
    assert meta["outputs"] == [{"name": "score", "datatype": "FP64", "shape": [-1]}]
    assert c.get("/v2/models/flights-features/ready").json() == {"name": "flights-features", "ready": True}
    assert c.get(f"/v2/models/flights-features/versions/{predictor.version}").status_code == 200
    assert c.get("/v2/models/flights-features/versions/999").status_code == 404


def test_raw_features_score_as_the_entity_keyed_request_that_served_them_and_are_logged(served, served_ws):
    c, predictor, features, score = served
    r = c.post("/v2/models/flights-features/infer", json={"id": "f-1", "inputs": _tensors(predictor.model,
                                                                                           [features, features])})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "flights-features" and body["id"] == "f-1"
    assert body["outputs"][0]["data"] == pytest.approx([score, score], abs=1e-12)
    ids = body["parameters"]["request_ids"]
    predictor.log.close()
    logged = PredictionLog(served_ws.predictions).read_predictions().set_index("request_id")
    for rid in ids:
        assert logged.loc[rid, "score"] == pytest.approx(score, abs=1e-12)
        assert logged.loc[rid, "input"] == "features" and logged.loc[rid, "model_version"] == predictor.version


def test_missing_values_are_null_or_empty_text_and_score_like_the_online_path(served):
    c, predictor, _, _ = served
    model = predictor.model
    empty = {f: None for f in model.features}
    r = c.post("/v2/models/flights-features/infer", json={"inputs": _tensors(model, [empty])})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == pytest.approx([float(model.predict_rows([{}])[0])], abs=1e-12)


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda ins: [{**i, "datatype": "BYTES", "data": ["1"]} if i["datatype"] == "FP64" else i for i in ins],
     ["numeric feature", "FP64", "'BYTES'"]),
    (lambda ins: [{**i, "datatype": "FP64", "data": [1.0]} if i["datatype"] == "BYTES" else i for i in ins],
     ["categorical feature", "BYTES", "'FP64'"]),
    (lambda ins: [{**i, "data": ["x"]} if i["datatype"] == "FP64" else i for i in ins], ["element 0", "'x'"]),
    (lambda ins: [{**i, "shape": [1, 1]} for i in ins], ["shape [N]", "[1, 1]"]),
    (lambda ins: ins[1:], ["missing"]),
    (lambda ins: [*ins, {"name": "bogus", "datatype": "FP64", "shape": [1], "data": [1.0]}], ["'bogus'", "features"]),
])
def test_bad_feature_tensors_are_4xx_in_the_v2_error_shape_naming_the_input(served, mutate, words):
    c, predictor, features, _ = served
    inputs = mutate(_tensors(predictor.model, [features]))
    r = c.post("/v2/models/flights-features/infer", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert set(r.json()) >= {"error"}
    for w in words:
        assert w in r.json()["error"]
    assert "x-request-id" in r.headers


def test_entity_keyed_model_is_unchanged_and_other_names_are_404(served):
    c, _, _, score = served
    v2 = [{"name": k, "datatype": "BYTES", "shape": [1], "data": [str(v)]} for k, v in GOOD.items()]
    r = c.post("/v2/models/flights/infer", json={"inputs": v2})
    assert r.status_code == 200 and r.json()["model_name"] == "flights"
    assert r.json()["outputs"][0]["data"] == pytest.approx([score], abs=1e-12)
    r = c.post("/v2/models/flights-featurez/infer", json={"inputs": v2})
    assert r.status_code == 404 and "flights-features" in r.json()["error"]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_round_trip_with_fp32_and_bytes_feature_tensors(flights_project, served_ws, serve_live, served,
                                                                     binary):
    _, _, features, score = served
    predictor = build_predictor(flights_project, served_ws)
    model = predictor.model
    with serve_live(create_app(predictor)) as url:
        client = tc.InferenceServerClient(url=url)
        meta = client.get_model_metadata("flights-features")
        inputs = []
        for i in meta["inputs"]:
            f = i["name"]
            if f in model.categories:
                t = tc.InferInput(f, [1], "BYTES")
                t.set_data_from_numpy(np.array([(features[f] or "").encode()], dtype=np.object_), binary_data=binary)
            else:  # FP32, as many clients send: the server widens it (ONNX scores float32 inputs anyway)
                t = tc.InferInput(f, [1], "FP32")
                value = np.nan if features[f] is None else features[f]
                t.set_data_from_numpy(np.array([value], dtype=np.float32), binary_data=binary)
            inputs.append(t)
        # within the ONNX export's verified tolerance of the float64 row (exact when ONNX serves: it scores float32)
        got = client.infer("flights-features", inputs).as_numpy("score")
        assert got.dtype == np.float64 and got.tolist() == pytest.approx([score], abs=1e-5)
        category = next(i for i, t in enumerate(inputs) if t.name() in model.categories)
        bad = list(inputs)
        bad[category] = tc.InferInput(inputs[category].name(), [1], "INT64")
        bad[category].set_data_from_numpy(np.array([1], dtype=np.int64), binary_data=binary)
        with pytest.raises(InferenceServerException) as e:
            client.infer("flights-features", bad)
        assert e.value.status() == "422" and f"input {inputs[category].name()!r}" in e.value.message()
        assert "'INT64'" in e.value.message()
        client.close()


def test_a_body_streamed_past_the_size_limit_is_refused_without_reading_it_all(flights_project, served_ws):
    import asyncio

    app = create_app(build_predictor(flights_project, served_ws), max_body_bytes=50_000)
    reads, sent = [], []

    async def receive():  # no content-length: the limit can only be enforced while reading
        reads.append(1)
        return {"type": "http.request", "body": b" " * 10_000, "more_body": len(reads) < 100}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type", b"application/json")],
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"exceeds the limit of 50000" in sent[1]["body"]  # as with a Content-Length
    assert len(reads) == 6  # 60,000 bytes read of 1,000,000 sent


def test_gc_is_frozen_while_the_app_runs_and_unfrozen_after(flights_project, served_ws):
    predictor = build_predictor(flights_project, served_ws)
    gc.unfreeze()
    with TestClient(create_app(predictor)):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(predictor, freeze_gc=False)):
        assert gc.get_freeze_count() == 0


def test_encode_rows_names_a_numeric_feature_given_text(served):
    _, predictor, features, _ = served
    model = predictor.model
    numeric = next(f for f in model.features if f not in model.categories)
    with pytest.raises(SchemaError, match=f"feature '{numeric}' must be a number; got 'abc'"):
        model.predict_rows([{**features, numeric: "abc"}])
