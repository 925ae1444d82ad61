"""`materialize(T)` builds the same online state as replaying to T; streaming resumes after T exactly once."""

from __future__ import annotations

import pandas as pd

from loopml.events import Replayer
from loopml.features import OnlineExecutor, SQLiteOnlineStore
from loopml.features.materialize import materialize
from loopml.features.offline import records
from loopml.features.online import GroupState
from loopml.timeutil import parse_time, to_us


def test_materialized_state_is_byte_identical_to_replayed_state(flights_project, flights_ws, tmp_path):
    p, log = flights_project, flights_ws.log
    t = parse_time("2013-05-20T13:37:00Z")
    replayed = OnlineExecutor(p.features, store=SQLiteOnlineStore(tmp_path / "replayed.sqlite"))
    for source, batch in Replayer(log, replayed.sources, columns=replayed.columns()).advance_to(t):
        replayed.update(source, batch)
    replayed.watermark_us = to_us(t)  # the clock is at t, whatever arrived last
    replayed.flush()
    materialize(log, p.features, t, store=SQLiteOnlineStore(tmp_path / "materialized.sqlite"))
    a = _nonempty(SQLiteOnlineStore(tmp_path / "replayed.sqlite"))
    b = _nonempty(SQLiteOnlineStore(tmp_path / "materialized.sqlite"))
    assert len(a) > 1000
    assert [(g, k) for g, k, _ in a] == [(g, k) for g, k, _ in b]
    assert a == b


def _nonempty(store):
    """Stored (group, key, blob) rows, leaving out entities whose window emptied (equivalent to no state)."""
    rows = store._con().execute("SELECT grp, key, blob FROM state ORDER BY 1, 2").fetchall()
    out = []
    for g, k, blob in rows:
        st = GroupState.from_bytes(bytes(blob))
        if len(st.ts) or st.latest:
            out.append((g, k, bytes(blob)))
    return out


def test_streaming_resumes_after_materialization_without_gap_or_double_count(flights_project, flights_ws):
    p, log = flights_project, flights_ws.log
    t0, t1 = parse_time("2013-08-01T00:00:00Z"), parse_time("2013-08-02T18:00:00Z")
    boot = materialize(log, p.features, t0)
    for source, batch in Replayer(log, boot.sources, after=t0, columns=boot.columns()).advance_to(t1):
        boot.update(source, batch)
    full = OnlineExecutor(p.features)
    for source, batch in Replayer(log, full.sources, columns=full.columns()).advance_to(t1):
        full.update(source, batch)
    spine = log.read("schedule", start=t1, end=t1 + pd.Timedelta(hours=3).to_pytimedelta()).to_pandas()
    spine["sched_dep"] = spine["sched_dep"].dt.tz_convert("UTC")
    requests = records(spine, list(p.spine.request_fields))
    assert len(requests) > 100
    for r in requests:
        assert boot.get(r, t1) == full.get(r, t1)
