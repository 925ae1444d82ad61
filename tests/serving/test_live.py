"""A live server driven by real clients: tritonclient (JSON and binary tensors), concurrent load during hot
swaps and champion changes, schemathesis over the OpenAPI document, and structured JSON logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import tritonclient.http as tc
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from loopml.registry import ArtifactStore, Registry
from loopml.serving.factory import build_predictor, model_loader
from loopml.serving.http import create_app
from loopml.serving.logs import configure_json_logging

ROWS = [
    {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "sched_dep": "2013-03-01T14:15:00Z"},
    {"carrier": "AA", "flight": 1141, "origin": "JFK", "dest": "MIA", "tailnum": "N619AA", "sched_dep": "2013-03-01T13:40:00Z"},
    {"carrier": "B6", "flight": 725, "origin": "JFK", "dest": "BQN", "tailnum": "N804JB", "sched_dep": "2013-03-01T18:00:00Z"},
]
FIELDS = list(ROWS[0])
V2_JSON = {"inputs": [{"name": f, "datatype": "BYTES", "shape": [1], "data": [str(ROWS[0][f])]} for f in FIELDS]}


@pytest.fixture(scope="module")
def registry(served_ws):
    return Registry(served_ws.registry_url, ArtifactStore(served_ws.artifacts))


@pytest.fixture(scope="module")
def versions(registry):
    """(serving champion, an equal copy, one that cannot load, one that fails its smoke test)."""
    champ = registry.get("flights", "champion")
    blob = registry.artifacts.get(champ.artifact_sha256)
    copy = registry.register("flights", blob, feature_hash=champ.feature_hash, metrics={})
    garbage = registry.register("flights", b"this is not a model", feature_hash=champ.feature_hash, metrics={})
    doc = json.loads(blob)
    doc["features"] = [*doc["features"][:-1], "feature_nobody_computes"]
    alien = registry.register("flights", json.dumps(doc).encode(), feature_hash=champ.feature_hash, metrics={})
    yield champ.version, copy.version, garbage.version, alien.version
    registry.promote("flights", champ.version)  # leave the session's champion as it was


def _inputs(binary: bool) -> list[tc.InferInput]:
    out = []
    for f in FIELDS:
        arr = np.array([str(r[f]).encode() for r in ROWS], dtype=np.object_)
        t = tc.InferInput(f, [len(ROWS)], "BYTES")
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


@pytest.fixture(scope="module")
def expected(flights_project, served_ws):
    predictor = build_predictor(flights_project, served_ws)
    with TestClient(create_app(predictor)) as c:
        return [c.post("/predict", json=r).json()["score"] for r in ROWS]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_tritonclient_round_trip_equals_plain_predict(flights_project, served_ws, serve_live, expected,
                                                      binary_in, binary_out):
    predictor = build_predictor(flights_project, served_ws)
    with serve_live(create_app(predictor)) as url:
        client = tc.InferenceServerClient(url=url)
        assert client.is_server_live() and client.is_model_ready("flights")
        meta = client.get_model_metadata("flights")
        assert [i["name"] for i in meta["inputs"]] == FIELDS and meta["outputs"][0]["datatype"] == "FP64"
        # None: no outputs requested, so tritonclient asks for every output in binary (binary_data_output)
        outputs = None if binary_out is None else [tc.InferRequestedOutput("score", binary_data=binary_out)]
        result = client.infer("flights", _inputs(binary_in), outputs=outputs, request_id="r-1")
        scores = result.as_numpy("score")
        assert scores.dtype == np.float64 and scores.shape == (len(ROWS),)
        assert scores.tolist() == pytest.approx(expected, abs=1e-12)
        response = result.get_response()
        assert response["id"] == "r-1" and response["model_version"] == str(predictor.version)
        assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == (binary_out is not False)
        versioned = client.infer("flights", _inputs(binary_in), model_version=str(predictor.version))
        assert versioned.as_numpy("score").tolist() == pytest.approx(expected, abs=1e-12)
        client.close()


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(("make", "words"), [
    (lambda b: tc.InferInput("carrier", [1], "INT64"), ["'carrier'", "BYTES", "'INT64'"]),
    (lambda b: tc.InferInput("carrier", [1, 1], "BYTES"), ["'carrier'", "shape [N]", "[1, 1]"]),
])
def test_tritonclient_raises_the_servers_v2_error_for_bad_datatype_or_shape(flights_project, served_ws, serve_live,
                                                                            binary, make, words):
    with serve_live(create_app(build_predictor(flights_project, served_ws))) as url:
        client = tc.InferenceServerClient(url=url)
        bad = make(binary)
        value = np.array([5], dtype=np.int64) if bad.datatype() == "INT64" else np.array([[b"UA"]], dtype=np.object_)
        bad.set_data_from_numpy(value.reshape(bad.shape()), binary_data=binary)
        inputs = [bad, *_inputs(binary)[1:]]
        for t in inputs[1:]:  # one row everywhere, so only the bad input is wrong
            t.set_shape([1])
            t.set_data_from_numpy(np.array([str(ROWS[0][t.name()]).encode()], dtype=np.object_), binary_data=binary)
        with pytest.raises(InferenceServerException) as e:
            client.infer("flights", inputs)
        assert e.value.status() == "422"
        for w in words:
            assert w in e.value.message()
        assert client.infer("flights", _inputs(binary)).as_numpy("score").shape == (len(ROWS),)  # still serving
        client.close()


def _load(flights_project, served_ws, **kw):
    predictor = build_predictor(flights_project, served_ws)
    return predictor, create_app(predictor, load_model=model_loader(flights_project, served_ws), **kw)


class Load:
    """Concurrent clients posting to /predict and the v2 endpoint until stopped; records versions and failures."""

    def __init__(self, url: str, n: int = 6) -> None:
        self.url, self.stop = f"http://{url}", threading.Event()
        self.versions: list[int] = []
        self.per_client: list[list[int]] = [[] for _ in range(n)]  # each client's versions, in its own order
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self.stop.is_set():
                try:
                    if i % 2:
                        r = c.post("/predict", json=ROWS[i % 3])
                        v = r.json().get("model_version")
                    else:
                        r = c.post("/v2/models/flights/infer", json=V2_JSON)
                        v = r.json().get("model_version")
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code}: {r.text}")
                else:
                    self.versions.append(int(v))
                    self.per_client[i].append(int(v))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def mark(self) -> list[int]:
        """How many answers each client has had so far."""
        return [len(v) for v in self.per_client]

    def served_after(self, mark: list[int]) -> set[int]:
        """Versions each client was served after ``mark``, skipping its first answer after it: that request may
        have been scored by the old version before the swap. A client's requests are sequential, so any later
        answer was scored after the swap."""
        return {v for seen, answers in zip(mark, self.per_client, strict=True) for v in answers[seen + 1:]}

    def answered_since(self, mark: list[int], k: int) -> bool:
        return all(len(v) > seen + k for seen, v in zip(mark, self.per_client, strict=True))


def _wait(cond: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_admin_hot_swap_under_load_fails_no_request_and_rejects_bad_versions(flights_project, served_ws, serve_live,
                                                                             versions):
    champ, copy, garbage, alien = versions
    predictor, app = _load(flights_project, served_ws, admin_token="s3cret")
    auth = {"authorization": "Bearer s3cret"}
    with serve_live(app) as url, Load(url) as load, httpx.Client(base_url=f"http://{url}", timeout=60) as admin:
        assert _wait(lambda: len(load.versions) > 10)
        for target in [copy, champ, copy, champ]:
            r = admin.post("/admin/models/flights/load", json={"version": target}, headers=auth)
            assert r.status_code == 200, r.text
            mark = load.mark()
            assert _wait(lambda: load.answered_since(mark, 3))
            assert load.served_after(mark) == {target}
            for bad, words in [(garbage, ["failed to load"]), (alien, ["smoke test", "feature_nobody_computes"])]:
                r = admin.post("/admin/models/flights/load", json={"version": bad}, headers=auth)
                assert r.status_code == 409 and all(w in r.json()["error"] for w in words), r.text
                assert predictor.version == target
    assert load.failures == []
    assert set(load.versions) == {champ, copy}
    assert len(load.versions) > 80


def test_promote_and_rollback_reach_the_running_server_under_load(flights_project, served_ws, serve_live, registry,
                                                                 versions):
    champ, copy, garbage, _ = versions
    registry.promote("flights", champ)
    predictor, app = _load(flights_project, served_ws,
                           watch_champion=lambda: registry.resolve("flights", "champion"), watch_interval=0.05)
    with serve_live(app) as url, Load(url) as load:
        try:
            assert _wait(lambda: len(load.versions) > 10)
            registry.promote("flights", copy)
            assert _wait(lambda: predictor.version == copy)
            registry.rollback("flights")
            assert _wait(lambda: predictor.version == champ)
            registry.promote("flights", garbage)  # a champion that cannot load never replaces the serving one
            mark = load.mark()
            assert _wait(lambda: load.answered_since(mark, 6))
            assert predictor.version == champ and load.served_after(mark) == {champ}
        finally:
            registry.promote("flights", champ)  # later tests serve the champion, whatever happened here
    assert load.failures == []
    assert set(load.versions) == {champ, copy}


def test_schemathesis_finds_no_5xx_and_the_server_keeps_answering(flights_project, served_ws):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    predictor, app = _load(flights_project, served_ws, admin_token="s3cret")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {"/predict", "/v2/models/{model_name}/infer"} <= {op.path for op in operations}
    server_errors: list[str] = []
    for op in operations:
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} {case.body!r} -> "
                                     f"{response.status_code} {response.text[:300]}")
        check()
    assert server_errors == []
    with TestClient(app) as c:
        assert c.post("/predict", json=ROWS[0]).status_code == 200
        assert c.get("/v2/health/ready").json() == {"ready": True}


def test_each_request_is_one_json_log_line_with_its_id_version_path_status_and_latency(flights_project, served_ws):
    stream = io.StringIO()
    handler = configure_json_logging(logging.INFO, stream=stream)
    try:
        predictor = build_predictor(flights_project, served_ws)
        with TestClient(create_app(predictor)) as c:
            ok = c.post("/predict", json=ROWS[0], headers={"x-request-id": "req-ok"})
            bad = c.post("/predict", json={})
    finally:
        for name in ("loopml", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = {d["request_id"]: d for d in lines if d["logger"] == "loopml.serving.access"}
    assert access["req-ok"]["status"] == 200 and ok.headers["x-request-id"] == "req-ok"
    assert access["req-ok"]["path"] == "/predict" and access["req-ok"]["model_version"] == predictor.version
    assert access["req-ok"]["latency_ms"] > 0 and access["req-ok"]["level"] == "info"
    assert access[bad.headers["x-request-id"]]["status"] == 422
    assert all({"time", "level", "message"} <= set(d) for d in lines)


def test_importing_and_building_the_app_configures_no_logging():
    code = ("import logging; import loopml, loopml.serving.http, loopml.serving.logs; "
            "names = ['', 'loopml', 'loopml.serving.access', 'uvicorn']; "
            "print(sum(len(logging.getLogger(n).handlers) for n in names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


@pytest.mark.slow
def test_loopml_serve_writes_json_log_lines_with_request_ids(served_ws):
    import os
    import signal
    from pathlib import Path

    from tests.serving.conftest import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "loopml.cli", "serve", "--project", str(root / "examples" / "flights"), "--state",
         str(served_ws.root), "--port", str(port), "--log-level", "info", "--batch-window-ms", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait(lambda: server.poll() is not None or _up(url), 120), "server did not start"
        r = httpx.post(f"{url}/predict", json=ROWS[0], headers={"x-request-id": "cli-1"}, timeout=30)
        assert r.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [d for d in lines if d.get("request_id") == "cli-1"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/predict"
    assert {"time", "level", "model_version", "latency_ms"} <= set(access[0])


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
