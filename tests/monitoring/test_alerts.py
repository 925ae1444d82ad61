"""Alerts: hysteresis, the minimum sample size, evidence in the history, and surviving a restart."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import pytest
from sklearn.base import clone

from loopml.errors import InvalidConfig, SchemaError
from loopml.monitoring import Alert, AlertBook


def _feed(alert: Alert, values, **kwargs) -> list[str | None]:
    return [alert.update(v, **kwargs) for v in values]


def test_a_value_flickering_around_open_above_opens_exactly_one_alert() -> None:
    alert = Alert("log_loss", open_above=0.5, close_below=0.45)
    events = _feed(alert, [0.49, 0.51, 0.50, 0.52, 0.49, 0.51])
    assert events == [None, "opened", None, None, None, None]
    assert alert.is_open_ and len(alert.history_) == 1


def test_the_alert_closes_only_once_the_value_falls_below_close_below() -> None:
    alert = Alert("log_loss", open_above=0.5, close_below=0.45)
    events = _feed(alert, [0.51, 0.46, 0.45, 0.47, 0.44, 0.40, 0.49, 0.51])
    assert events == ["opened", None, None, None, "closed", None, None, "opened"]
    assert [e["event"] for e in alert.history_] == ["opened", "closed", "opened"]


def test_values_exactly_on_a_threshold_do_not_cross_it() -> None:
    alert = Alert("psi", open_above=0.25, close_below=0.1)
    assert _feed(alert, [0.25, 0.26, 0.1, 0.09]) == [None, "opened", None, "closed"]


def test_direction_below_mirrors_the_thresholds_for_a_falling_auc() -> None:
    alert = Alert("auc", open_above=0.70, close_below=0.75, direction="below")
    events = _feed(alert, [0.80, 0.71, 0.69, 0.72, 0.68, 0.74, 0.75, 0.76, 0.90])
    assert events == [None, None, "opened", None, None, None, None, "closed", None]


def test_below_min_samples_no_alert_opens_or_closes() -> None:
    alert = Alert("log_loss", open_above=0.5, close_below=0.45, min_samples=100)
    assert _feed(alert, [0.9, 0.8], n=99) == [None, None]
    assert not alert.is_open and alert.history_ == [] and alert.n_updates_ == 2
    assert alert.update(0.9, n=100) == "opened"
    assert alert.update(0.1, n=5) is None  # too few rows to clear it either
    assert alert.is_open
    assert alert.update(0.1, n=500) == "closed"


def test_events_record_their_evidence() -> None:
    alert = Alert("log_loss", open_above=0.5, close_below=0.45, min_samples=10)
    at = datetime(2013, 6, 15, 8, tzinfo=UTC)
    alert.update(0.6, n=250, at=at)
    alert.update(0.4, n=300, at="2013-06-16T08:00:00+00:00")
    assert alert.history_ == [
        {
            "event": "opened", "value": 0.6, "n": 250, "at": "2013-06-15T08:00:00+00:00",
            "open_above": 0.5, "close_below": 0.45, "direction": "above", "min_samples": 10,
        },
        {
            "event": "closed", "value": 0.4, "n": 300, "at": "2013-06-16T08:00:00+00:00",
            "open_above": 0.5, "close_below": 0.45, "direction": "above", "min_samples": 10,
        },
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"open_above": 0.5, "close_below": 0.5}, r"close_below=0\.5 >= open_above=0\.5"),
        ({"open_above": 0.5, "close_below": 0.6}, r"close_below=0\.6 >= open_above=0\.5"),
        (
            {"open_above": 0.7, "close_below": 0.65, "direction": "below"},
            r"close_below=0\.65 <= open_above=0\.7",
        ),
        ({"open_above": 0.5, "close_below": 0.4, "direction": "abov"}, "Did you mean 'above'"),
        ({"open_above": 0.5, "close_below": 0.4, "min_samples": 0}, "min_samples.*0"),
        ({"open_above": float("nan"), "close_below": 0.4}, "open_above must be a finite number; got nan"),
    ],
)
def test_bad_settings_raise_invalid_config_showing_the_value(kwargs, match) -> None:
    with pytest.raises(InvalidConfig, match=match):
        Alert("x", **kwargs).update(0.0, n=10)
    with pytest.raises(InvalidConfig, match=match):
        AlertBook([Alert("x", **kwargs)])


def test_bad_updates_raise_schema_error() -> None:
    with pytest.raises(SchemaError, match="finite number; got nan"):
        Alert("x", open_above=0.5, close_below=0.4).update(float("nan"))
    with pytest.raises(SchemaError, match="min_samples=30, so update\\(\\) needs n"):
        Alert("x", open_above=0.5, close_below=0.4, min_samples=30).update(0.6)
    with pytest.raises(SchemaError, match="at must be"):
        Alert("x", open_above=0.5, close_below=0.4).update(0.6, at=object())


def test_alert_clones_and_pickles() -> None:
    alert = Alert("x", open_above=0.5, close_below=0.4, min_samples=3)
    assert clone(alert).get_params() == alert.get_params()
    alert.update(0.6, n=3)
    assert pickle.loads(pickle.dumps(alert)).history_ == alert.history_


def _book() -> AlertBook:
    return AlertBook([
        Alert("log_loss", open_above=0.5, close_below=0.45, min_samples=50),
        Alert("auc", open_above=0.70, close_below=0.75, direction="below"),
        Alert("psi", open_above=0.25, close_below=0.1),
    ])


def test_alert_book_updates_by_name_and_lists_open_alerts() -> None:
    book = _book()
    assert book.update("psi", 0.3) == "opened"
    assert book.update("auc", 0.65) == "opened"
    assert book.update("log_loss", 0.9, n=10) is None
    assert book.open_alerts() == ["auc", "psi"]
    assert book.update("auc", 0.8) == "closed"
    assert book.open_alerts() == ["psi"]
    with pytest.raises(InvalidConfig, match="no alert named 'log_los'. Closest matches: \\['log_loss'\\]"):
        book.update("log_los", 0.1)
    with pytest.raises(InvalidConfig, match="names must be unique"):
        book.add(Alert("psi", open_above=1, close_below=0))


def test_alert_book_round_trips_through_json_preserving_open_state() -> None:
    book = _book()
    book.update("log_loss", 0.6, n=80, at="2013-06-15T08:00:00Z")
    book.update("psi", 0.3, at=1371283200)
    book.update("psi", 0.05)
    text = json.dumps(book.to_dict(), allow_nan=False)
    restored = AlertBook.from_dict(json.loads(text))
    assert restored.to_dict() == book.to_dict()
    assert restored.open_alerts() == ["log_loss"]
    assert restored["log_loss"].history_ == book["log_loss"].history_
    # the restored book carries on where the old one stopped: no second "opened" for a still-bad value
    assert restored.update("log_loss", 0.55, n=80) is None
    assert restored.update("log_loss", 0.30, n=80) == "closed"
    assert restored.update("psi", 0.3) == "opened"


def test_from_dict_rejects_something_that_is_not_a_stored_book() -> None:
    with pytest.raises(InvalidConfig, match="expected format 'loopml.alerts/1'; got 'other'"):
        AlertBook.from_dict({"format": "other"})
    with pytest.raises(InvalidConfig, match="malformed"):
        AlertBook.from_dict({"format": "loopml.alerts/1", "alerts": [{"name": "x"}]})
