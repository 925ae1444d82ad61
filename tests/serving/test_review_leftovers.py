"""Leftovers of a serving review: the prediction log fsyncs the folder of a new segment, and a server
whose log has failed says it is not ready."""

from __future__ import annotations

import os
import pathlib

import pytest

from loopml.errors import PredictionLogError
from loopml.serving import predictionlog
from loopml.serving.predictionlog import PredictionLog
from tests.serving.conftest import leave_mid_body


def _pred(rid):
    return {"request_id": rid, "entity_id": f"e-{rid}", "model_version": 1, "at": "2013-03-01T00:00:00+00:00",
            "score": 0.5, "features": {"x": 1.0}}


class _FsyncRecorder:
    """Stand-in for os.fsync: records the path of every fsynced fd (files and folders), then fsyncs it."""

    def __init__(self, *, fail_on_folders: bool = False) -> None:
        self.paths: list[pathlib.Path] = []
        self.fail_on_folders = fail_on_folders
        self._fsync = os.fsync

    def __call__(self, fd: int) -> None:
        path = pathlib.Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self.fail_on_folders and path.is_dir():
            raise OSError(5, "Input/output error")
        self.paths.append(path)
        self._fsync(fd)

    def take(self) -> list[pathlib.Path]:
        paths, self.paths = self.paths, []
        return paths


@pytest.fixture
def fsyncs(monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name an fd's file")
    recorder = _FsyncRecorder()
    monkeypatch.setattr(predictionlog.os, "fsync", recorder)
    return recorder


def test_a_new_segment_and_new_folders_are_fsynced_in_their_parents_before_the_append_returns(tmp_path, fsyncs):
    root = tmp_path / "log"  # does not exist yet: the log makes it and predictions/ in it
    log = PredictionLog(root)
    log.log_predictions([_pred("a")])
    seg = next((root / "predictions").glob("seg-*.jsonl"))
    first = fsyncs.take()
    assert seg in first
    assert {p for p in first if p.is_dir()} == {root / "predictions", root, tmp_path}

    for i in range(3):  # appends to the same segment: the file only, no folder
        log.log_predictions([_pred(f"b{i}")])
    assert set(fsyncs.take()) == {seg}

    log.log_labels([{"request_id": "a", "label": 1.0, "label_time": "2013-03-02T00:00:00+00:00"}])
    labels = fsyncs.take()
    assert {p for p in labels if p.is_dir()} == {root / "labels", root, tmp_path}  # every new segment: its folder up
    log.log_labels([{"request_id": "b0", "label": 0.0, "label_time": "2013-03-02T00:00:00+00:00"}])
    assert not any(p.is_dir() for p in fsyncs.take())
    log.close()
    fsyncs.take()

    again = PredictionLog(root)  # a new writer: a new segment in a folder another writer made (maybe not fsynced)
    again.log_predictions([_pred("c")])
    assert {p for p in fsyncs.take() if p.is_dir()} == {root / "predictions", root, tmp_path}
    again.close()
    assert sorted(PredictionLog(root).read_predictions()["request_id"]) == ["a", "b0", "b1", "b2", "c"]


def test_a_failed_folder_fsync_fails_the_append_and_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(predictionlog.os, "fsync", _FsyncRecorder(fail_on_folders=True))
    log = PredictionLog(tmp_path)
    with pytest.raises(PredictionLogError, match="Input/output error"):
        log.log_predictions([_pred("a")])
    assert log.failure is not None and "Input/output error" in log.failure
    with pytest.raises(PredictionLogError):
        log.append_predictions([_pred("b")])


@pytest.mark.parametrize("code", [22, 95])  # EINVAL, ENOTSUP: a filesystem whose folders cannot be fsynced
def test_a_folder_that_cannot_be_fsynced_is_not_a_failure(tmp_path, monkeypatch, code):
    real = os.fsync

    def fsync(fd):
        if pathlib.Path(os.readlink(f"/proc/self/fd/{fd}")).is_dir():
            raise OSError(code, os.strerror(code))
        real(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name an fd's file")
    monkeypatch.setattr(predictionlog.os, "fsync", fsync)
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a")])
    log.log_predictions([_pred("b")])
    assert log.failure is None
    log.close()
    assert sorted(PredictionLog(tmp_path).read_predictions()["request_id"]) == ["a", "b"]


def test_a_root_or_parent_the_log_cannot_open_is_skipped_not_a_failure(tmp_path, monkeypatch):
    root = tmp_path / "state"
    (root / "predictions").mkdir(parents=True)  # made by someone else
    real = os.open

    def no_parent(path, *args, **kwargs):
        if pathlib.Path(path) in (tmp_path, root):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predictionlog.os, "open", no_parent)
    log = PredictionLog(root)
    log.log_predictions([_pred("a")])
    assert log.failure is None
    log.close()


def test_a_folder_the_log_made_that_cannot_be_opened_fails_it(tmp_path, monkeypatch):
    real = os.open

    def no_folder(path, *args, **kwargs):
        if pathlib.Path(path) == tmp_path / "new" / "predictions":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predictionlog.os, "open", no_folder)
    log = PredictionLog(tmp_path / "new")
    with pytest.raises(PredictionLogError, match="Permission denied"):
        log.log_predictions([_pred("a")])


