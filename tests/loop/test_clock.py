"""One controller, two clocks: replayed history and a sped-up wall clock with live ingestion agree;
a stopped run resumes from its checkpoint without serving anything twice."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from loopml.errors import InvalidConfig
from loopml.events.log import EventLog
from loopml.loop import LiveSource, LoopController, ReplayClock, RetrainPolicy, WallClock
from loopml.loop.feed import LogFeed
from loopml.registry import ArtifactStore, Registry
from loopml.serving.predictionlog import PredictionLog
from loopml.timeutil import parse_time
from loopml.workspace import Workspace

T0 = datetime(2013, 3, 1, tzinfo=UTC)


# -- clocks ------------------------------------------------------------------------------------
def test_replay_clock_jumps_to_the_next_due_time_and_never_back():
    clock = ReplayClock(T0)
    clock.sleep_until(T0 + timedelta(hours=5))
    clock.sleep_until(T0 + timedelta(hours=1))
    assert clock.now() == T0 + timedelta(hours=5) and not clock.live


def test_sped_up_wall_clock_maps_real_seconds_to_logical_time():
    real = [100.0]
    waits: list[float] = []
    clock = WallClock(T0, speed=3600, timer=lambda: real[0], wait=lambda s, stop: waits.append(s))
    real[0] += 50.0  # set-up time before the first reading does not count: the clock starts when first read
    assert clock.now() == T0
    real[0] += 2.0
    assert clock.now() == T0 + timedelta(hours=2)
    clock.sleep_until(T0 + timedelta(hours=5))
    assert waits == [pytest.approx(3.0)]  # three logical hours at an hour a second
    clock.sleep_until(T0)  # in the past: no wait
    assert len(waits) == 1 and clock.live


def test_wall_clock_sleep_returns_when_stopped():
    stop = threading.Event()
    stop.set()
    clock = WallClock(T0, speed=1.0)
    clock.sleep_until(T0 + timedelta(days=365), stop)  # would hang for a year if stop were ignored
    assert clock.now() < T0 + timedelta(minutes=1)


def test_wall_clock_settings_are_validated_with_the_bad_value():
    with pytest.raises(InvalidConfig, match="speed must be a number > 0; got -2"):
        WallClock(T0, speed=-2)
    with pytest.raises(InvalidConfig, match="needs an origin"):
        WallClock(speed=10)


# -- the feed over a growing log -----------------------------------------------------------------
def _events(times, value):
    t = pd.to_datetime(times, utc=True)
    return pd.DataFrame({"event_time": t, "available_time": t, "k": ["a"] * len(t), "v": [value] * len(t)})


def test_log_feed_sees_appended_events_in_available_time_order(tmp_path):
    log = EventLog(tmp_path)
    log.append("s", _events(["2013-03-01T01:00Z", "2013-03-01T03:00Z"], 1.0))
    feed = LogFeed(log, ["s"], columns={"s": ["k", "v"]})
    assert feed.refresh() == 2
    got = [b["v"] for _, b in feed.advance_to(parse_time("2013-03-01T02:00Z"))]
    assert got == [[1.0]]
    # appended later: one event in the future, one available before the feed's clock (late)
    log.append("s", _events(["2013-03-01T02:30Z", "2013-03-01T01:30Z"], 2.0))
    assert feed.refresh() == 2 and feed.late == 1
    batches = [b for _, b in feed.advance_to(parse_time("2013-03-01T04:00Z"))]
    assert [len(b["v"]) for b in batches] == [3]
    assert batches[0]["v"] == [2.0, 2.0, 1.0]  # 01:30 (late), 02:30, 03:00
    assert feed.refresh() == 0  # nothing new


def test_log_feed_resumes_strictly_after_a_time_and_keeps_bounds(tmp_path):
    log = EventLog(tmp_path)
    log.append("s", _events(["2013-03-01T01:00Z", "2013-03-01T02:00Z", "2013-03-01T03:00Z", "2013-03-01T04:00Z"], 1.0))
    feed = LogFeed(log, ["s"], after=parse_time("2013-03-01T02:00Z"),
                   bounds={"s": (None, parse_time("2013-03-01T04:00Z"))})
    feed.refresh()
    assert feed.next_time_us("s") == int(pd.Timestamp("2013-03-01T03:00Z").value // 1000)
    assert [b.n for _, b in feed.advance_to(parse_time("2013-03-02"))] == [1]


def test_live_source_appends_what_became_available_and_restarts_from_the_log(tmp_path):
    log = EventLog(tmp_path)
    up = {"s": _events(["2013-03-01T03:00Z", "2013-03-01T01:00Z", "2013-03-01T02:00Z"], 1.0)}
    live = LiveSource(log, up)
    assert live.append_until(parse_time("2013-03-01T01:30Z")) == 1
    assert live.next_time() == parse_time("2013-03-01T02:00Z")
    again = LiveSource(log, up)  # a restarted process
    assert again.append_until(parse_time("2013-03-01T02:00Z")) == 1
    assert log.count("s") == 2 and again.next_time() == parse_time("2013-03-01T03:00Z")


# -- the controller on both clocks --------------------------------------------------------------
START, UNTIL = parse_time("2013-03-01"), parse_time("2013-03-05")  # one weekly check: Monday 4 March


def _policy():
    return RetrainPolicy(cadence="weekly", mode="stateful", stateful_rounds=10, label_wait=timedelta(hours=12))


@pytest.fixture(scope="module")
def small_project(flights_project):
    return replace(flights_project, model_params={**flights_project.model_params, "n_estimators": 30})


@pytest.fixture(scope="module")
def bootstrapped(small_project, flights_ws, tmp_path_factory):
    """A registry with the first champion, copied into each run's state (one training for all runs)."""
    root = tmp_path_factory.mktemp("boot")
    (root / "events").symlink_to(flights_ws.root / "events", target_is_directory=True)
    LoopController(small_project, Workspace(root), policy=_policy()).bootstrap()
    return root


