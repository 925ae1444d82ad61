"""OfflineExecutor.join keeps every label row: missing features come back missing, duplicates stay separate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from loopml.errors import InvalidConfig
from loopml.events import EventLog
from loopml.features import Aggregate, Latest, OfflineExecutor

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)

FEATURES = [
    Latest("last_x", "ev", "k", "x"),
    Latest("last_y", "ev", "k", "y"),               # y has missing values: its own lookup
    Latest("last_x_2h", "ev", "k", "x", max_age=2 * H),
    Latest("last_tag", "ev", "k", "tag", dtype="str"),
    Aggregate("n_3h", "ev", "k", "count", 3 * H),
    Aggregate("mean_x_3h", "ev", "k", "mean", 3 * H, column="x"),
]


def _ts(hours: float) -> pd.Timestamp:
    return pd.Timestamp(T0) + pd.Timedelta(hours=hours)


@pytest.fixture
def log(tmp_path):
    log = EventLog(tmp_path)
    ev = pd.DataFrame({
        "k": ["a", "a", "b", "a"],
        "time": [_ts(1), _ts(2), _ts(1), _ts(5)],
        "x": [1.0, 2.0, 10.0, 3.0],
        "y": [1.5, None, 9.5, None],
        "tag": ["p", "q", "r", "s"],
    })
    log.append("ev", ev, event_time="time", available_time="time")
    return log


def _spine(rows):
    return pd.DataFrame({"k": [r[0] for r in rows],
                         "prediction_time": pd.array([_ts(r[1]) for r in rows], dtype="datetime64[us, UTC]"),
                         "row_id": np.arange(len(rows))})


def test_join_returns_rows_without_any_data_with_missing_values_and_zero_counts(log):
    spine = _spine([("a", 2.5), ("zz", 2.5), ("a", 0.5), ("b", 1.0)])
    out = OfflineExecutor(log, FEATURES).join(spine)
    assert list(out["row_id"]) == [0, 1, 2, 3]
    assert list(out["k"]) == ["a", "zz", "a", "b"]
    assert out["last_x"].tolist()[0] == 2.0 and out["last_x"].tolist()[3] == 10.0
    # unknown entity, and a known one before its first event: missing, count 0
    for i in (1, 2):
        assert np.isnan(out["last_x"].iloc[i]) and np.isnan(out["mean_x_3h"].iloc[i])
        assert pd.isna(out["last_tag"].iloc[i])
        assert out["n_3h"].iloc[i] == 0.0
    # Latest skips missing values of its own column: y at 2.5 is the 1.5 of hour 1, not hour 2's NaN
    assert out["last_y"].iloc[0] == 1.5


def test_join_keeps_duplicate_label_rows_as_separate_identical_rows(log):
    spine = _spine([("a", 2.5), ("a", 2.5), ("b", 3.0), ("a", 2.5)])
    out = OfflineExecutor(log, FEATURES).join(spine)
    assert len(out) == 4 and list(out["row_id"]) == [0, 1, 2, 3]
    feats = [f.name for f in FEATURES]
    first = out.loc[0, feats]
    for i in (1, 3):
        pd.testing.assert_series_equal(out.loc[i, feats], first, check_names=False)


def test_join_keeps_rows_whose_key_is_missing(log):
    spine = pd.DataFrame({"k": pd.array(["a", None], dtype=object),
                          "prediction_time": pd.array([_ts(3), _ts(3)], dtype="datetime64[us, UTC]")})
    out = OfflineExecutor(log, FEATURES).join(spine)
    assert len(out) == 2
    assert out["last_x"].iloc[0] == 2.0 and np.isnan(out["last_x"].iloc[1])
    assert out["n_3h"].iloc[1] == 0.0


def test_max_age_expires_a_value_by_its_event_time(log):
    spine = _spine([("a", 3.5), ("a", 4.5)])  # latest x of a was at hour 2
    out = OfflineExecutor(log, FEATURES).join(spine)
    assert out["last_x_2h"].iloc[0] == 2.0
    assert np.isnan(out["last_x_2h"].iloc[1])
    assert out["last_x"].iloc[1] == 2.0


def test_ties_in_available_time_go_to_the_latest_event_time_then_event_id(tmp_path):
    log = EventLog(tmp_path)
    ev = pd.DataFrame({"k": ["a", "a", "a"], "avail": [_ts(2)] * 3,
                       "event": [_ts(1), _ts(1.5), _ts(1.5)], "x": [1.0, 2.0, 3.0]})
    log.append("ev", ev, event_time="event", available_time="avail")  # event ids 0, 1, 2
    out = OfflineExecutor(log, [Latest("last_x", "ev", "k", "x")]).join(_spine([("a", 2.0)]))
    assert out["last_x"].iloc[0] == 3.0


def test_for_window_returns_every_entity_active_in_the_window_at_its_end(log):
    out = OfflineExecutor(log, FEATURES).for_window(T0 + 0.5 * H, T0 + 2 * H)
    assert list(out["k"]) == ["a", "b"]
    assert (out["prediction_time"] == _ts(2)).all()
    assert out["last_x"].tolist() == [2.0, 10.0]
    assert out["n_3h"].tolist() == [2.0, 1.0]


def test_for_window_with_a_step_returns_one_row_per_entity_per_step(log):
    ex = OfflineExecutor(log, FEATURES)
    out = ex.for_window(T0 + 1.5 * H, T0 + 5 * H, every=H)  # only a has events in (1.5h, 5h]
    assert list(out["k"]) == ["a"] * 3
    assert list(out["prediction_time"]) == [_ts(2.5), _ts(3.5), _ts(4.5)]
    assert out["last_x"].tolist() == [2.0, 2.0, 2.0]
    expected = ex.join(out[["k", "prediction_time"]])
    pd.testing.assert_frame_equal(out.reset_index(drop=True), expected.reset_index(drop=True))


def test_for_window_refuses_features_of_several_entity_kinds(log):
    feats = [*FEATURES, Latest("other", "ev", ("k", "tag"), "x")]
    with pytest.raises(InvalidConfig, match=r"one key set.*\['k'\].*\['k', 'tag'\]"):
        OfflineExecutor(log, feats).for_window(T0, T0 + H)


def test_for_window_names_a_bad_step_or_range(log):
    ex = OfflineExecutor(log, FEATURES)
    with pytest.raises(InvalidConfig, match=r"every must be a positive duration; got datetime.timedelta\(0\)"):
        ex.for_window(T0, T0 + H, every=timedelta(0))
    with pytest.raises(InvalidConfig, match="needs start < end; got start=2024-01-01 01:00:00"):
        ex.for_window(T0 + H, T0)
