"""Processing the spine in time chunks gives exactly the unchunked result."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.errors import InvalidConfig
from loopml.events import EventLog
from loopml.features import Aggregate, Latest, OfflineExecutor
from loopml.features.offline import _chunks

T0 = datetime(2024, 1, 1, tzinfo=UTC)
M = timedelta(minutes=1)

FEATURES = [
    Latest("last_x", "ev", "k", "x"),                    # x has missing values
    Latest("last_y", "ev", "k", "y"),                    # y never does: shares one join with z
    Latest("last_z_15m", "ev", "k", "z", max_age=15 * M),
    Latest("last_tag", "ev", "k", "tag", dtype="str"),
    Aggregate("n_30m", "ev", "k", "count", 30 * M),
    Aggregate("sum_y_45m", "ev", "k", "sum", 45 * M, column="y"),   # integer-valued: running totals
    Aggregate("max_x_20m", "ev", "k", "max", 20 * M, column="x"),   # window-function path
]

events_st = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]),          # key
    st.integers(0, 240),                        # available minute (ties allowed)
    st.integers(0, 30),                         # how much earlier it happened
    st.one_of(st.none(), st.integers(-20, 20).map(lambda v: v / 4)),
    st.integers(-100, 100),
), min_size=1, max_size=60)
spine_st = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 260)), min_size=1, max_size=40)


def _log(root, events) -> EventLog:
    log = EventLog(root)
    log.append("ev", pd.DataFrame({
        "k": [e[0] for e in events],
        "available_time": [T0 + e[1] * M for e in events],
        "event_time": [T0 + (e[1] - e[2]) * M for e in events],
        "x": pd.array([e[3] for e in events], dtype="Float64"),
        "y": [float(e[4]) for e in events],
        "z": [float(e[4]) / 2 for e in events],
        "tag": [f"t{e[4]}" for e in events],
    }))
    return log


def _spine(rows) -> pd.DataFrame:
    return pd.DataFrame({"k": [r[0] for r in rows],
                         "prediction_time": pd.array([pd.Timestamp(T0 + r[1] * M) for r in rows],
                                                     dtype="datetime64[us, UTC]")})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, spine=spine_st, chunk_minutes=st.integers(1, 120))
def test_chunked_join_equals_unchunked_join(events, spine, chunk_minutes):
    with tempfile.TemporaryDirectory() as root:
        log = _log(root, events)
        frame = _spine(spine)
        whole = OfflineExecutor(log, FEATURES).join(frame)
        chunked = OfflineExecutor(log, FEATURES, chunk=chunk_minutes * M).join(frame)
        pd.testing.assert_frame_equal(chunked, whole)


def test_chunks_split_only_between_distinct_times():
    t = np.array([0, 0, 5, 10, 10, 10, 25, 26], dtype=np.int64)
    assert _chunks(t, None) == [(0, 8)]
    assert _chunks(t, timedelta(microseconds=10)) == [(0, 3), (3, 6), (6, 8)]
    assert _chunks(t, timedelta(microseconds=1)) == [(0, 2), (2, 3), (3, 6), (6, 7), (7, 8)]


def test_chunk_must_be_positive(tmp_path):
    log = _log(tmp_path, [("a", 1, 0, 1.0, 1)])
    with pytest.raises(InvalidConfig, match="chunk must be a positive duration; got datetime.timedelta"):
        OfflineExecutor(log, FEATURES, chunk=timedelta(0)).join(_spine([("a", 5), ("a", 9)]))