def test_failure_is_none_while_the_log_is_healthy(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a")])
    assert log.failure is None
    log.close()


GOOD = {"carrier": "UA", "flight": 1545, "origin": "EWR", "dest": "IAH", "tailnum": "N14228",
        "sched_dep": "2013-03-01T14:15:00Z", "distance": 1400, "flight_id": "2013-03-01:UA:1545:EWR"}


def test_after_a_failed_log_fsync_the_ready_endpoints_say_not_ready_and_live_stays_live(
        flights_project, served_ws, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from loopml.serving.factory import build_predictor
    from loopml.serving.http import create_app

    predictor = build_predictor(flights_project, served_ws)
    predictor.log = PredictionLog(tmp_path)
    version = str(predictor.version)
    ready_paths = ["/v2/health/ready", "/v2/models/flights/ready", "/v2/models/flights-features/ready",
                   f"/v2/models/flights/versions/{version}/ready"]
    with TestClient(create_app(predictor)) as c:
        assert c.post("/predict", json=GOOD).status_code == 200  # a healthy log: ready
        for path in ready_paths:
            r = c.get(path)
            assert r.status_code == 200 and r.json()["ready"] is True, (path, r.text)
        assert c.get("/health").json()["status"] == "ok"

        def no_space(fd):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(predictionlog.os, "fsync", no_space)
        r = c.post("/predict", json=GOOD)
        assert r.status_code == 503 and r.json()["type"] == "PredictionLogError"
        for path in ready_paths:  # v2: "a 4xx status code indicates false"
            r = c.get(path)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert r.json()["ready"] is False and "No space left" in r.json()["error"]
        assert c.get("/v2/models/flights/ready").json()["name"] == "flights"
        live = c.get("/v2/health/live")
        assert live.status_code == 200 and live.json() == {"live": True}
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "not ready"
        assert "No space left" in health.json()["error"]
        assert c.get("/v2/models/nope/ready").status_code == 404  # an unknown model is still "not found"


@pytest.mark.parametrize(("path", "route"), [
    ("/admin/models/flights/load", "/admin/models/{model_name}/load"),
    # the versioned infer is not one of the scoring paths answered before FastAPI: it goes through the router too
    ("/v2/models/flights/versions/{version}/infer", "/v2/models/{model_name}/versions/{version}/infer"),
])
def test_a_client_that_leaves_mid_body_on_a_routed_path_is_not_a_server_error(flights_project, served_ws, caplog,
                                                                              path, route):
    from fastapi.testclient import TestClient

    from loopml.serving.factory import build_predictor
    from loopml.serving.http import create_app

    def load_model(ref):
        raise AssertionError(f"nothing is loaded for a request whose body never arrived (asked for {ref!r})")

    predictor = build_predictor(flights_project, served_ws)
    app = create_app(predictor, load_model=load_model, admin_token="secret")
    with caplog.at_level("ERROR", logger="loopml.serving.http"):
        sent = leave_mid_body(app, path.format(version=predictor.version), b'{"inputs": ',
                              [(b"authorization", b"Bearer secret")])
    assert sent == []  # nobody to answer
    assert not [r for r in caplog.records if r.name == "loopml.serving.http"]  # no "unhandled error" trace
    with TestClient(app) as c:
        text = c.get("/metrics").text
    assert 'type="InternalError"' not in text and 'status="500"' not in text
    assert f'endpoint="{route}"' in text and 'status="499"' in text  # counted as the client leaving
