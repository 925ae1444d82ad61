from __future__ import annotations

import asyncio
import os
import pathlib
import stat
import threading

import pytest

from loopml.errors import PredictionLogError
from loopml.serving import predictionlog
from loopml.serving.predictionlog import PredictionLog


def _pred(rid, at="2013-03-01T00:00:00+00:00", score=0.5):
    return {"request_id": rid, "entity_id": f"e-{rid}", "model_version": 1, "at": at, "score": score,
            "features": {"x": 1.0}}


def test_labels_join_by_request_id_and_respect_label_time(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a"), _pred("b"), _pred("c")])
    log.log_labels([{"request_id": "a", "label": 1.0, "label_time": "2013-03-01T03:00:00+00:00"},
                    {"request_id": "b", "label": 0.0, "label_time": "2013-03-02T03:00:00+00:00"}])
    log.close()
    j = PredictionLog(tmp_path).joined().set_index("request_id")
    assert j.loc["a", "label"] == 1.0 and j.loc["b", "label"] == 0.0 and j["label"].isna()["c"]
    early = PredictionLog(tmp_path).joined(labelled_by="2013-03-01T12:00:00+00:00").set_index("request_id")
    assert early.loc["a", "label"] == 1.0 and early["label"].isna()["b"]  # not known yet at that time


def test_torn_last_line_from_a_crash_is_skipped(tmp_path):
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a"), _pred("b")])
    log.close()
    seg = next(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))
    seg.write_text(seg.read_text() + '{"request_id": "c", "entity_i')
    j = PredictionLog(tmp_path).joined()
    assert sorted(j["request_id"]) == ["a", "b"]
    assert sorted(PredictionLog(tmp_path).read_predictions()["request_id"]) == ["a", "b"]


def test_every_writer_gets_its_own_segment_and_nothing_is_overwritten(tmp_path):
    one, two = PredictionLog(tmp_path), PredictionLog(tmp_path)
    one.log_predictions([_pred("a")])
    two.log_predictions([_pred("b")])
    one.close()
    two.close()
    assert len(list(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))) == 2
    assert sorted(PredictionLog(tmp_path).joined()["request_id"]) == ["a", "b"]


class _SlowDisk:
    """Stand-in for os.fsync: records how many bytes each fsynced file held, and can hold fsyncs back."""

    def __init__(self, *, fail: bool = False) -> None:
        self.synced_sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = fail

    def __call__(self, fd: int) -> None:
        self.release.wait(10)
        if self.fail:
            raise OSError(28, "No space left on device")
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):  # the log also fsyncs the folder of a new segment: not a size to compare
            self.synced_sizes.append(st.st_size)


@pytest.fixture
def disk(monkeypatch):
    d = _SlowDisk()
    monkeypatch.setattr(predictionlog.os, "fsync", d)
    return d


def test_log_predictions_returns_only_after_an_fsync_covering_the_records(tmp_path, disk):
    log = PredictionLog(tmp_path)
    for i in range(5):
        log.log_predictions([_pred(f"r{i}")])
        seg = next(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))
        assert disk.synced_sizes and max(disk.synced_sizes) == seg.stat().st_size  # the fsync came after the write
    log.close()


def test_a_blocked_fsync_holds_back_the_acknowledgement_but_not_the_event_loop(tmp_path, disk):
    log = PredictionLog(tmp_path)
    disk.release.clear()

    async def scenario() -> tuple[bool, int]:
        ticket = log.append_predictions([_pred("a")])
        durable = log.durable(ticket)
        ticks = 0
        for _ in range(20):  # the loop keeps running other work while the disk is stuck
            await asyncio.sleep(0)
            ticks += 1
        done_while_stuck = durable.done()
        disk.release.set()
        await asyncio.wait_for(durable, 10)
        return done_while_stuck, ticks

    done_while_stuck, ticks = asyncio.run(scenario())
    assert not done_while_stuck and ticks == 20
    assert sorted(PredictionLog(tmp_path).read_predictions()["request_id"]) == ["a"]
    log.close()


def test_concurrent_writers_share_fsyncs_group_commit(tmp_path, disk):
    log = PredictionLog(tmp_path)
    disk.release.clear()  # the first fsync stalls, so every other writer queues behind it
    writers = [threading.Thread(target=log.log_predictions, args=([_pred(f"w{i}")],)) for i in range(16)]
    for w in writers:
        w.start()
    while log._written < 16:  # all 16 appended and waiting
        threading.Event().wait(0.01)
    disk.release.set()
    for w in writers:
        w.join(10)
    assert log.fsyncs <= 2  # the stalled one, then one for the 15 (or 16) that queued behind it
    assert len(PredictionLog(tmp_path).read_predictions()) == 16
    log.close()


