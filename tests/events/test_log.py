from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from loopml.errors import BadTimestamp, SchemaError
from loopml.events import EventLog, Replayer

T0 = datetime(2013, 1, 1, tzinfo=UTC)


def frame(n=5, start=0):
    times = [T0 + timedelta(minutes=start + i) for i in range(n)]
    return pd.DataFrame({"k": ["a"] * n, "x": [float(i) for i in range(n)], "event_time": times, "available_time": times})


def test_append_and_read_by_available_time_range(tmp_path):
    log = EventLog(tmp_path)
    assert log.append("s", frame(5)) == 5
    assert log.append("s", frame(5, start=5)) == 5
    t = log.read("s", start=T0 + timedelta(minutes=3), end=T0 + timedelta(minutes=7))
    assert t.column("x").to_pylist() == [3.0, 4.0, 0.0, 1.0]
    assert t.column("event_id").to_pylist() == [3, 4, 5, 6]  # ids keep increasing across segments
    assert log.count("s") == 10


def test_fact_known_before_it_happened_is_rejected_and_nothing_written(tmp_path):
    log = EventLog(tmp_path)
    log.append("s", frame(3))
    bad = frame(3, start=3)
    bad.loc[1, "available_time"] = bad.loc[1, "event_time"] - timedelta(seconds=1)
    with pytest.raises(SchemaError, match="precedes event_time"):
        log.append("s", bad)
    assert log.count("s") == 3


def test_missing_time_column_names_it(tmp_path):
    with pytest.raises(SchemaError, match=r"no column 'available_time'.*columns are"):
        EventLog(tmp_path).append("s", frame().drop(columns=["available_time"]))


def test_unparseable_timestamp_names_column_and_value(tmp_path):
    bad = frame(3).astype({"event_time": object})
    bad.loc[1, "event_time"] = "not a time"
    with pytest.raises(BadTimestamp, match=r"'s.event_time'.*'not a time'"):
        EventLog(tmp_path).append("s", bad)


def test_integer_time_column_is_rejected_with_example(tmp_path):
    bad = frame(3)
    bad["event_time"] = [515, 516, 517]
    with pytest.raises(BadTimestamp, match=r"must be a timestamp; got int64 \(e.g. 515\)"):
        EventLog(tmp_path).append("s", bad)


def test_schema_change_is_refused(tmp_path):
    log = EventLog(tmp_path)
    log.append("s", frame(2))
    other = frame(2).assign(x=["a", "b"])
    with pytest.raises(SchemaError, match="does not match its existing schema"):
        log.append("s", other)
    assert log.count("s") == 2


def test_replay_is_in_available_time_order_and_inclusive(tmp_path):
    log = EventLog(tmp_path)
    f = frame(4)
    f["available_time"] = [T0 + timedelta(minutes=m) for m in (3, 1, 2, 1)]
    f["event_time"] = f["available_time"]
    log.append("s", f)
    r = Replayer(log, ["s"])
    seen = [b["x"] for _, b in r.advance_to(T0 + timedelta(minutes=2))]
    assert seen == [[1.0, 3.0, 2.0]]
    assert [b["x"] for _, b in r.advance_to(T0 + timedelta(minutes=3))] == [[0.0]]
    with pytest.raises(ValueError, match="only moves forward"):
        list(r.advance_to(T0))


def test_project_source_missing_a_declared_column_is_refused_before_ingesting(flights_project, tmp_path):
    from loopml.project import Project
    from loopml.workspace import Workspace

    def broken():
        import flightsdata

        events = flightsdata.load()
        events["weather"] = events["weather"].drop(columns=["visib"])
        return events

    project = Project(**{**flights_project.__dict__, "load_events": broken})
    ws = Workspace(tmp_path)
    with pytest.raises(SchemaError, match=r"Source 'weather' is missing column 'visib'"):
        ws.ensure_ingested(project)
    assert ws.log.sources() == []