def _state(bootstrapped, tmp_path_factory, name, *, events_from=None):
    root = tmp_path_factory.mktemp(name)
    shutil.copy(bootstrapped / "registry.sqlite", root / "registry.sqlite")
    shutil.copytree(bootstrapped / "artifacts", root / "artifacts")
    if events_from is not None:
        (root / "events").symlink_to(events_from, target_is_directory=True)
    return Workspace(root)


def _decisions(ws):
    return [(d["kind"], d["at"], d["version"], d["details"])
            for d in Registry(ws.registry_url, ArtifactStore(ws.artifacts)).decisions("flights")]


def _served(ws):
    j = PredictionLog(ws.predictions).joined()
    return j[["entity_id", "model_version", "score", "label"]].sort_values("entity_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def replayed(small_project, flights_ws, bootstrapped, tmp_path_factory):
    ws = _state(bootstrapped, tmp_path_factory, "replay", events_from=flights_ws.root / "events")
    result = LoopController(small_project, ws, policy=_policy()).run(START, UNTIL, clock=ReplayClock(START))
    return ws, result


@pytest.mark.slow
def test_replay_and_sped_up_wall_clock_with_live_ingestion_make_the_same_decisions(
        small_project, flights_events, bootstrapped, replayed, tmp_path_factory):
    ws_r, res_r = replayed
    ws_w = _state(bootstrapped, tmp_path_factory, "wall")  # an empty event log, filled live
    live = LiveSource(ws_w.log, flights_events)
    clock = WallClock(START, speed=20_000)  # 4.5 logical days in ~20 s, slower than the work at times
    res_w = LoopController(small_project, ws_w, policy=_policy()).run(START, UNTIL, clock=clock, ingest=live)
    assert res_r.retrainings == res_w.retrainings == 1
    kinds = [d[0] for d in _decisions(ws_r)]
    assert kinds[:4] == ["registered", "promoted", "trigger", "registered"] and kinds[4] in ("promoted", "rejected")
    assert _decisions(ws_w) == _decisions(ws_r)
    served_r, served_w = _served(ws_r), _served(ws_w)
    assert len(served_r) > 3000 and served_r["label"].notna().mean() > 0.95
    pd.testing.assert_frame_equal(served_w, served_r)
    # the live log only ever held what had become available: nothing after the end of the run
    last = max(ws_w.log.read(s, columns=[]).column("available_time").to_pylist()[-1] for s in ws_w.log.sources())
    assert last <= UNTIL + _policy().label_wait + timedelta(hours=1)
    assert res_w.finished and res_w.late_events == 0


@pytest.mark.slow
def test_a_stopped_run_resumes_from_its_checkpoint_without_serving_twice(
        small_project, flights_ws, bootstrapped, replayed, tmp_path_factory):
    ws_r, _ = replayed
    ws = _state(bootstrapped, tmp_path_factory, "resume", events_from=flights_ws.root / "events")
    ckpt = ws.root / "loop.json"
    stop = threading.Event()

    def progress(stage, done, total):  # Ctrl-C in the middle of 3 March
        if stage == "serving" and done > 2.5 * 24 * 60:
            stop.set()

    first = LoopController(small_project, ws, policy=_policy(), progress=progress).run(
        START, UNTIL, clock=ReplayClock(START), stop=stop, checkpoint=ckpt)
    assert not first.finished and START < parse_time(first.done_until) < UNTIL
    second = LoopController(small_project, ws, policy=_policy()).run(START, UNTIL, clock=ReplayClock(START),
                                                                     checkpoint=ckpt)
    assert second.finished and second.retrainings == 1
    pd.testing.assert_frame_equal(_served(ws), _served(ws_r))  # each flight served once, as in one run
    assert _decisions(ws) == _decisions(ws_r)
    with pytest.raises(InvalidConfig, match="finished"):
        LoopController(small_project, ws, policy=_policy()).run(START, UNTIL, checkpoint=ckpt)


def test_live_source_checks_each_batch_against_the_history(tmp_path):
    log = EventLog(tmp_path)
    first = _events(["2013-03-01T01:00Z", "2013-03-01T02:00Z"], 1.0)
    later = _events(["2013-03-01T03:00Z", "2013-03-01T04:00Z"], 2.0)
    later["v"] = [1.0, 99.0]
    later.loc[later.index[0], "k"] = "new"
    live = LiveSource(log, {"s": pd.concat([first, later], ignore_index=True)}, check_quality=True)
    live.append_until(parse_time("2013-03-01T02:00Z"))  # the history: the reference
    assert live.findings == []
    live.append_until(parse_time("2013-03-01T05:00Z"))
    assert live.quality["s"]["max_out_of_range_rate"] == 0.5 and live.quality["s"]["max_unseen_category_rate"] == 0.5
    assert [f["source"] for f in live.findings] == ["s"]
