"""Leftovers of a serving review: the prediction log fsyncs the folder of a new segment, and a server
whose log has failed says it is not ready."""

from __future__ import annotations

import os
import pathlib

import pytest

from loopml.errors import PredictionLogError
from loopml.serving import predictionlog
from loopml.serving.predictionlog import PredictionLog


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
    assert {p for p in labels if p.is_dir()} == {root / "labels", root}  # labels/ is new in root; root is not new
    log.log_labels([{"request_id": "b0", "label": 0.0, "label_time": "2013-03-02T00:00:00+00:00"}])
    assert not any(p.is_dir() for p in fsyncs.take())
    log.close()
    fsyncs.take()

    again = PredictionLog(root)  # a new writer: a new segment in a folder that exists
    again.log_predictions([_pred("c")])
    assert {p for p in fsyncs.take() if p.is_dir()} == {root / "predictions"}
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


def test_failure_is_none_while_the_log_is_healthy(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a")])
    assert log.failure is None
    log.close()
