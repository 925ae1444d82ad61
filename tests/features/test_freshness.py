"""Freshness: each online value's newest input event, against a brute-force reference on random logs."""

from __future__ import annotations

import tempfile
from datetime import timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings

from loopml.events import EventLog, Replayer
from loopml.features import (
    Aggregate,
    FeatureLookup,
    Latest,
    OnlineExecutor,
    RequestFeature,
    SQLiteOnlineStore,
)
from tests.features.test_point_in_time import FEATURES, T0, M, _frame, _sorted_for_log, events_st, spine_st

EXTRA = [
    Aggregate("distinct_40m", "ev", "k", "approx_distinct", 40 * M, column="x"),
    RequestFeature("hour", lambda r: 1.0, ("k",)),
]


def reference_available(events, key, minute):
    """Newest available minute behind each stored feature, straight from freshness.py's docstring."""
    rows = [e for e in events if e[0] == key and e[1] <= minute]
    out = {}
    for f in [*FEATURES, *EXTRA]:
        if isinstance(f, RequestFeature):
            continue
        if isinstance(f, Latest):
            cands = [e[1] for e in rows if e[3] is not None]  # max_age does not hide the newest value's time
        else:
            inw = [e for e in rows if minute - f.window // M < e[1]]
            cands = [e[1] for e in inw if f.column is None or e[3] is not None]
        out[f.name] = max(cands) if cands else None
    return out


@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, spine=spine_st)
def test_available_at_is_the_newest_input_event_in_memory_and_through_the_store(events, spine):
    events = _sorted_for_log(events)
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(f"{tmp}/log")
        log.append("ev", _frame(events))
        store = SQLiteOnlineStore(f"{tmp}/online.sqlite")
        online = OnlineExecutor([*FEATURES, *EXTRA], store=store)
        reader = OnlineExecutor([*FEATURES, *EXTRA], store=store)
        replayer = Replayer(log, ["ev"])
        for key, minute in sorted(spine, key=lambda s: s[1]):
            t = T0 + minute * M
            for source, batch in replayer.advance_to(t):
                online.update(source, batch)
            online.flush()
            ref = reference_available(events, key, minute)
            for ex in (online, reader):
                found = ex.get_with_freshness({"k": key}, t)
                assert isinstance(found, FeatureLookup) and found.at == t
                assert found.values == ex.get({"k": key}, t)
                got = {n: None if a is None else (a - T0) // M for n, a in found.available_at.items()}
                assert got == ref, (key, minute)
                assert "hour" not in found.available_at  # request features have no stored events
                for n, age in found.ages().items():
                    assert age == (None if ref[n] is None else (minute - ref[n]) * M)


def test_latest_older_than_max_age_is_missing_but_its_time_still_shows_how_stale_it_is():
    online = OnlineExecutor([Latest("x_5m", "ev", "k", "x", max_age=timedelta(minutes=5))])
    online.update("ev", pa.table({
        "k": ["a"], "x": [1.5],
        "available_time": pa.array([T0], pa.timestamp("us", "UTC")),
        "event_time": pa.array([T0], pa.timestamp("us", "UTC")),
        "event_id": pa.array([1], pa.int64()),
    }))
    found = online.get_with_freshness({"k": "a"}, T0 + 60 * M)
    assert found.values == {"x_5m": None}
    assert found.available_at == {"x_5m": T0} and found.ages() == {"x_5m": 60 * M}
    assert online.get_with_freshness({"k": "b"}, T0).available_at == {"x_5m": None}  # unknown entity


def test_entity_lookup_reports_when_each_stored_value_became_available(flights_project, flights_ws):
    from loopml.features.lookup import lookup_entity
    from loopml.timeutil import parse_time

    at = parse_time("2013-06-15T07:45:00Z")
    doc = lookup_entity(flights_project, flights_ws.log, "2013-06-15:UA:1141:EWR", at)
    stored = {f.name for f in flights_project.features if not isinstance(f, RequestFeature)}
    assert set(doc["available_at"]) == stored
    times = [parse_time(v) for v in doc["available_at"].values() if v is not None]
    assert times and all(x <= at for x in times)  # nothing behind a value is from after the lookup
    assert doc["available_at"]["origin_departures_3h"] is None and doc["features"]["origin_departures_3h"] == 0.0