def test_a_failed_fsync_fails_the_waiters_and_later_appends_naming_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(predictionlog.os, "fsync", _SlowDisk(fail=True))
    log = PredictionLog(tmp_path)
    with pytest.raises(PredictionLogError, match="No space left"):
        log.log_predictions([_pred("a")])

    async def awaited() -> None:
        await log.durable(1)

    with pytest.raises(PredictionLogError, match=str(tmp_path)):
        asyncio.run(awaited())
    with pytest.raises(PredictionLogError):
        log.append_predictions([_pred("b")])


def test_records_are_json_lines_with_nan_as_null_and_times_in_iso_format(tmp_path):
    import datetime as dt
    import json

    log = PredictionLog(tmp_path)
    log.log_predictions([{**_pred("a"), "features": {"x": float("nan"), "t": dt.datetime(2013, 3, 1, tzinfo=dt.UTC)}}])
    log.close()
    seg = next(pathlib.Path(tmp_path, "predictions").glob("*.jsonl"))
    doc = json.loads(seg.read_text())
    assert doc["features"] == {"x": None, "t": "2013-03-01T00:00:00+00:00"} and doc["request_id"] == "a"


def test_an_idle_flusher_thread_ends_and_the_next_append_starts_another(tmp_path, monkeypatch):
    monkeypatch.setattr(predictionlog, "IDLE_EXIT_S", 0.05)
    log = PredictionLog(tmp_path)
    log.log_predictions([_pred("a")])
    first = log._flusher
    if first is not None:  # (it may already have ended on a slow machine)
        first.join(10)
    assert log._flusher is None and log.fsyncs == 1
    log.log_predictions([_pred("b")])  # returns only once fsynced: a new flusher ran
    assert log.fsyncs == 2
    log.close()
    assert sorted(PredictionLog(tmp_path).read_predictions()["request_id"]) == ["a", "b"]


def test_when_durable_calls_back_on_the_loop_after_the_fsync_and_with_the_failure(tmp_path, disk, monkeypatch):
    log = PredictionLog(tmp_path)
    disk.release.clear()

    async def scenario() -> list:
        calls: list = []
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        ticket = log.append_predictions([_pred("a")])
        log.when_durable(ticket, lambda failure: (calls.append((failure, threading.get_ident())), done.set_result(None)))
        for _ in range(20):
            await asyncio.sleep(0)
        stuck = list(calls)
        disk.release.set()
        await asyncio.wait_for(done, 10)
        log.when_durable(ticket, lambda failure: calls.append(("again", failure)))  # already durable: at once
        return [stuck, calls, threading.get_ident()]

    stuck, calls, loop_thread = asyncio.run(scenario())
    assert stuck == [] and calls[0] == (None, loop_thread) and calls[1] == ("again", None)
    log.close()

    monkeypatch.setattr(predictionlog.os, "fsync", _SlowDisk(fail=True))
    failing = PredictionLog(tmp_path / "failing")

    async def failed() -> BaseException | None:
        done = asyncio.get_running_loop().create_future()
        failing.when_durable(failing.append_predictions([_pred("b")]), done.set_result)
        return await asyncio.wait_for(done, 10)

    assert isinstance(asyncio.run(failed()), PredictionLogError)


def test_after_a_failed_fsync_each_caller_gets_an_error_of_its_own(tmp_path, monkeypatch):
    """Re-raising one stored error would chain every later request's frames onto it: memory that grows."""
    monkeypatch.setattr(predictionlog.os, "fsync", _SlowDisk(fail=True))
    log = PredictionLog(tmp_path)
    errors = []
    for i in range(20):
        try:
            log.log_predictions([_pred(f"r{i}")])
        except PredictionLogError as exc:
            errors.append(exc)
    assert len(errors) == 20 and len({id(e) for e in errors}) == 20
    depth = [sum(1 for _ in _frames(e.__traceback__)) for e in errors]
    assert max(depth) <= depth[1] + 1  # the traceback of the 20th is no longer than the 2nd's
    assert all(str(tmp_path) in str(e) for e in errors)


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_a_failing_durability_callback_does_not_leave_the_others_waiting(tmp_path, disk):
    log = PredictionLog(tmp_path)
    got = []

    def broken(failure):
        raise RuntimeError("a bug in one waiter")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        disk.release.clear()  # hold the fsync back, so both callbacks wait for it
        t1 = log.append_predictions([_pred("a")])
        log.when_durable(t1, broken)
        log.when_durable(t1, lambda failure: (got.append(failure), done.set_result(None)))
        disk.release.set()
        await asyncio.wait_for(done, 10)

    asyncio.run(run())
    assert got == [None]
